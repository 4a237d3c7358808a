"""The estimate for new recordings: leave-one-group-out refits, scored on the group left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_recording
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline

from unitrefine.config import DatasetConfig, RecordingConfig, TaskConfig
from unitrefine.data.dataset import UnitTable, load_dataset
from unitrefine.model.estimate import (
    REVIEW_BUDGETS,
    EstimatePlan,
    GroupEstimate,
    OutOfAnimal,
    curated_curve,
    describe,
    fit_review_calibration,
    group_calibrations,
    group_estimate,
    leave_group_out,
    new_recording_estimate,
)
from unitrefine.model.uncertainty import ReviewCalibration, centre_on_threshold, curated_scores, review_scores
from unitrefine.search.evaluation import balanced_accuracy


def _table(tmp_path: Path, subjects: list[str]) -> UnitTable:
    recs = []
    for i, subject in enumerate(subjects):
        files = write_recording(tmp_path / f"rec{i}", n_units=40, seed=7 + i, spread=2.5)
        recs.append(RecordingConfig(id=f"rec{i}", subject=subject, **files))
    task = TaskConfig(name="sua_vs_all", classes=["other", "good"],
                      mapping={"good": "good", "mua": "other", "noise": "other"})
    return load_dataset(DatasetConfig(name="t", recordings=recs), task, tmp_path)


def _fit(part: UnitTable) -> Pipeline:
    return make_pipeline(SimpleImputer(), RandomForestClassifier(n_estimators=20, random_state=0)).fit(part.X, part.y)


def test_each_subject_is_scored_by_a_model_fitted_without_it(tmp_path: Path) -> None:
    table = _table(tmp_path, ["a", "a", "b", "c"])
    est = leave_group_out(_fit, table, n_jobs=2)
    assert est is not None and est.by == "subject" and sorted(est.scores) == ["a", "b", "c"]
    held = (table.units["subject"] == "a").to_numpy()
    model = _fit(table.subset(np.flatnonzero(~held)))
    assert est.scores["a"] == pytest.approx(balanced_accuracy(table.y[held], model.predict(table.X[held])))
    assert est.mean == pytest.approx(np.mean(list(est.scores.values())))
    # A model that has seen the subject scores it higher: the refit really left it out.
    seen = _fit(table)
    assert balanced_accuracy(table.y[held], seen.predict(table.X[held])) > est.scores["a"]


def test_more_groups_than_max_refits_are_dealt_into_folds_and_each_still_scored_unseen(tmp_path: Path) -> None:
    table = _table(tmp_path, ["a", "b", "c", "d", "e"])
    fitted_without: list[frozenset[str]] = []

    def fit(part: UnitTable) -> Pipeline:
        fitted_without.append(frozenset("abcde") - set(part.units["subject"]))
        return _fit(part)

    est = leave_group_out(fit, table, max_refits=2, seed=3)
    assert est is not None and est.n_refits == 2 and len(fitted_without) == 2
    assert sorted(est.scores) == ["a", "b", "c", "d", "e"] and "2 refits" in est.source
    # The two refits left out disjoint folds covering every subject; each subject is scored by its fold's model.
    assert fitted_without[0].isdisjoint(fitted_without[1]) and fitted_without[0] | fitted_without[1] == set("abcde")
    fold = next(f for f in fitted_without if "a" in f)
    model = _fit(table.subset(np.flatnonzero(~table.units["subject"].isin(fold).to_numpy())))
    held = (table.units["subject"] == "a").to_numpy()
    assert est.scores["a"] == pytest.approx(balanced_accuracy(table.y[held], model.predict(table.X[held])))
    # Within the limit, one refit per subject.
    assert leave_group_out(_fit, table, max_refits=5).n_refits == 5


def test_falls_back_to_recordings_then_to_nothing(tmp_path: Path) -> None:
    assert leave_group_out(_fit, _table(tmp_path / "x", ["a", "a", "b", "b"])).by == "recording"
    assert leave_group_out(_fit, _table(tmp_path / "y", ["a", "b"])) is None


def test_the_printed_figure_prefers_refits_then_held_out_recordings_and_flags_the_cv_score(tmp_path: Path) -> None:
    table = _table(tmp_path, ["a", "b", "c"])
    groups = leave_group_out(_fit, table)
    holdout = {"balanced_accuracy": 0.7, "per_recording": {"r9": {"balanced_accuracy": 0.7}}}
    first = new_recording_estimate(groups, holdout, 0.99, 10)
    assert first["balanced_accuracy"] == groups.mean and first["holdout_balanced_accuracy"] == 0.7
    assert "leave-one-subject-out" in describe(first) and f"a {groups.scores['a']:.3f}" in describe(first)
    low, high = first["interval"]
    assert f"one new subject: {low:.3f}-{high:.3f} (90% prediction interval)" in describe(first)
    many = new_recording_estimate(GroupEstimate("recording", {f"r{i}": 0.8 for i in range(20)}, 10), None, 0.9, 5)
    assert "20 groups, listed in model_info.json" in describe(many) and "10 refits" in describe(many)
    second = new_recording_estimate(None, holdout, 0.99, 10)
    assert (second["balanced_accuracy"], second["source"]) == (0.7, "held-out recordings")
    third = new_recording_estimate(None, None, 0.99, 10)
    assert third["optimistic"] and "optimistic" in describe(third) and "best CV score of 10 trials" == third["source"]


def test_the_prediction_interval_is_the_student_t_interval_for_one_new_group() -> None:
    scores = {"a": 0.80, "b": 0.85, "c": 0.90, "d": 0.87}
    low, high = GroupEstimate("subject", scores, 4).interval(0.9)
    values = np.array(list(scores.values()))
    # t(3) 95th percentile is 2.353; sd 0.0435 (ddof 1); sqrt(1 + 1/4).
    half = 2.3534 * values.std(ddof=1) * np.sqrt(1.25)
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half), abs=1e-4)
    # Wider than the observed range, and wider still at a higher level; clipped to [0, 1].
    assert low < min(scores.values()) and high > max(scores.values())
    assert GroupEstimate("subject", scores, 4).interval(0.99)[0] < low
    assert GroupEstimate("subject", {"a": 0.99, "b": 0.5}, 2).interval() == (0.0, 1.0)


def _groups(seed: int = 0) -> dict[str, OutOfAnimal]:
    """Hand-made out-of-animal predictions of three groups (binary; labels drawn from the probabilities)."""
    rng = np.random.default_rng(seed)
    out = {}
    for g in ("a", "b", "c"):
        p = rng.beta(0.7, 0.7, size=60)
        proba = np.column_stack([1 - p, p])
        out[g] = OutOfAnimal(proba, (p >= 0.4).astype(int), (rng.random(60) < p ** 2).astype(int), 0.4)
    return out


def test_each_groups_review_ranking_is_calibrated_on_the_other_groups_only() -> None:
    groups = _groups()
    calibrations = group_calibrations(groups)
    for g in groups:
        assert calibrations[g] == fit_review_calibration([p for o, p in groups.items() if o != g])
    # The calibration reads threshold-centred probabilities and the curators' classes of every other unit.
    bc = np.vstack([centre_on_threshold(groups[g].proba, 0.4) for g in "bc"])
    assert calibrations["a"] == ReviewCalibration.fit(bc, np.concatenate([groups["b"].y, groups["c"].y]))
    # Flipping a's labels leaves a's calibration (and so its review order) as it was, and moves b's and c's.
    a = groups["a"]
    flipped = {**groups, "a": OutOfAnimal(a.proba, a.predicted, 1 - a.y, a.threshold)}
    again = group_calibrations(flipped)
    assert again["a"] == calibrations["a"] and again["b"] != calibrations["b"] and again["c"] != calibrations["c"]
    # The estimate scores each group's curated curve with its own calibration, and every budget is scored.
    folds = [[(g, np.zeros(1, dtype=bool))] for g in groups]
    plan = EstimatePlan("subject", folds, list(groups))
    est = group_estimate(plan, [[p] for p in groups.values()])
    for g, p in groups.items():
        assert est.curated[g] == curated_curve(p, calibrations[g])
        assert est.scores[g] == pytest.approx(balanced_accuracy(p.y, p.predicted))
    assert list(est.curated["a"]) == [0.0, 0.05, 0.1, 0.2, 0.3]
    # With another group's labels changed, a's curve changes only through its calibration (b's labels in it).
    changed = {**groups, "b": OutOfAnimal(groups["b"].proba, groups["b"].predicted, 1 - groups["b"].y, 0.4)}
    moved = group_estimate(plan, [[p] for p in changed.values()])
    assert moved.scores["a"] == est.scores["a"]
    assert moved.curated["a"] == curated_curve(a, group_calibrations(changed)["a"]) != est.curated["a"]


def test_the_estimate_of_real_refits_ranks_reviews_by_the_calibrated_gain(tmp_path: Path) -> None:
    table = _table(tmp_path, ["a", "b", "c"])
    est = leave_group_out(_fit, table)
    held = (table.units["subject"] == "b").to_numpy()
    model = _fit(table.subset(np.flatnonzero(~held)))
    b = OutOfAnimal(model.predict_proba(table.X[held]), model.predict(table.X[held]), table.y[held])
    others = []
    for g in ("a", "c"):
        mask = (table.units["subject"] == g).to_numpy()
        fitted = _fit(table.subset(np.flatnonzero(~mask)))
        others.append(OutOfAnimal(fitted.predict_proba(table.X[mask]), fitted.predict(table.X[mask]), table.y[mask]))
    calibration = fit_review_calibration(others)
    scores = review_scores(b.proba, b.predicted, None, calibration)
    assert est.curated["b"] == curated_scores(b.y, b.predicted, scores, REVIEW_BUDGETS)
    expected = new_recording_estimate(est, None, 0.9, 3)
    assert expected["review_ranking"] == "calibrated"
    assert "The review queue (predict review=) ranks units by the expected balanced-accuracy gain" in describe(expected)
    assert "ranks units by the model's margin" in describe(new_recording_estimate(None, None, 0.9, 3))
