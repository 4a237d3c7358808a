"""Decision thresholds for binary tasks, chosen on out-of-fold predictions and shipped in the model.

The out-of-fold probabilities come from the search's CV, grouped by recording when there are enough
recordings: the threshold is tuned on units of recordings each model did not see, never on held-out data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import balanced_accuracy_score, precision_score
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline

from unitrefine.errors import UnitRefineError


@dataclass(frozen=True)
class Threshold:
    """A tuned decision threshold on the positive class probability and its out-of-fold effect."""

    value: float
    oof_balanced_accuracy: float
    oof_balanced_accuracy_at_half: float
    oof_precision: float


def tune_threshold(y: np.ndarray, p_positive: np.ndarray, objective: str, target_precision: float) -> Threshold:
    """Choose the threshold on ``p_positive`` (units with ``p >= t`` are positive).

    Parameters
    ----------
    y : numpy.ndarray
        0/1 class codes (1 = positive class).
    p_positive : numpy.ndarray
        Out-of-fold probability of the positive class.
    objective : {"balanced_accuracy", "precision"}
        Maximise balanced accuracy, or reach ``target_precision`` for the positive class with the most recall.
    target_precision : float
        Used with ``objective="precision"``.

    Raises
    ------
    UnitRefineError
        If no threshold reaches the target precision.
    """
    # Cut points on a 1e-4 grid, rounded down: each unit's own probability is on its side of its cut (p >= t).
    candidates = np.unique(np.floor(p_positive * 1e4) / 1e4)
    candidates = candidates[(candidates > 0.0) & (candidates < 1.0)]
    candidates = np.union1d(candidates, [0.5])
    # Every candidate at once: how many units of each class have p >= t (thousands of candidates; one
    # scikit-learn metric call each took seconds). The chosen threshold's figures are scikit-learn's own.
    pos, neg = np.sort(p_positive[y == 1]), np.sort(p_positive[y == 0])
    tp = len(pos) - np.searchsorted(pos, candidates, side="left")
    fp = len(neg) - np.searchsorted(neg, candidates, side="left")
    if objective == "balanced_accuracy":
        bas = (tp / max(len(pos), 1) + 1 - fp / max(len(neg), 1)) / 2
        best = candidates[np.lexsort((np.abs(candidates - 0.5), -np.round(bas, 12)))[0]]
    else:
        precisions = np.divide(tp, tp + fp, out=np.zeros(len(candidates)), where=tp + fp > 0)
        reaching = candidates[precisions >= target_precision]
        if not len(reaching):
            raise UnitRefineError(
                f"No threshold reaches precision {target_precision} for the positive class out of fold "
                f"(best {precisions.max():.3f}). Lower threshold.target_precision."
            )
        best = reaching.min()  # the lowest such threshold keeps the most recall

    def ba(t: float) -> float:
        return float(balanced_accuracy_score(y, (p_positive >= t).astype(int)))

    precision = float(precision_score(y, (p_positive >= best).astype(int), zero_division=0))
    return Threshold(float(best), ba(best), ba(0.5), precision)


def with_threshold(model: Pipeline, threshold: float, X: Any, y: np.ndarray) -> Pipeline:
    """Wrap a fitted binary pipeline so that ``predict`` uses ``threshold`` (``predict_proba`` is unchanged).

    The result is still a plain scikit-learn ``Pipeline`` with the metric names as ``feature_names_in_``.
    """
    wrapped = FixedThresholdClassifier(FrozenEstimator(model), threshold=threshold, response_method="predict_proba")
    return Pipeline([("thresholded", wrapped.fit(X, y))])
