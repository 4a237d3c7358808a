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
from unitrefine.data.dataset import UnitTable
from unitrefine.data.loading import load_dataset
from unitrefine.model.estimate import GroupEstimate, describe, leave_group_out, new_recording_estimate
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
