"""Splits are honest: held-out recordings never reach the search, folds never share a recording."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from unitrefine.config import CVConfig
from unitrefine.data.dataset import UnitTable
from unitrefine.errors import UnitRefineError
from unitrefine.search.evaluation import choose_holdout, holdout_report, make_plan


def table(n_recordings: int = 8, n_units: int = 30, seed: int = 0, p_good: float = 0.3) -> UnitTable:
    """A table of ``n_recordings`` recordings, two per subject."""
    rng = np.random.default_rng(seed)
    n = n_recordings * n_units
    recording = np.repeat([f"rec{i}" for i in range(n_recordings)], n_units)
    subject = np.repeat([f"s{i // 2}" for i in range(n_recordings)], n_units)
    y = (rng.random(n) < p_good).astype(np.int64)
    units = pd.DataFrame({"recording": recording, "subject": subject, "unit_id": np.arange(n).astype(str),
                          "label": y.astype(str)})
    X = pd.DataFrame({"a": rng.normal(size=n).astype(np.float32)})
    return UnitTable(X=X, y=y, classes=("other", "good"), units=units)


@pytest.mark.parametrize("group_by", ["recording", "subject"])
def test_grouped_folds_never_share_a_group(group_by: str) -> None:
    t = table()
    plan = make_plan(t, CVConfig(n_splits=3, group_by=group_by, n_holdout_recordings=2), seed=1)
    groups = t.units[group_by].to_numpy()[plan.train_index]
    assert plan.grouped_by == group_by
    seen = set()
    for train, valid in plan.folds:
        assert not set(groups[train]) & set(groups[valid])
        seen |= set(valid.tolist())
    assert seen == set(range(len(plan.train_index)))  # every training unit is validated exactly once


def test_holdout_recordings_are_outside_every_fold() -> None:
    t = table()
    cv = CVConfig(n_splits=3, holdout_recordings=["rec2", "rec5"])
    plan = make_plan(t, cv, seed=0)
    held = set(t.units["recording"].to_numpy()[plan.holdout_index])
    trained = set(t.units["recording"].to_numpy()[plan.train_index])
    assert held == {"rec2", "rec5"}
    assert not held & trained
    assignment = plan.assignment(t)
    assert set(assignment.loc[assignment["split"] == "holdout", "recording"]) == held
    assert (assignment.loc[assignment["split"] == "holdout", "fold"] == -1).all()
    # Every training unit is in the fold that validates it: fold k holds as many units as plan.folds[k] validates.
    folds = assignment.loc[assignment["split"] == "train", "fold"]
    assert folds.value_counts().sort_index().to_dict() == {k: len(valid) for k, (_, valid) in enumerate(plan.folds)}
    assert len(folds) == len(plan.train_index)


def test_random_holdout_is_seeded_and_keeps_every_class() -> None:
    t = table()
    cv = CVConfig(n_holdout_recordings=3)
    first = choose_holdout(t, cv, seed=7)
    assert first == choose_holdout(t, cv, seed=7)
    assert len(first) == 3
    held = t.units["recording"].isin(first).to_numpy()
    assert set(t.y[held]) == {0, 1} and set(t.y[~held]) == {0, 1}


def test_too_few_groups_falls_back_to_unit_folds_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    t = table(n_recordings=3)
    with caplog.at_level(logging.WARNING):
        plan = make_plan(t, CVConfig(n_splits=5, group_by="recording"), seed=0)
    assert plan.grouped_by is None
    assert "fewer than cv.n_splits=5" in caplog.text
    assert len(plan.folds) == 5


@pytest.mark.parametrize(
    ("cv", "match"),
    [
        (CVConfig(n_splits=5, holdout_recordings=["nope"]),
         r"^cv\.holdout_recordings names \['nope'\], which are not recordings of the dataset \['rec0', 'rec1'"),
        (CVConfig(n_splits=5, n_holdout_recordings=8),
         r"^cv\.n_holdout_recordings=8 leaves no recording to train on \(8 recordings\)\. Lower it\.$"),
    ],
)
def test_bad_holdout_settings(cv: CVConfig, match: str) -> None:
    with pytest.raises(UnitRefineError, match=match):
        make_plan(table(), cv, seed=0)


def test_class_smaller_than_folds_is_an_error() -> None:
    t = table(n_recordings=2, n_units=10, p_good=0.1, seed=3)
    n_good = int(t.y.sum())
    with pytest.raises(UnitRefineError, match=f"'good': {n_good}"):
        make_plan(t, CVConfig(n_splits=n_good + 1, group_by=None), seed=0)


def test_holdout_report_matches_sklearn_and_counts() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200))
    recs = np.repeat(["a", "b"], 100)
    report = holdout_report(y, pred, ("good", "mua", "noise"), recs)
    assert report["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    expected = balanced_accuracy_score(y[:100], pred[:100])
    assert report["per_recording"]["a"]["balanced_accuracy"] == pytest.approx(expected)
    counted = [[int(((y == i) & (pred == j)).sum()) for j in range(3)] for i in range(3)]  # rows: true class
    assert report["confusion_matrix"] == counted
    assert report["per_class"]["mua"]["support"] == int((y == 1).sum())
    assert report["per_class"]["mua"]["recall"] == pytest.approx(counted[1][1] / sum(counted[1]))
    assert report["per_class"]["mua"]["precision"] == pytest.approx(counted[1][1] / sum(row[1] for row in counted))
    assert report["per_recording"]["b"]["n_units"] == 100
