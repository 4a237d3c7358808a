"""Greedy ensemble selection over out-of-fold predictions."""

from __future__ import annotations

import numpy as np
import pytest

from unitrefine.model.ensemble import oof_score, select_ensemble


def one_hot(pred: np.ndarray, confidence: float = 0.8) -> np.ndarray:
    p = np.full((len(pred), 2), 1 - confidence)
    p[np.arange(len(pred)), pred] = confidence
    return p


def test_complementary_models_are_combined_and_beat_each_alone() -> None:
    """Three models wrong on disjoint thirds of the units: any two of them out-vote the third's errors."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    oof = {}
    for k in range(3):
        pred = y.copy()
        pred[k * 100 : (k + 1) * 100] = 1 - pred[k * 100 : (k + 1) * 100]
        oof[k] = one_hot(pred)
    oof[3] = one_hot(rng.integers(0, 2, 300))  # a useless model
    sel = select_ensemble(oof, y, [0, 1, 2, 3], rounds=6)
    assert sel.is_ensemble
    assert 3 not in sel.weights
    assert sel.score == pytest.approx(1.0)
    assert sel.single_score == pytest.approx(oof_score(y, oof[sel.single_trial]))
    assert sel.score > sel.single_score


def test_max_members_bounds_the_number_of_different_trials() -> None:
    """Four models wrong on disjoint quarters: unbounded, three of them out-vote each one's errors; bounded to
    two, no pair can, and the selection stays within the bound."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    oof = {}
    for k in range(4):
        pred = y.copy()
        pred[k * 100 : (k + 1) * 100] = 1 - pred[k * 100 : (k + 1) * 100]
        oof[k] = one_hot(pred, 0.6 + 0.05 * k)
    free = select_ensemble(oof, y, [0, 1, 2, 3], rounds=8)
    bounded = select_ensemble(oof, y, [0, 1, 2, 3], rounds=8, max_members=2)
    assert len(free.weights) >= 3 and free.score == pytest.approx(1.0)
    assert len(bounded.weights) <= 2 and bounded.score < free.score


def test_a_dominant_model_stays_alone() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    good = one_hot(y, 0.9)
    noisy = one_hot(np.where(rng.random(200) < 0.4, 1 - y, y), 0.95)
    sel = select_ensemble({7: noisy, 3: good}, y, [7, 3], rounds=5)
    assert not sel.is_ensemble
    assert sel.weights == {3: 1} and sel.single_trial == 3 and sel.score == pytest.approx(1.0)


def test_no_candidates_is_an_error() -> None:
    with pytest.raises(ValueError, match="no candidate"):
        select_ensemble({}, np.array([0, 1]), [], rounds=3)
