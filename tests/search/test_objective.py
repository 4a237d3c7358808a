"""No leakage: every step of the pipeline is fitted inside each CV fold."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold

from unitrefine.search.budget import first_evaluation
from unitrefine.search.objective import Objective
from unitrefine.search.search_space import parse_search_space
from unitrefine.search.trial_attrs import DUPLICATE_ATTR

OVERSAMPLED_FOREST = {
    "imputer": {"median": {}},
    "scaler": {"none": {}},
    "resampler": {"random_over": {}},
    "classifier": {"random_forest": {"n_estimators": 50, "min_samples_leaf": 1, "max_features": 1.0}},
}


def noise_data(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Features with no relation to the (imbalanced) labels: an honest score is chance, 0.5."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 5)).astype(np.float32), columns=[f"m{i}" for i in range(5)])
    y = (rng.random(n) < 0.2).astype(np.int64)
    return X, y


def test_oversampling_inside_folds_keeps_a_noise_score_at_chance() -> None:
    """Oversampling before the split copies validation units into training and inflates the score.

    The objective must score label noise at chance level, while the leaky procedure (resample first,
    then cross-validate) scores it far higher on the same data with the same model.
    """
    X, y = noise_data()
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
    score = get_scorer("balanced_accuracy")
    objective = Objective(parse_search_space(OVERSAMPLED_FOREST), X, y, folds, score, seed=0)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=1)
    honest = study.best_value

    from imblearn.over_sampling import RandomOverSampler
    from sklearn.ensemble import RandomForestClassifier

    Xr, yr = RandomOverSampler(random_state=0).fit_resample(X, y)
    leaky_folds = StratifiedKFold(5, shuffle=True, random_state=0).split(Xr, yr)
    leaky = np.mean(
        [
            score(
                RandomForestClassifier(n_estimators=50, max_features=1.0, random_state=0).fit(Xr.iloc[tr], yr[tr]),
                Xr.iloc[va],
                yr[va],
            )
            for tr, va in leaky_folds
        ]
    )
    assert honest < 0.62
    assert leaky > honest + 0.2


def test_objective_score_equals_per_fold_fit_of_the_whole_pipeline() -> None:
    """The objective's fold scores are those of the pipeline fitted on the training folds only.

    Fitting the imputer and scaler on all units first (the leak SpikeInterface's trainer has) gives
    different fold scores on this data, so the comparison can tell the two apart.
    """
    rng = np.random.default_rng(1)
    n = 240
    X = pd.DataFrame(rng.normal(size=(n, 3)).astype(np.float32), columns=["a", "b", "c"])
    y = (X["a"] + 0.8 * rng.normal(size=n) > 0.3).astype(np.int64).to_numpy()
    X.loc[rng.random(n) < 0.3, "a"] = np.nan
    X.loc[np.arange(n) % 4 == 0, "b"] += 5.0  # a shift that the fold's own scaler sees differently
    space = parse_search_space(
        {
            "imputer": {"mean": {}},
            "scaler": {"standard": {}},
            "resampler": {"none": {}},
            "classifier": {"logistic_regression": {"C": 0.05}},
        }
    )
    folds = list(StratifiedKFold(4, shuffle=True, random_state=0).split(X, y))
    score = get_scorer("balanced_accuracy")
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(space, X, y, folds, score, seed=0), n_trials=1)
    fold_scores = study.best_trial.user_attrs["fold_scores"]

    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model() -> object:
        return make_pipeline(
            SimpleImputer(), StandardScaler(),
            LogisticRegression(C=0.05, class_weight="balanced", max_iter=2000, random_state=0),
        )

    honest = [score(model().fit(X.iloc[tr], y[tr]), X.iloc[va], y[va]) for tr, va in folds]
    Xl = pd.DataFrame(StandardScaler().fit_transform(SimpleImputer().fit_transform(X)), columns=X.columns)
    clf = LogisticRegression(C=0.05, class_weight="balanced", max_iter=2000, random_state=0)
    leaky = [score(clf.fit(Xl.iloc[tr], y[tr]), Xl.iloc[va], y[va]) for tr, va in folds]
    np.testing.assert_allclose(fold_scores, honest)
    assert not np.allclose(fold_scores, leaky)


def test_failing_configuration_fails_the_trial_with_its_reason() -> None:
    """SMOTE asked for more neighbours than minority units fails that trial, not the search."""
    X, y = noise_data(n=60)
    y[:] = 0
    y[:4] = 1
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    space = parse_search_space(
        {"imputer": {"median": {}}, "scaler": {"none": {}}, "resampler": {"smote": {"k_neighbors": 8}},
         "classifier": {"logistic_regression": {}}}
    )
    study = optuna.create_study(direction="maximize")
    study.optimize(Objective(space, X, y, folds, get_scorer("balanced_accuracy"), seed=0), n_trials=2)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert "n_neighbors" in study.trials[0].user_attrs["error"] or "neighbors" in study.trials[0].user_attrs["error"]
    # The space has one configuration: the second trial repeats the failed one and is not fitted (or failed) again.
    assert study.trials[1].state == optuna.trial.TrialState.PRUNED
    assert study.trials[1].user_attrs == {DUPLICATE_ATTR: 0}


class CountingObjective(Objective):
    """The objective, counting the pipelines it fits (one per fold of each evaluated configuration)."""

    fits = 0

    def fit_fold(self, spec: Any, train: np.ndarray) -> Any:
        type(self).fits += 1
        return super().fit_fold(spec, train)


def test_a_repeated_configuration_is_not_fitted_again_whatever_the_earlier_trial_became(
    caplog: pytest.LogCaptureFixture,
) -> None:
    X, y = noise_data(n=90)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    space = parse_search_space({"imputer": {"median": {}}, "scaler": {"none": {}, "standard": {}},
                                "resampler": {"none": {}}, "classifier": {"logistic_regression": {"C": [0.1, 1.0]}}})
    a = {"imputer": "median", "scaler": "none", "resampler": "none", "classifier": "logistic_regression",
         "logistic_regression.C": 0.1}
    b, c = {**a, "scaler": "standard"}, {**a, "logistic_regression.C": 1.0}
    study = optuna.create_study(direction="maximize")
    # Trial 0: configuration c was pruned by the pruner after a fold (added as such, with its first fold's score).
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, params=c, distributions=space_distributions(space, c),
        intermediate_values={0: 0.4}, user_attrs={"fold_scores": [0.4]},
    ))
    for params in (a, b, a, c, b):  # trials 1..5: a and b are new; then a, c and b again
        study.enqueue_trial(params)
    objective = CountingObjective(space, X, y, folds, get_scorer("balanced_accuracy"), seed=0)
    CountingObjective.fits = 0
    with caplog.at_level(logging.INFO, logger="unitrefine.search.objective"):
        study.optimize(objective, n_trials=5)
    states = [(t.number, t.state.name, t.user_attrs.get(DUPLICATE_ATTR)) for t in study.trials]
    assert states == [(0, "PRUNED", None), (1, "COMPLETE", None), (2, "COMPLETE", None), (3, "PRUNED", 1),
                      (4, "PRUNED", 0), (5, "PRUNED", 2)]
    assert CountingObjective.fits == 2 * len(folds), "only the two new configurations were fitted"
    assert all("fold_scores" not in t.user_attrs and not t.intermediate_values for t in study.trials[3:])
    assert "Trial 3 repeats the configuration of trial 1: it is not fitted again" in caplog.text
    # Asking a duplicate's configuration again names the first trial that evaluated it, not the duplicate.
    assert first_evaluation(study, 99, a) == 1 and first_evaluation(study, 1, a) is None


def space_distributions(space: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The Optuna distributions ``space`` draws ``params`` from (read back from a trial that draws them)."""
    study = optuna.create_study()
    study.enqueue_trial(params)
    trial = study.ask()
    space.sample(trial)
    return dict(study.trials[0].distributions)


def test_a_unit_limit_fits_each_fold_on_a_stratified_subsample_and_says_so(caplog) -> None:
    """With a limit below the folds' training size, every fold's pipeline is fitted on the subsample that
    fit_positions draws from that fold's training units, and all validation units are scored."""
    import logging

    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from unitrefine.search.pipeline import fit_positions

    rng = np.random.default_rng(2)
    n = 600
    X = pd.DataFrame(rng.normal(size=(n, 3)).astype(np.float32), columns=["a", "b", "c"])
    y = (X["a"] + 1.5 * rng.normal(size=n) > 0.5).astype(np.int64).to_numpy()
    space = parse_search_space({"imputer": {"median": {}}, "scaler": {"none": {}}, "resampler": {"none": {}},
                                "classifier": {"logistic_regression": {"C": 0.1}}})
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    score = get_scorer("balanced_accuracy")

    def fold_scores(limits: dict[str, int | None]) -> list[float]:
        study = optuna.create_study(direction="maximize")
        study.optimize(Objective(space, X, y, folds, score, seed=0, unit_limits=limits), n_trials=1)
        return study.best_trial.user_attrs["fold_scores"]

    def expected(limit: int | None) -> list[float]:
        out = []
        for tr, va in folds:
            sub = tr[fit_positions(y[tr], limit, 0)]
            model = make_pipeline(SimpleImputer(strategy="median"),
                                  LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000, random_state=0))
            out.append(score(model.fit(X.iloc[sub], y[sub]), X.iloc[va], y[va]))
        return out

    with caplog.at_level(logging.INFO, logger="unitrefine.search.objective"):
        limited = fold_scores({"logistic_regression": 120})
    np.testing.assert_allclose(limited, expected(120))
    assert not np.allclose(limited, expected(None))
    assert "logistic_regression are fitted on a class-stratified random subsample of 120 of the 400" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unitrefine.search.objective"):
        unlimited = fold_scores({"logistic_regression": 400, "svc": 100})
    np.testing.assert_allclose(unlimited, expected(None))
    assert "subsample" not in caplog.text
