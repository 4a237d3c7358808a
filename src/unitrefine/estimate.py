"""What to expect on recordings a model has never seen: leave-one-animal-out refits of the exported model.

The search's CV score is the best of many trials on the same folds, and its folds are grouped by recording, so
other recordings of the same animal sit in the training folds: on the curated mouse data it is ~0.08 above the
score on a new animal. The held-out recordings are honest but are one animal: single animals range over
~0.1 of balanced accuracy. The estimate here refits the exported model's configuration (ensemble, threshold and
all) once per animal (subject; recordings when there are fewer than three subjects) on all the others, scores
it on that animal, and averages: what a lab should expect from its next animal, and how much that varies. With
more groups than ``max_refits`` (a large dataset of hundreds of recordings), the groups are dealt into
``max_refits`` folds instead: each group is still scored by a model that never saw it, at a bounded cost.

The mean is unbiased for the next animal but one animal's score scatters around it as much as the animals
here do (on the mouse data the printed mean missed single left-out mice by up to 0.07), so the estimate
carries a prediction interval for one new group: mean +/- t(n-1) x sd x sqrt(1 + 1/n) over the n groups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from unitrefine.data import UnitTable
from unitrefine.evaluation import balanced_accuracy

log = logging.getLogger(__name__)

MIN_GROUPS = 3
#: Beyond this many groups the summary line gives their number, not each score.
MAX_LISTED = 12
#: Coverage of the prediction interval for one new group.
INTERVAL_LEVEL = 0.9


@dataclass(frozen=True)
class GroupEstimate:
    """Balanced accuracy of refits scored on each left-out group.

    Attributes
    ----------
    by : str
        ``subject`` or ``recording``.
    scores : dict
        Left-out group -> balanced accuracy of the model fitted on the other groups.
    """

    by: str
    scores: dict[str, float]
    n_refits: int

    @property
    def source(self) -> str:
        """How the scores were made, for the summary and the model card."""
        if self.n_refits == len(self.scores):
            return f"leave-one-{self.by}-out refits of the exported model"
        return f"{self.n_refits} refits of the exported model, each leaving out a fold of {self.by}s"

    @property
    def mean(self) -> float:
        """The mean over left-out groups."""
        return float(np.mean(list(self.scores.values())))

    def interval(self, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
        """Where one new group's score should fall with probability ``level`` (Student-t prediction interval).

        Parameters
        ----------
        level : float
            Two-sided coverage.

        Returns
        -------
        tuple of float
            Lower and upper bound, clipped to [0, 1].
        """
        from scipy.stats import t

        values = np.fromiter(self.scores.values(), float)
        n = len(values)
        half = t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) * np.sqrt(1 + 1 / n)
        return max(0.0, self.mean - half), min(1.0, self.mean + half)


def _score_fold(fit: Callable[[UnitTable], Any], table: UnitTable, held: list[np.ndarray]) -> list[float]:
    """Fit on every unit outside the fold's groups; score each of the fold's groups on its own."""
    model = fit(table.subset(np.flatnonzero(~np.logical_or.reduce(held))))
    scores = []
    for mask in held:
        part = table.subset(np.flatnonzero(mask))
        scores.append(balanced_accuracy(part.y, np.asarray(model.predict(part.X))))
    return scores


def leave_group_out(
    fit: Callable[[UnitTable], Any], table: UnitTable, n_jobs: int = 1, max_refits: int = 10, seed: int = 0
) -> GroupEstimate | None:
    """Refit with ``fit`` once per subject (or recording) on the others and score it on the one left out.

    Parameters
    ----------
    fit : callable
        Fits the model to export on a table (:meth:`unitrefine.final_model.FinalModel.fit`).
    table : UnitTable
        Every labelled unit, held-out recordings included.
    n_jobs : int
        Refits run side by side (processes; each fit uses one thread).
    max_refits : int
        With more usable groups than this, the groups are dealt (shuffled with ``seed``) into this many folds
        and each refit leaves a fold out; every group is still scored on its own.
    seed : int
        Shuffles the groups into folds.

    Returns
    -------
    GroupEstimate or None
        None when there are fewer than three subjects and three recordings. Groups whose removal leaves a
        class without training units, or that hold a single class, are skipped (logged).
    """
    by = next((b for b in ("subject", "recording") if table.units[b].nunique() >= MIN_GROUPS), None)
    if by is None:
        log.info("Fewer than %d recordings: no leave-one-out estimate for new recordings.", MIN_GROUPS)
        return None
    groups = table.units[by].to_numpy()
    usable = []
    for g in dict.fromkeys(groups):
        held = groups == g
        if len(np.unique(table.y[~held])) < len(table.classes) or len(np.unique(table.y[held])) < 2:
            log.info("Leave-one-%s-out estimate: %s skipped (it holds a whole class, or only one).", by, g)
            continue
        usable.append((str(g), held))
    if len(usable) < 2:
        return None
    order = np.random.default_rng(seed).permutation(len(usable)) if len(usable) > max_refits else range(len(usable))
    folds = [[usable[i] for i in order[k::max_refits]] for k in range(min(max_refits, len(usable)))]
    folds = [f for f in folds if _trainable(table, f, by)]
    scores = Parallel(n_jobs=min(n_jobs, len(folds)))(
        delayed(_score_fold)(fit, table, [held for _, held in fold]) for fold in folds)
    by_group = {g: float(s) for fold, fold_scores in zip(folds, scores) for (g, _), s in zip(fold, fold_scores)}
    ordered = {g: by_group[g] for g, _ in usable if g in by_group}
    return GroupEstimate(by, ordered, len(folds)) if len(ordered) >= 2 else None


def _trainable(table: UnitTable, fold: list[tuple[str, np.ndarray]], by: str) -> bool:
    """Whether leaving the fold's groups out still leaves every class to train on (logged when not)."""
    rest = ~np.logical_or.reduce([held for _, held in fold])
    if len(np.unique(table.y[rest])) == len(table.classes):
        return True
    log.info("Estimate for new recordings: %ss %s skipped together (without them a class has no training units).",
             by, ", ".join(g for g, _ in fold))
    return False


def new_recording_estimate(
    groups: GroupEstimate | None, holdout: dict[str, Any] | None, cv_score: float, n_complete: int
) -> dict[str, Any]:
    """The figure a run prints as its expectation for new recordings, and where it comes from.

    The leave-one-group-out mean when there is one; else the held-out recordings' score (unbiased, but one
    draw); else the best CV score, flagged optimistic (the best of ``n_complete`` trials on the same folds).
    """
    held = None if not holdout else holdout["balanced_accuracy"]
    if groups is not None:
        low, high = groups.interval()
        return {"balanced_accuracy": groups.mean, "source": groups.source,
                "per_group": groups.scores, "min": min(groups.scores.values()), "max": max(groups.scores.values()),
                "by": groups.by, "interval": [low, high], "interval_level": INTERVAL_LEVEL,
                "holdout_balanced_accuracy": held, "optimistic": False}
    if holdout:
        per_rec = [m["balanced_accuracy"] for m in holdout["per_recording"].values()]
        return {"balanced_accuracy": held, "source": "held-out recordings", "per_group": {
            r: m["balanced_accuracy"] for r, m in holdout["per_recording"].items()}, "min": min(per_rec),
            "max": max(per_rec), "holdout_balanced_accuracy": held, "optimistic": False}
    return {"balanced_accuracy": cv_score, "source": f"best CV score of {n_complete} trials", "per_group": {},
            "holdout_balanced_accuracy": None, "optimistic": True}


def describe(estimate: dict[str, Any]) -> str:
    """One line for the end-of-run summary."""
    if estimate["optimistic"]:
        return (f"Expected balanced accuracy on new recordings: {estimate['balanced_accuracy']:.3f} — the best CV "
                "score, optimistic (the best of many trials on the same folds). Hold recordings out, or train on "
                f"{MIN_GROUPS}+ recordings, for an honest estimate.")
    groups = estimate["per_group"]
    per = (", ".join(f"{g} {v:.3f}" for g, v in groups.items()) if len(groups) <= MAX_LISTED
           else f"{len(groups)} groups, listed in model_info.json")
    if "interval" in estimate:
        (low, high), level = estimate["interval"], estimate["interval_level"]
        spread = f"one new {estimate['by']}: {low:.3f}-{high:.3f} ({level:.0%} prediction interval)"
    else:
        spread = f"they ranged over {estimate['min']:.3f}-{estimate['max']:.3f}"
    return (f"Expected balanced accuracy on new recordings: {estimate['balanced_accuracy']:.3f} "
            f"({estimate['source']}: {per}; {spread}). The CV scores above are optimistic: each is the best of "
            "many trials.")
