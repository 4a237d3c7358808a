"""The exported model's choice (:func:`choose_final_model`, :func:`prepare_candidates`) on a real tiny Optuna
search, and its fits (:class:`FinalModel`, :func:`fit_spec`, :func:`member`) against pipelines built here with
scikit-learn alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, get_scorer, precision_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from unitrefine.config import CVConfig, EnsembleConfig, ThresholdConfig
from unitrefine.data.dataset import UnitTable
from unitrefine.export.report import spec_params
from unitrefine.model.final_model import FinalModel, Fitting, choose_final_model, fit_spec, member, prepare_candidates
from unitrefine.model.threshold import Threshold
from unitrefine.search.objective import Objective
from unitrefine.search.outcomes import TrialOutcome, outcomes, ranked
from unitrefine.search.pipeline import fit_positions
from unitrefine.search.search_space import Choice, SearchSpace, parse_search_space

SPACE = {
    "imputer": {"median": {}},
    "scaler": {"standard": {}, "none": {}},
    "resampler": {"none": {}},
    "classifier": {"logistic_regression": {"C": [0.01, 1.0]},
                   "random_forest": {"n_estimators": 5, "max_depth": [1, 3]}},
}
LR = {"imputer": "median", "scaler": "standard", "resampler": "none", "classifier": "logistic_regression"}
RF = {"imputer": "median", "scaler": "none", "resampler": "none", "classifier": "random_forest"}
#: Trials 0..3, enqueued in this order. On this data trial 2 is the best (so best-first is not by number), and
#: 4 x trial 2 + 1 x trial 3 (the worst trial) beats it out of fold.
TRIALS = [{**LR, "logistic_regression.C": 1.0}, {**RF, "random_forest.max_depth": 3},
          {**LR, "logistic_regression.C": 0.01}, {**RF, "random_forest.max_depth": 1}]
SEARCH_SEED = 0
NO_THRESHOLD = ThresholdConfig(tune=False, objective="balanced_accuracy", target_precision=0.9)


def unit_table(seed: int, n: int = 120) -> UnitTable:
    """A binary table (``other``/``good``) over three recordings; ``c`` is noise with missing values."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, n))
    y = ((a + b + 0.8 * np.sign(a * b) + rng.normal(0, 0.9, n)) > 0.3).astype(np.int64)
    X = pd.DataFrame({"a": a, "b": b, "c": c}).astype(np.float32)
    X.loc[rng.random(n) < 0.1, "c"] = np.nan
    units = pd.DataFrame({"recording": [f"rec{i % 3}" for i in range(n)], "subject": "s0", "unit_id": np.arange(n),
                          "label": np.where(y == 1, "good", "other")})
    return UnitTable(X, y, ("other", "good"), units)


def lr_pipe(C: float, seed: int) -> Pipeline:
    """Trials 0 and 2, built with scikit-learn alone (the allowlist's defaults written out)."""
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed))


def rf_pipe(depth: int, seed: int) -> Pipeline:
    """Trials 1 and 3 (``n_estimators`` is fixed in the space, not among the trials' params)."""
    return make_pipeline(SimpleImputer(strategy="median"),
                         RandomForestClassifier(n_estimators=5, max_depth=depth, class_weight="balanced",
                                                random_state=seed, n_jobs=1))


def spec_of(params: dict[str, Any]) -> dict[str, Choice]:
    """The pipeline of a trial's params, written out by hand."""
    name = params["classifier"]
    clf = {"C": params[f"{name}.C"]} if name == "logistic_regression" else {
        "n_estimators": 5, "max_depth": params[f"{name}.max_depth"]}
    return {"imputer": Choice("median", {}), "scaler": Choice(params["scaler"], {}), "resampler": Choice("none", {}),
            "classifier": Choice(name, clf)}


@dataclass(frozen=True)
class Searched:
    part: UnitTable
    space: SearchSpace
    objective: Objective
    ranked: list[TrialOutcome]
    folds: list[tuple[np.ndarray, np.ndarray]]


def new_objective(searched: Searched, keep_oof: bool) -> Objective:
    part = searched.part
    return Objective(searched.space, part.X, part.y, searched.folds, get_scorer("balanced_accuracy"), SEARCH_SEED,
                     keep_oof=keep_oof)


@pytest.fixture(scope="module")
def searched() -> Searched:
    """The four trials run by a real Optuna study through a real objective keeping out-of-fold predictions."""
    part = unit_table(1)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=SEARCH_SEED).split(part.X, part.y))
    space = parse_search_space(SPACE)
    objective = Objective(space, part.X, part.y, folds, get_scorer("balanced_accuracy"), SEARCH_SEED, keep_oof=True)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for params in TRIALS:
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=len(TRIALS))
    return Searched(part, space, objective, ranked(outcomes(study)), folds)


def oof_by_hand(searched: Searched, pipe: Pipeline) -> np.ndarray:
    """Out-of-fold probabilities of ``pipe`` refitted on each fold's training units."""
    part, out = searched.part, np.full((len(searched.part), 2), np.nan)
    for train, valid in searched.folds:
        out[valid] = pipe.fit(part.X.iloc[train], part.y[train]).predict_proba(part.X.iloc[valid])
    return out


def test_the_search_leaves_real_out_of_fold_predictions_best_trial_first(searched: Searched) -> None:
    assert [t.number for t in searched.ranked] == [2, 0, 1, 3]
    assert [t.value for t in searched.ranked] == sorted((t.value for t in searched.ranked), reverse=True)
    np.testing.assert_allclose(searched.objective.oof[2], oof_by_hand(searched, lr_pipe(0.01, SEARCH_SEED)))
    np.testing.assert_allclose(searched.objective.oof[3], oof_by_hand(searched, rf_pipe(1, SEARCH_SEED)))


def test_prepare_candidates_recomputes_the_best_trials_predictions_as_the_search_had_them(searched: Searched) -> None:
    """Trials scored in another process get the same out-of-fold predictions; one already held is kept."""
    elsewhere = new_objective(searched, keep_oof=False)
    prepare_candidates(2, searched.ranked, elsewhere)
    assert sorted(elsewhere.oof) == [0, 2]
    for n in (0, 2):
        np.testing.assert_allclose(elsewhere.oof[n], searched.objective.oof[n])

    held = np.zeros((len(searched.part), 2))
    fresh = new_objective(searched, keep_oof=False)
    fresh.oof[2] = held
    prepare_candidates(0, searched.ranked, fresh)  # 0 candidates (ensembles off): the best trial still gets them
    assert list(fresh.oof) == [2] and fresh.oof[2] is held


def test_ensembles_off_export_the_best_trial_alone(searched: Searched) -> None:
    off = EnsembleConfig(rounds=0, candidates=4, max_members=None)
    fitting = Fitting(seed=3, unit_limits={}, calibration=None, cv=CVConfig(n_splits=3, group_by=None))
    final = choose_final_model(searched.ranked, searched.space, searched.objective, searched.part, off, NO_THRESHOLD,
                               fitting)
    assert final.weights == {2: 1} and final.selection is None and final.threshold is None
    assert final.specs == {2: spec_of(TRIALS[2])} and not final.is_ensemble
    assert final.fitting is fitting
    assert final.describe(spec_params) == {"ensemble": None, "threshold": None, "calibration": None}


def test_an_ensemble_beating_the_best_trial_out_of_fold_is_chosen_among_the_candidates(searched: Searched) -> None:
    oof, y = searched.objective.oof, searched.part.y
    fitting = Fitting(seed=3, unit_limits={}, calibration=None, cv=CVConfig(n_splits=3, group_by=None))
    on = EnsembleConfig(rounds=5, candidates=4, max_members=None)
    final = choose_final_model(searched.ranked, searched.space, searched.objective, searched.part, on, NO_THRESHOLD,
                               fitting)
    assert final.weights == {2: 4, 3: 1} and final.is_ensemble
    assert final.specs == {2: spec_of(TRIALS[2]), 3: spec_of(TRIALS[3])}
    selection = final.selection
    assert selection is not None and selection.single_trial == 2
    assert selection.score == pytest.approx(balanced_accuracy_score(y, (4 * oof[2] + oof[3]).argmax(axis=1)))
    assert selection.single_score == pytest.approx(balanced_accuracy_score(y, oof[2].argmax(axis=1)))
    assert selection.score > max(balanced_accuracy_score(y, p.argmax(axis=1)) for p in oof.values())
    assert final.describe(spec_params)["ensemble"] == [
        {"trial": 2, "weight": 4, "configuration": {**TRIALS[2]}},
        {"trial": 3, "weight": 1, "configuration": {**TRIALS[3], "random_forest.n_estimators": 5}},
    ]

    # Trial 3 is the worst: among the 3 best candidates no mix beats trial 2, which is exported alone.
    three = EnsembleConfig(rounds=5, candidates=3, max_members=None)
    alone = choose_final_model(searched.ranked, searched.space, searched.objective, searched.part, three,
                               NO_THRESHOLD, fitting)
    assert alone.weights == {2: 1} and alone.specs == {2: spec_of(TRIALS[2])}
    assert alone.selection is not None and not alone.selection.is_ensemble


def test_the_threshold_is_tuned_out_of_fold_on_the_exported_model_only_when_asked(searched: Searched) -> None:
    oof, y = searched.objective.oof, searched.part.y
    fitting = Fitting(seed=3, unit_limits={}, calibration=None, cv=CVConfig(n_splits=3, group_by=None))

    def choose(rounds: int, threshold: ThresholdConfig) -> FinalModel:
        return choose_final_model(searched.ranked, searched.space, searched.objective, searched.part,
                                  EnsembleConfig(rounds=rounds, candidates=4, max_members=None), threshold, fitting)

    def ba(p: np.ndarray, t: float) -> float:
        return float(balanced_accuracy_score(y, (p >= t).astype(int)))

    def grid(p: np.ndarray) -> np.ndarray:  # every unit's own cut (p >= t), and 0.5
        return np.union1d(np.unique(p), [0.5])

    # The best trial alone: the threshold maximising its out-of-fold balanced accuracy.
    p2 = oof[2][:, 1]
    single = choose(0, ThresholdConfig(tune=True, objective="balanced_accuracy", target_precision=0.9))
    tuned = single.threshold
    assert tuned is not None and tuned.value != 0.5
    assert tuned.oof_balanced_accuracy == pytest.approx(ba(p2, tuned.value))
    assert tuned.oof_balanced_accuracy == pytest.approx(max(ba(p2, t) for t in grid(p2)))
    assert tuned.oof_balanced_accuracy_at_half == pytest.approx(ba(p2, 0.5))
    assert tuned.oof_balanced_accuracy > ba(p2, 0.5)
    assert tuned.oof_precision == pytest.approx(precision_score(y, (p2 >= tuned.value).astype(int)))
    assert single.describe(spec_params)["threshold"] == {
        "value": tuned.value, "oof_balanced_accuracy": tuned.oof_balanced_accuracy,
        "oof_balanced_accuracy_at_half": tuned.oof_balanced_accuracy_at_half, "oof_precision": tuned.oof_precision}

    # The ensemble: on its members' weighted average, the lowest threshold reaching the precision (the most recall).
    pe = ((4 * oof[2] + oof[3]) / 5)[:, 1]
    at_90 = choose(5, ThresholdConfig(tune=True, objective="precision", target_precision=0.9)).threshold
    reaching = [t for t in grid(pe) if precision_score(y, (pe >= t).astype(int), zero_division=0) >= 0.9]
    # The cut is the lowest unit's probability reaching it, rounded down to the 1e-4 grid.
    assert at_90 is not None and min(reaching) - 1e-4 < at_90.value <= min(reaching)
    assert at_90.oof_precision == pytest.approx(precision_score(y, (pe >= at_90.value).astype(int)))
    assert at_90.oof_balanced_accuracy == pytest.approx(ba(pe, at_90.value))

    untuned = choose(5, NO_THRESHOLD)
    assert untuned.threshold is None and untuned.describe(spec_params)["threshold"] is None


SPEC_LR = spec_of(TRIALS[2])
SPEC_RF = spec_of(TRIALS[3])


def final_model(weights: dict[int, int], threshold: Threshold | None = None, calibration: str | None = None,
                group_by: str | None = None) -> FinalModel:
    specs = {n: {2: SPEC_LR, 3: SPEC_RF}[n] for n in weights}
    return FinalModel(specs, weights, None, threshold,
                      Fitting(seed=3, unit_limits={}, calibration=calibration, cv=CVConfig(3, group_by)))


def test_fit_of_the_best_trial_predicts_as_the_pipeline_built_by_hand() -> None:
    part, new = unit_table(1), unit_table(11).X
    model = final_model({2: 1}).fit(part)
    expected = lr_pipe(0.01, 3).fit(part.X, part.y)
    np.testing.assert_allclose(model.predict_proba(new), expected.predict_proba(new))
    assert list(model.feature_names_in_) == ["a", "b", "c"]
    assert [name for name, _ in model.steps] == ["imputer", "scaler", "classifier"]  # no resampler step
    assert member(model, 2) is None  # not an ensemble


def test_fit_of_a_thresholded_ensemble_averages_its_members_and_decides_at_the_threshold() -> None:
    part, new = unit_table(1), unit_table(11).X
    threshold = Threshold(0.35, 0.0, 0.0, 0.0)
    model = final_model({2: 4, 3: 1}, threshold).fit(part)
    lr, rf = lr_pipe(0.01, 3).fit(part.X, part.y), rf_pipe(1, 3).fit(part.X, part.y)
    proba = (4 * lr.predict_proba(new) + rf.predict_proba(new)) / 5
    np.testing.assert_allclose(model.predict_proba(new), proba)
    np.testing.assert_array_equal(model.predict(new), (proba[:, 1] >= 0.35).astype(int))
    assert (model.predict(new) != proba.argmax(axis=1)).any()  # the threshold, not 0.5, decides
    np.testing.assert_allclose(member(model, 2).predict_proba(new), lr.predict_proba(new))
    np.testing.assert_allclose(member(model, 3).predict_proba(new), rf.predict_proba(new))
    other_seed = rf_pipe(1, 4).fit(part.X, part.y).predict_proba(new)
    assert not np.allclose(member(model, 3).predict_proba(new), other_seed)  # the seed is the fitting's
    assert member(model, 0) is None


def test_fit_spec_fits_within_the_unit_limit_on_the_stratified_subsample() -> None:
    part, new = unit_table(1), unit_table(11).X
    sub = part.subset(fit_positions(part.y, 60, 3))
    limited = fit_spec(SPEC_LR, part, 3, {"logistic_regression": 60})
    np.testing.assert_allclose(limited.predict_proba(new), lr_pipe(0.01, 3).fit(sub.X, sub.y).predict_proba(new))
    full = lr_pipe(0.01, 3).fit(part.X, part.y).predict_proba(new)
    assert not np.allclose(limited.predict_proba(new), full)
    # A limit on a component the pipeline does not hold, or none: every unit.
    np.testing.assert_allclose(fit_spec(SPEC_LR, part, 3, {"random_forest": 60}).predict_proba(new), full)
    np.testing.assert_allclose(fit_spec(SPEC_LR, part, 3).predict_proba(new), full)


def test_a_calibrated_fit_is_scikit_learns_calibration_on_folds_grouped_by_recording() -> None:
    part, new = unit_table(1), unit_table(11).X
    model = final_model({2: 1}, calibration="sigmoid", group_by="recording").fit(part)
    groups = part.units["recording"].to_numpy()
    folds = list(StratifiedGroupKFold(3, shuffle=True, random_state=3).split(part.X, part.y, groups))
    expected = CalibratedClassifierCV(lr_pipe(0.01, 3), method="sigmoid", cv=folds, ensemble=False)
    expected.fit(part.X, part.y)
    np.testing.assert_allclose(model.predict_proba(new), expected.predict_proba(new))
    assert not np.allclose(model.predict_proba(new), lr_pipe(0.01, 3).fit(part.X, part.y).predict_proba(new))
