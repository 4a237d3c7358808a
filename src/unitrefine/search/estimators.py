"""The allowlist: every imputer, scaler, resampler and classifier a search space may name.

YAML names map to the builders here, never to import paths, and the same list yields the skops
trusted types used when loading exported models (:data:`TRUSTED_TYPES`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (registers IterativeImputer)
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from sklearn.linear_model import BayesianRidge, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, QuantileTransformer, RobustScaler, StandardScaler
from sklearn.svm import SVC

GROUPS = ("imputer", "scaler", "resampler", "classifier")


def _iterative(**params: Any) -> IterativeImputer:
    """Iterative imputation whose per-feature regressions see standardised inputs.

    Raw metrics span ten orders of magnitude; a plain BayesianRidge overflows on them in float32.
    """
    return IterativeImputer(estimator=make_pipeline(StandardScaler(), BayesianRidge()), **params)


def _svc(**params: Any) -> CalibratedClassifierCV:
    """An SVC with probabilities from a sigmoid calibrated by internal 3-fold CV.

    (``SVC(probability=True)`` is deprecated since scikit-learn 1.9; this is its replacement.)
    """
    return CalibratedClassifierCV(SVC(**params), ensemble=False, cv=3)


def _mlp(n_layers: int = 1, n_units: int = 64, **params: Any) -> MLPClassifier:
    """MLP whose hidden layers are given as a depth and a width (Optuna cannot sample tuples)."""
    return MLPClassifier(hidden_layer_sizes=(n_units,) * n_layers, **params)


def _xgboost(**params: Any) -> Any:
    from xgboost import XGBClassifier

    return XGBClassifier(**params)


def _smote(**params: Any) -> Any:
    from imblearn.over_sampling import SMOTE

    return SMOTE(**params)


def _random_over(**params: Any) -> Any:
    from imblearn.over_sampling import RandomOverSampler

    return RandomOverSampler(**params)


def _random_under(**params: Any) -> Any:
    from imblearn.under_sampling import RandomUnderSampler

    return RandomUnderSampler(**params)


@dataclass(frozen=True)
class Component:
    """One allowlisted pipeline step.

    Attributes
    ----------
    name, group : str
        The YAML name and the pipeline slot (imputer, scaler, resampler, classifier).
    build : callable or None
        Returns an unfitted estimator from keyword parameters; None means the step is skipped.
    params_from : type or None
        The estimator class whose parameters ``build`` accepts, when ``build`` is not that class.
    defaults : mapping
        Parameters always passed (YAML may override them).
    seeded, single_threaded : bool
        Whether the estimator takes ``random_state`` / ``n_jobs``.
    extra_params : tuple of str
        Parameters ``build`` accepts beyond the estimator's own (e.g. the MLP's ``n_layers``).
    trusted_types : tuple of str
        Types a fitted pipeline holding this step contains that skops does not trust by default.
    """

    name: str
    group: str
    build: Callable[..., Any] | None
    params_from: type | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    seeded: bool = False
    single_threaded: bool = False
    extra_params: tuple[str, ...] = ()
    trusted_types: tuple[str, ...] = ()

    def parameter_names(self) -> set[str]:
        """Names a search space may set for this component."""
        if self.build is None:
            return set()
        names = set((self.params_from or self.build)().get_params(deep=False))
        return (names | set(self.extra_params)) - _SET_BY_US

    def make(self, params: Mapping[str, Any], seed: int) -> Any:
        """Build the estimator with ``defaults`` overridden by ``params``; None for a skipped step."""
        if self.build is None:
            return None
        kwargs: dict[str, Any] = {**self.defaults, **params}
        if self.seeded:
            kwargs["random_state"] = seed
        if self.single_threaded:
            kwargs["n_jobs"] = 1
        return self.build(**kwargs)


#: Parameters set by ``make`` or a builder, never by a search space.
_SET_BY_US = {"random_state", "n_jobs", "hidden_layer_sizes", "estimator", "scoring", "callbacks"}
_TREE = ("sklearn.tree._tree.Tree",)
_COMPONENTS = (
    Component("median", "imputer", SimpleImputer, defaults={"strategy": "median"}),
    Component("mean", "imputer", SimpleImputer, defaults={"strategy": "mean"}),
    Component("most_frequent", "imputer", SimpleImputer, defaults={"strategy": "most_frequent"}),
    Component("knn", "imputer", KNNImputer),
    Component(
        "iterative",
        "imputer",
        _iterative,
        params_from=IterativeImputer,
        seeded=True,
        trusted_types=("sklearn.impute._iterative.IterativeImputer", "sklearn.impute._iterative._ImputerTriplet"),
    ),
    Component("standard", "scaler", StandardScaler),
    Component("robust", "scaler", RobustScaler),
    Component("min_max", "scaler", MinMaxScaler),
    Component("quantile", "scaler", QuantileTransformer, defaults={"output_distribution": "normal"}, seeded=True),
    Component("none", "scaler", None),
    Component("none", "resampler", None),
    Component("random_over", "resampler", _random_over, seeded=True),
    Component("random_under", "resampler", _random_under, seeded=True),
    Component("smote", "resampler", _smote, seeded=True),
    Component(
        "random_forest",
        "classifier",
        RandomForestClassifier,
        defaults={"class_weight": "balanced"},
        seeded=True,
        single_threaded=True,
        trusted_types=_TREE,
    ),
    Component(
        "extra_trees",
        "classifier",
        ExtraTreesClassifier,
        defaults={"class_weight": "balanced"},
        seeded=True,
        single_threaded=True,
        trusted_types=_TREE,
    ),
    Component("gradient_boosting", "classifier", GradientBoostingClassifier, seeded=True, trusted_types=_TREE),
    Component(
        "hist_gradient_boosting",
        "classifier",
        HistGradientBoostingClassifier,
        defaults={"class_weight": "balanced"},
        seeded=True,
        trusted_types=("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    ),
    Component(
        "logistic_regression",
        "classifier",
        LogisticRegression,
        defaults={"class_weight": "balanced", "max_iter": 2000},
        seeded=True,
    ),
    Component(
        "mlp",
        "classifier",
        _mlp,
        params_from=MLPClassifier,
        # Early stopping on a held-back 15 %: on thousands of units a full 500 epochs overfit and take
        # minutes; the patience keeps small tables from stopping after a handful of steps.
        defaults={"max_iter": 500, "early_stopping": True, "validation_fraction": 0.15, "n_iter_no_change": 30},
        seeded=True,
        extra_params=("n_layers", "n_units"),
        trusted_types=(
            "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
            "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        ),
    ),
    Component(
        "xgboost",
        "classifier",
        _xgboost,
        defaults={"tree_method": "hist", "verbosity": 0},
        seeded=True,
        single_threaded=True,
        trusted_types=("xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"),
    ),
    Component(
        "svc",
        "classifier",
        _svc,
        params_from=SVC,
        defaults={"class_weight": "balanced"},
        trusted_types=("sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"),
    ),
)

#: group -> name -> component
REGISTRY: dict[str, dict[str, Component]] = {g: {} for g in GROUPS}
for _c in _COMPONENTS:
    REGISTRY[_c.group][_c.name] = _c

#: Types a calibrated model adds (calibration.method): it holds the imbalanced-learn pipelines it refitted
#: inside CV, resamplers included (they act only during fit), and the fitted calibrators.
CALIBRATION_TYPES = (
    "imblearn.pipeline.Pipeline",
    "imblearn.over_sampling._random_over_sampler.RandomOverSampler",
    "imblearn.under_sampling._prototype_selection._random_under_sampler.RandomUnderSampler",
    "imblearn.over_sampling._smote.base.SMOTE",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)

#: Types beyond skops' defaults that any exported pipeline may contain. Reviewed by hand; loading
#: trusts exactly these and nothing read from a model file.
TRUSTED_TYPES: tuple[str, ...] = tuple(
    sorted(
        # numpy.dtype: every fitted pipeline; Bunch: the named members of a soft-voting ensemble.
        {"collections.OrderedDict", "numpy.dtype", "sklearn.utils._bunch.Bunch"}
        | {t for c in _COMPONENTS for t in c.trusted_types}
        | set(CALIBRATION_TYPES)
    )
)


def get_component(group: str, name: str) -> Component:
    """Look up an allowlisted component.

    Raises
    ------
    KeyError
        If ``group`` or ``name`` is not allowlisted (callers turn this into a user-facing error).
    """
    return REGISTRY[group][name]
