"""What to expect on recordings a model has never seen: leave-one-animal-out refits of the exported model.

The search's CV score is the best of many trials on the same folds, and its folds are grouped by recording, so
other recordings of the same animal sit in the training folds: on the curated mouse data it is ~0.08 above the
score on a new animal. The held-out recordings are honest but are one animal: single animals range over
~0.1 of balanced accuracy. The estimate here refits the exported model's configuration (ensemble, threshold and
all) once per animal (subject; recordings when there are fewer than three subjects) on all the others, scores
it on that animal, and averages: what a lab should expect from its next animal, and how much that varies.
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

    @property
    def mean(self) -> float:
        """The mean over left-out groups."""
        return float(np.mean(list(self.scores.values())))


def _score_group(fit: Callable[[UnitTable], Any], table: UnitTable, held: np.ndarray) -> float:
    model = fit(table.subset(np.flatnonzero(~held)))
    part = table.subset(np.flatnonzero(held))
    return balanced_accuracy(part.y, np.asarray(model.predict(part.X)))


def leave_group_out(fit: Callable[[UnitTable], Any], table: UnitTable, n_jobs: int = 1) -> GroupEstimate | None:
    """Refit with ``fit`` once per subject (or recording) on the others and score it on the one left out.

    Parameters
    ----------
    fit : callable
        Fits the model to export on a table (:meth:`unitrefine.final_model.FinalModel.fit`).
    table : UnitTable
        Every labelled unit, held-out recordings included.
    n_jobs : int
        Refits run side by side (processes; each fit uses one thread).

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
    scores = Parallel(n_jobs=min(n_jobs, len(usable)))(delayed(_score_group)(fit, table, held) for _, held in usable)
    return GroupEstimate(by, {g: float(s) for (g, _), s in zip(usable, scores)})


def new_recording_estimate(
    groups: GroupEstimate | None, holdout: dict[str, Any] | None, cv_score: float, n_complete: int
) -> dict[str, Any]:
    """The figure a run prints as its expectation for new recordings, and where it comes from.

    The leave-one-group-out mean when there is one; else the held-out recordings' score (unbiased, but one
    draw); else the best CV score, flagged optimistic (the best of ``n_complete`` trials on the same folds).
    """
    held = None if not holdout else holdout["balanced_accuracy"]
    if groups is not None:
        return {"balanced_accuracy": groups.mean, "source": f"leave-one-{groups.by}-out refits of the exported model",
                "per_group": groups.scores, "min": min(groups.scores.values()), "max": max(groups.scores.values()),
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
    per = ", ".join(f"{g} {v:.3f}" for g, v in estimate["per_group"].items())
    return (f"Expected balanced accuracy on new recordings: {estimate['balanced_accuracy']:.3f} "
            f"({estimate['source']}: {per}; a single new one may land anywhere in "
            f"{estimate['min']:.3f}-{estimate['max']:.3f}). The CV scores above are optimistic: each is the best of "
            "many trials.")
