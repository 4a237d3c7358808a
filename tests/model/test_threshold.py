"""Decision thresholds tuned out of fold and shipped inside the exported pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import features_for, make_config, overlapping_recordings
from sklearn.metrics import balanced_accuracy_score

from unitrefine.errors import UnitRefineError
from unitrefine.model.threshold import tune_threshold
from unitrefine.run.training import train
from unitrefine.search.estimators import TRUSTED_TYPES


def shifted_scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose best cut is near 0.3, not 0.5 (a model biased towards the negative class)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(np.where(y == 1, 0.35, 0.15) + rng.normal(0, 0.07, n), 0.001, 0.999)
    return y, p


def rates(y: np.ndarray, p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall, specificity, precision) of the positive class when units with ``p >= t`` are called positive,
    for every threshold of ``t``, counted directly."""
    called = p[None, :] >= t[:, None]
    tp, fp = (called & (y == 1)).sum(axis=1), (called & (y == 0)).sum(axis=1)
    precision = np.divide(tp, tp + fp, out=np.zeros(len(t)), where=tp + fp > 0)
    return tp / (y == 1).sum(), 1 - fp / (y == 0).sum(), precision


def test_balanced_accuracy_objective_moves_the_threshold_where_it_pays() -> None:
    y, p = shifted_scores()
    t = tune_threshold(y, p, "balanced_accuracy", 0.9)
    assert 0.2 < t.value < 0.32
    assert t.oof_balanced_accuracy > t.oof_balanced_accuracy_at_half + 0.3
    # The figures are those of the chosen threshold and of 0.5, and no cut at a unit's probability does better.
    recall, specificity, _ = rates(y, p, np.array([t.value, 0.5]))
    expected = tuple((recall + specificity) / 2)
    assert (t.oof_balanced_accuracy, t.oof_balanced_accuracy_at_half) == pytest.approx(expected)
    recall, specificity, _ = rates(y, p, np.unique(np.round(p, 4)))
    assert t.oof_balanced_accuracy == pytest.approx(((recall + specificity) / 2).max())


def test_precision_objective_reaches_the_target_with_the_lowest_threshold() -> None:
    y, p = shifted_scores()
    t = tune_threshold(y, p, "precision", 0.95)
    _, _, precision = rates(y, p, np.array([t.value]))
    assert t.oof_precision == pytest.approx(precision[0]) and t.oof_precision >= 0.95
    # The lowest such threshold: every cut at a unit's probability below it misses the target.
    lower = np.unique(np.round(p, 4))
    lower = lower[lower < t.value]
    assert len(lower) > 0 and (rates(y, p, lower)[2] < 0.95).all()
    looser = tune_threshold(y, p, "precision", 0.8)
    assert looser.value < t.value


def test_unreachable_precision_is_a_clear_error() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    with pytest.raises(UnitRefineError, match="No threshold reaches precision 0.99"):
        tune_threshold(y, rng.random(200), "precision", 0.99)


def test_tuned_threshold_ships_in_the_model_and_spikeinterface_uses_it(tmp_path: Path) -> None:
    from spikeinterface.curation import load_model

    recordings = overlapping_recordings(tmp_path / "d", 4, seed=20, spread=3.0)
    cfg = make_config(
        tmp_path, recordings,
        ["search.n_trials=3", "search.n_jobs=1", "cv.n_splits=3", "cv.holdout_recordings=[rec3]",
         "cv.refit_on_all=false", "tracking.enabled=false", "threshold.tune=true"],
    )
    result = train(cfg)
    info = json.loads((result.model_folder / "model_info.json").read_text())
    t = info["threshold"]["value"]
    assert 0 < t < 1
    model, _ = load_model(model_folder=result.model_folder, trusted=list(TRUSTED_TYPES))
    assert model.named_steps["thresholded"].threshold == pytest.approx(t)
    X = features_for(model, recordings[3]["metrics"])
    p_good = model.predict_proba(X)[:, 1]
    np.testing.assert_array_equal(model.predict(X), (p_good >= t).astype(int))
    held = pd.read_csv(result.model_folder / "holdout_predictions.csv")
    assert held["predicted_class"].tolist() == np.where(p_good >= t, "good", "other").tolist()
    # The held-out report's figures at the tuned threshold and at 0.5, from the held-out labels.
    truth = (held["true_class"] == "good").to_numpy()
    assert info["holdout"]["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, p_good >= t))
    assert info["holdout"]["balanced_accuracy_at_threshold_0.5"] == pytest.approx(
        balanced_accuracy_score(truth, p_good >= 0.5))


def test_threshold_tuning_needs_a_binary_task(tmp_path: Path, tiny_recordings) -> None:
    from omegaconf import OmegaConf

    from unitrefine.config import compose_config, validate_config

    cfg = compose_config(["+experiment=smoke", "task=three_class", "threshold.tune=true"])
    cfg.dataset.recordings = OmegaConf.create(tiny_recordings)
    with pytest.raises(UnitRefineError, match="threshold.tune needs a binary task"):
        validate_config(cfg)


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibrated_model_is_one_pipeline_spikeinterface_loads(tmp_path: Path, method: str) -> None:
    """Calibration refits the model inside grouped CV folds; the export stays a loadable sklearn Pipeline."""
    from sklearn.calibration import CalibratedClassifierCV
    from spikeinterface.curation import load_model

    recordings = overlapping_recordings(tmp_path / "d", 5, seed=40, spread=3.0)
    cfg = make_config(
        tmp_path, recordings,
        ["search.n_trials=2", "search.n_jobs=1", "cv.n_splits=3", "cv.holdout_recordings=[rec4]",
         "cv.refit_on_all=false", "tracking.enabled=false", f"calibration.method={method}",
         "cv.group_by=recording"],
    )
    result = train(cfg)
    model, _ = load_model(model_folder=result.model_folder, trusted=list(TRUSTED_TYPES))
    calibrated = model.named_steps["calibrated"]
    assert isinstance(calibrated, CalibratedClassifierCV) and calibrated.method == method
    # Its folds are grouped: no recording on both sides of any calibration fold.
    recs = np.repeat([r["id"] for r in recordings[:4]], 80)
    assert isinstance(calibrated.cv, list) and len(calibrated.cv) == 3
    for train_idx, valid_idx in calibrated.cv:
        assert not set(recs[train_idx]) & set(recs[valid_idx])
    X = features_for(model, recordings[4]["metrics"])
    held = pd.read_csv(result.model_folder / "holdout_predictions.csv")
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], held["probability_good"], rtol=1e-6)
