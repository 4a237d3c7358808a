"""The allowlist: seeding/threading of every component, skops round trips, and the trusted-type list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from threadpoolctl import threadpool_limits

from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import MODEL_FILE, dump_model, load_skops
from unitrefine.search.estimators import GROUPS, REGISTRY, TRUSTED_TYPES, Component
from unitrefine.search.pipeline import build_pipeline, export_pipeline, soft_vote
from unitrefine.search.search_space import Choice

#: Small settings so every fit takes milliseconds (defaults of some estimators are large).
SMALL: dict[str, dict[str, Any]] = {
    "knn": {"n_neighbors": 5},
    "iterative": {"max_iter": 5},
    "quantile": {"n_quantiles": 50},
    "smote": {"k_neighbors": 3},
    "random_forest": {"n_estimators": 10},
    "extra_trees": {"n_estimators": 10},
    "gradient_boosting": {"n_estimators": 10},
    "hist_gradient_boosting": {"max_iter": 10},
    "xgboost": {"n_estimators": 10, "max_depth": 3},
    "mlp": {"n_units": 8},
}
BASE = {"imputer": "median", "scaler": "standard", "resampler": "none", "classifier": "logistic_regression"}
#: Types every exported pipeline holds / that no component needs: see test_every_trusted_type_is_needed.
COMMON_TYPES = {"numpy.dtype"}
#: skops trusts every type in ``sklearn.utils.all_estimators()`` as listed when ``skops.io`` is first imported;
#: IterativeImputer is in that list only if ``sklearn.experimental.enable_iterative_imputer`` (imported by
#: unitrefine.search.estimators) ran first. So whether skops reports it as untrusted depends on import order, and it
#: is counted as untrusted here whenever a file holds it (test_trusted_types_suffice_in_either_import_order).
ORDER_DEPENDENT = {"sklearn.impute._iterative.IterativeImputer"}
COMPONENTS = [(g, n) for g in GROUPS for n in REGISTRY[g]]
BUILT = [(g, n) for g, n in COMPONENTS if REGISTRY[g][n].build is not None]

def component_params(ids_: list[tuple[str, str]], bug: dict[tuple[str, str], Any] | None = None) -> list[Any]:
    bug = bug or {}
    return [pytest.param(g, n, id=f"{g}-{n}", marks=bug.get((g, n), ())) for g, n in ids_]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def make_data(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """120 x 5 float32 features with ~10% NaN and a learnable, imbalanced (~25%) binary label."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 5))
    score = z[:, 0] + 0.5 * z[:, 1]
    y = (score > np.quantile(score, 0.75)).astype(np.int64)
    X = z.astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    return pd.DataFrame(X, columns=["snr", "isi_violations_ratio", "firing_rate", "presence_ratio", "amp"]), y


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    return make_data()


def spec_with(**chosen: str | tuple[str, dict[str, Any]]) -> dict[str, Choice]:
    spec = {}
    for slot in GROUPS:
        value = chosen.get(slot, BASE[slot])
        name, params = value if isinstance(value, tuple) else (value, SMALL.get(value, {}))
        spec[slot] = Choice(name, dict(params))
    return spec


def referenced_types(path: Path) -> set[str]:
    """Every ``module.Class`` a skops file refers to, read from its schema (independent of skops' trust)."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                out.add(f"{node['__module__']}.{node['__class__']}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    with zipfile.ZipFile(path) as zf:
        walk(json.loads(zf.read("schema.json")))
    return out


def untrusted_types(path: Path) -> set[str]:
    """skops' untrusted types of a file, as they are when skops is imported before IterativeImputer is enabled."""
    return set(sio.get_untrusted_types(file=path)) | (referenced_types(path) & ORDER_DEPENDENT)


@dataclass
class Dumped:
    fitted: ImbPipeline
    exported: Pipeline
    path: Path
    untrusted: set[str]


@pytest.fixture(scope="module")
def dumped(data, tmp_path_factory) -> Callable[[str, str], Dumped]:
    """Fit, export and dump the base pipeline with one component swapped in (cached per component)."""
    X, y = data
    cache: dict[tuple[str, str], Dumped] = {}

    def get(group: str, name: str) -> Dumped:
        if (group, name) not in cache:
            with threadpool_limits(limits=1):
                fitted = build_pipeline(spec_with(**{group: name}), seed=0).fit(X, y)
            exported = export_pipeline(fitted)
            folder = tmp_path_factory.mktemp(f"{group}-{name}")
            path = dump_model(exported, folder)
            cache[group, name] = Dumped(fitted, exported, path, untrusted_types(path))
        return cache[group, name]

    return get


# --------------------------------------------------------------------------------------------------
# skops round trip of every component
# --------------------------------------------------------------------------------------------------


def test_model_file_is_compressed_and_loads_to_the_same_predictions(data, dumped, tmp_path: Path) -> None:
    X, _ = data
    d = dumped("classifier", "random_forest")
    with zipfile.ZipFile(d.path) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    stored = tmp_path / "stored.skops"
    sio.dump(d.exported, stored)
    assert d.path.stat().st_size < stored.stat().st_size / 2
    np.testing.assert_array_equal(load_skops(d.path).predict_proba(X), d.exported.predict_proba(X))


@pytest.mark.parametrize(("group", "name"), component_params(COMPONENTS))
def test_every_component_round_trips_through_skops(group: str, name: str, data, dumped) -> None:
    X, _ = data
    d = dumped(group, name)
    exported = d.exported

    assert type(exported) is Pipeline  # a plain sklearn Pipeline, not imblearn's subclass
    assert [step for step, _ in exported.steps] == ["imputer", "scaler", "classifier"]
    assert not any(hasattr(est, "fit_resample") for _, est in exported.steps)
    for step, est in exported.steps:
        assert est is d.fitted.named_steps[step]  # the fitted steps themselves, not refits
    assert list(exported.feature_names_in_) == list(X.columns)
    expected = d.fitted.predict_proba(X)
    np.testing.assert_array_equal(exported.predict_proba(X), expected)

    assert d.path.name == MODEL_FILE and d.path.is_file()
    assert d.untrusted <= set(TRUSTED_TYPES), f"not on the reviewed list: {sorted(d.untrusted - set(TRUSTED_TYPES))}"
    loaded = load_skops(d.path)
    assert type(loaded) is Pipeline
    assert list(loaded.feature_names_in_) == list(X.columns)
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)


@pytest.mark.parametrize(("group", "name"), component_params(BUILT))
def test_component_declares_exactly_the_types_it_adds(group: str, name: str, dumped) -> None:
    """A component's ``trusted_types`` is what its fitted step adds to the base pipeline's types
    (plus the types that a non-default parameter value brings, listed in ``BY_PARAMETER``)."""
    base_types = dumped("imputer", BASE["imputer"]).untrusted
    added = dumped(group, name).untrusted - base_types - COMMON_TYPES
    optional = {t for (g, n, _), types in BY_PARAMETER.items() if (g, n) == (group, name) for t in types}
    assert added == set(REGISTRY[group][name].trusted_types) - optional


#: (slot, component, params) -> types only that parameter setting adds.
BY_PARAMETER = {
    ("classifier", "mlp", (("solver", "sgd"), ("max_iter", 50))): {
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer"
    },
}


@pytest.mark.parametrize("key", list(BY_PARAMETER), ids=lambda k: f"{k[1]}-{k[2][0][1]}")
def test_parameter_dependent_types_are_declared_and_needed(key, data, tmp_path: Path) -> None:
    group, name, params = key
    X, y = data
    with threadpool_limits(limits=1):
        fitted = build_pipeline(spec_with(**{group: (name, dict(params))}), seed=0).fit(X, y)
    path = dump_model(export_pipeline(fitted), tmp_path)
    assert BY_PARAMETER[key] <= untrusted_types(path)
    assert BY_PARAMETER[key] <= set(REGISTRY[group][name].trusted_types)
    np.testing.assert_array_equal(load_skops(path).predict_proba(X), fitted.predict_proba(X))


def dump_soft_vote(dumped, data, folder: Path) -> tuple[Path, np.ndarray]:
    """Dump a 2:1 soft vote of two exported pipelines; return the file and its expected probabilities."""
    X, y = data
    members = [("a", dumped("classifier", "random_forest").exported), ("b", dumped("classifier", "svc").exported)]
    path = dump_model(soft_vote(members, [2, 1], X, y), folder)
    return path, (2 * members[0][1].predict_proba(X) + members[1][1].predict_proba(X)) / 3


def test_soft_vote_ensemble_round_trips_through_skops(dumped, data, tmp_path: Path) -> None:
    path, expected = dump_soft_vote(dumped, data, tmp_path)
    assert untrusted_types(path) <= set(TRUSTED_TYPES)
    np.testing.assert_allclose(load_skops(path).predict_proba(data[0]), expected)


def dump_calibrated(resampler: str, data, folder: Path) -> tuple[Path, Pipeline]:
    """Dump a sigmoid-calibrated model whose imbalanced-learn pipeline holds ``resampler``; return the file and
    the model."""
    from sklearn.calibration import CalibratedClassifierCV

    X, y = data
    folder.mkdir(parents=True, exist_ok=True)
    model = CalibratedClassifierCV(build_pipeline(spec_with(resampler=resampler), seed=0), method="sigmoid", cv=3)
    with threadpool_limits(limits=1):
        pipeline = Pipeline([("calibrated", model.fit(X, y))])
    return dump_model(pipeline, folder), pipeline


@pytest.mark.parametrize("resampler", sorted(REGISTRY["resampler"]))
def test_calibrated_models_round_trip_with_every_resampler(resampler: str, data, tmp_path: Path) -> None:
    path, model = dump_calibrated(resampler, data, tmp_path)
    assert untrusted_types(path) <= set(TRUSTED_TYPES)
    np.testing.assert_array_equal(load_skops(path).predict_proba(data[0]), model.predict_proba(data[0]))


def test_every_trusted_type_is_needed(dumped, data, tmp_path: Path) -> None:
    """No stale entries: each trusted type shows up in some component's exported pipeline, an ensemble or
    a calibrated model."""
    ensemble_types = untrusted_types(dump_soft_vote(dumped, data, tmp_path)[0])
    for r in REGISTRY["resampler"]:
        ensemble_types |= untrusted_types(dump_calibrated(r, data, tmp_path / r)[0])
    union: set[str] = set().union(
        *(dumped(g, n).untrusted for g, n in COMPONENTS), *BY_PARAMETER.values(), ensemble_types
    )
    assert COMMON_TYPES <= union  # numpy.dtype really is in every pipeline
    unused = set(TRUSTED_TYPES) - union
    # collections.OrderedDict never appears with the installed versions (sklearn 1.9, skops 0.16): it
    # is harmless but unneeded. Anything else unused is a stale entry that widens what loading trusts.
    assert unused <= {"collections.OrderedDict"}, sorted(unused)


IMPORT_ORDER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    if sys.argv[1] == "skops_first":
        import skops.io as sio
        import unitrefine.search.estimators
    else:
        import unitrefine.search.estimators
        import skops.io as sio
    from pathlib import Path
    from unitrefine.export.folder import dump_model, load_skops
    from unitrefine.search.pipeline import build_pipeline, export_pipeline, soft_vote
    from unitrefine.search.search_space import Choice

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(int)
    X[rng.random(X.shape) < 0.1] = np.nan
    spec = {"imputer": Choice("iterative", {"max_iter": 3}), "scaler": Choice("none", {}),
            "resampler": Choice("none", {}), "classifier": Choice("logistic_regression", {})}
    model = export_pipeline(build_pipeline(spec, seed=0).fit(X, y))
    path = dump_model(model, Path(sys.argv[2]))
    loaded = load_skops(path)
    same = bool((loaded.predict_proba(X) == model.predict_proba(X)).all())
    print(json.dumps({"untrusted": sio.get_untrusted_types(file=path), "same": same}))
    """
)


@pytest.mark.parametrize("order", ["skops_first", "unitrefine_first"])
def test_trusted_types_suffice_in_either_import_order(order: str, tmp_path: Path) -> None:
    """IterativeImputer is untrusted only when skops is imported first; loading works either way."""
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_ORDER_SCRIPT, order, str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["same"]
    iterative = "sklearn.impute._iterative.IterativeImputer"
    assert (iterative in result["untrusted"]) == (order == "skops_first")
    assert set(result["untrusted"]) <= set(TRUSTED_TYPES)


def test_trusted_types_are_sorted_and_unique() -> None:
    assert list(TRUSTED_TYPES) == sorted(set(TRUSTED_TYPES))
    declared = {t for group in REGISTRY.values() for c in group.values() for t in c.trusted_types}
    assert declared <= set(TRUSTED_TYPES)


# --------------------------------------------------------------------------------------------------
# load_skops refuses files holding anything else
# --------------------------------------------------------------------------------------------------


class _Tripwire(BaseEstimator, TransformerMixin):
    """A step that, if ever constructed from a file, leaves a marker file behind."""

    def __init__(self, marker: str = "") -> None:
        self.marker = marker

    def fit(self, X: Any, y: Any = None) -> _Tripwire:
        return self

    def transform(self, X: Any) -> Any:
        return X

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).write_text("executed")
        self.__dict__.update(state)


def test_load_skops_refuses_an_untrusted_callable_without_loading(tmp_path: Path, monkeypatch) -> None:
    evil = Pipeline([("run", FunctionTransformer(func=os.system)), ("clf", LogisticRegression())])
    path = dump_model(evil, tmp_path)
    name = f"{os.system.__module__}.{os.system.__name__}"  # posix.system
    assert name in sio.get_untrusted_types(file=path)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("skops.io.load was called on an untrusted file")

    monkeypatch.setattr(sio, "load", forbidden)
    with pytest.raises(UnitRefineError) as excinfo:
        load_skops(path)
    assert name in str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_load_skops_executes_nothing_from_an_untrusted_file(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = dump_model(Pipeline([("trip", _Tripwire(str(marker))), ("clf", LogisticRegression())]), tmp_path)
    name = f"{_Tripwire.__module__}.{_Tripwire.__qualname__}"
    with pytest.raises(UnitRefineError, match=name.replace(".", r"\.")):
        load_skops(path)
    assert not marker.exists()
    # Control: trusting what the file itself lists (the mistake load_skops must not make) runs the code.
    sio.load(path, trusted=sio.get_untrusted_types(file=path))
    assert marker.read_text() == "executed"


def test_load_skops_honours_a_narrower_trusted_list(tmp_path: Path) -> None:
    """Passing a narrower list is honoured: a tree model is refused when Tree is not trusted."""
    d = build_pipeline(spec_with(classifier="random_forest"), seed=0).fit(*make_data())
    path = dump_model(export_pipeline(d), tmp_path)
    narrower = [t for t in TRUSTED_TYPES if t != "sklearn.tree._tree.Tree"]
    with pytest.raises(UnitRefineError, match=r"sklearn\.tree\._tree\.Tree"):
        load_skops(path, trusted=narrower)


# --------------------------------------------------------------------------------------------------
# Component.make: seeds, threads, parameters
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("group", "name"), component_params(BUILT))
def test_make_sets_seed_and_single_thread(group: str, name: str) -> None:
    component: Component = REGISTRY[group][name]
    params = component.make({}, seed=1234).get_params(deep=False)
    if component.seeded:
        assert params["random_state"] == 1234
        assert component.make({}, seed=7).get_params(deep=False)["random_state"] == 7
    else:
        # an unseeded component must not hold top-level randomness left at its default
        assert "random_state" not in params
    if component.single_threaded:
        assert params["n_jobs"] == 1
    elif "n_jobs" in params:
        assert params["n_jobs"] in (None, 1)  # scikit-learn's None is one job


def test_seeded_and_single_threaded_flags_are_where_expected() -> None:
    """Pins the flags: xgboost's n_jobs=None means all cores, so it must be single-threaded."""
    threaded = {n for g in REGISTRY.values() for n, c in g.items() if c.single_threaded}
    assert threaded == {"random_forest", "extra_trees", "xgboost"}
    unseeded = {n for g, n in BUILT if not REGISTRY[g][n].seeded}
    assert unseeded == {"median", "mean", "most_frequent", "knn", "standard", "robust", "min_max", "svc"}


def test_make_seed_overrides_params_and_params_override_defaults() -> None:
    rf = REGISTRY["classifier"]["random_forest"]
    assert rf.make({}, seed=3).get_params()["class_weight"] == "balanced"
    built = rf.make({"class_weight": "balanced_subsample", "random_state": 99, "n_jobs": 4}, seed=3)
    assert built.get_params()["class_weight"] == "balanced_subsample"
    assert (built.random_state, built.n_jobs) == (3, 1)
    mlp = REGISTRY["classifier"]["mlp"].make({"n_layers": 3, "n_units": 8}, seed=0)
    assert mlp.hidden_layer_sizes == (8, 8, 8)
    assert REGISTRY["scaler"]["none"].make({}, seed=0) is None


@pytest.mark.parametrize(
    ("group", "name"),
    component_params(BUILT),
)
def test_every_advertised_parameter_is_accepted_by_make(group: str, name: str) -> None:
    """Each name parse_search_space accepts for a component can be passed to make (at its default)."""
    component = REGISTRY[group][name]
    defaults = (component.params_from or component.build)().get_params(deep=False)
    failures = {}
    names = sorted(component.parameter_names() - set(component.extra_params))
    assert names, f"{group}.{name} advertises no parameter"  # the loop below must check something
    for p in names:
        try:
            component.make({p: defaults[p]}, seed=0)
        except Exception as exc:  # noqa: BLE001
            failures[p] = f"{type(exc).__name__}: {exc}"
    assert failures == {}


# --------------------------------------------------------------------------------------------------
# export_pipeline drops resamplers without changing predictions
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resampler", ["random_over", "smote", "random_under"])
def test_export_without_resampler_predicts_identically(resampler: str, data) -> None:
    X, y = data
    forest = ("random_forest", {"n_estimators": 10, "class_weight": None})
    fitted = build_pipeline(spec_with(resampler=resampler, classifier=forest), seed=0).fit(X, y)
    exported = export_pipeline(fitted)
    assert type(exported) is Pipeline and "resampler" not in exported.named_steps
    np.testing.assert_array_equal(exported.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(exported.predict(X), fitted.predict(X))
    # the resampler did act during fit: without it the same forest predicts differently
    plain = build_pipeline(spec_with(resampler="none", classifier=forest), seed=0).fit(X, y)
    assert not np.allclose(plain.predict_proba(X), fitted.predict_proba(X))
