"""Ensemble selection over the search's out-of-fold predictions (Caruana et al. 2004, as in auto-sklearn).

Every completed trial leaves out-of-fold class probabilities for the training units (each unit predicted
by the pipeline fitted on the other folds, so on other recordings when CV is grouped). Greedy forward
selection with replacement adds, one round at a time, the trial whose probabilities most improve the
averaged ensemble's balanced accuracy; the best prefix wins. All of it sees only the searched recordings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import balanced_accuracy_score


@dataclass(frozen=True)
class Selection:
    """Trials chosen for the ensemble with their weights (rounds in which each was picked).

    Attributes
    ----------
    weights : dict
        Trial number -> weight, in the order first picked.
    score : float
        Out-of-fold balanced accuracy of the weighted average.
    single_trial : int
        The candidate with the best out-of-fold score on its own.
    single_score : float
        Its out-of-fold balanced accuracy.
    """

    weights: dict[int, int]
    score: float
    single_trial: int
    single_score: float

    @property
    def is_ensemble(self) -> bool:
        """Whether more than one distinct trial was selected."""
        return len(self.weights) > 1


def oof_score(y: np.ndarray, proba: np.ndarray) -> float:
    """Balanced accuracy of the arg-max class of ``proba``."""
    return float(balanced_accuracy_score(y, proba.argmax(axis=1)))


def select_ensemble(
    oof: Mapping[int, np.ndarray], y: np.ndarray, candidates: Sequence[int], rounds: int, max_members: int | None = None
) -> Selection:
    """Greedy ensemble selection with replacement.

    Parameters
    ----------
    oof : mapping
        Trial number -> out-of-fold probabilities, shape (n_units, n_classes).
    y : numpy.ndarray
        True class codes of the same units.
    candidates : sequence of int
        Trial numbers to choose from (e.g. the best few by CV score).
    rounds : int
        Number of greedy rounds (an upper bound on the ensemble size).
    max_members : int or None
        At most this many different trials (once reached, later rounds re-weight the members already picked):
        bounds the size of the exported model, which holds every member. None: no bound.

    Returns
    -------
    Selection
        The best prefix of the greedy sequence; a single trial when no mix beats it.
    """
    if not candidates:
        raise ValueError("no candidate trials with out-of-fold predictions")
    singles = {c: oof_score(y, oof[c]) for c in candidates}
    single = max(candidates, key=lambda c: (singles[c], -c))
    total = np.zeros_like(oof[single], dtype=np.float64)
    picked: list[int] = []
    best_prefix, best_score = [single], singles[single]
    for _ in range(max(rounds, 1)):
        pool = sorted(set(picked)) if max_members is not None and len(set(picked)) >= max_members else candidates
        scores = {c: oof_score(y, total + oof[c]) for c in pool}
        choice = max(pool, key=lambda c: (scores[c], -c))
        total += oof[choice]
        picked.append(choice)
        if scores[choice] > best_score + 1e-12:
            best_prefix, best_score = list(picked), scores[choice]
    weights = dict(Counter(best_prefix))
    return Selection(weights=weights, score=best_score, single_trial=single, single_score=singles[single])
