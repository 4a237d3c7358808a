"""What to expect on recordings a model has never seen: leave-one-animal-out refits of the exported model.

The search's CV score is the best of many trials on the same folds, and its folds are grouped by recording, so
other recordings of the same animal sit in the training folds: it is optimistic for a new animal. The held-out
recordings are honest but are one animal, and single animals differ widely (both measured:
benchmarks/results/vs_spikeinterface.md). The estimate here refits the exported model's configuration
(ensemble, threshold and all) once per animal (subject; recordings when there are fewer than three subjects) on
all the others, scores it on that animal, and averages: what a lab should expect from its next animal, and how
much that varies. With more groups than ``max_refits`` (a large dataset of hundreds of recordings), the groups
are dealt into ``max_refits`` folds instead: each group is still scored by a model that never saw it, at a
bounded cost.

The mean is unbiased for the next animal but one animal's score scatters around it as much as the animals
here do (how far it missed single left-out mice: benchmarks/results/vs_spikeinterface.md), so the estimate
carries a prediction interval for one new group: mean +/- t(n-1) x sd x sqrt(1 + 1/n) over the n groups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unitrefine.data.dataset import UnitTable
from unitrefine.progress import parallel_map
from unitrefine.search.evaluation import balanced_accuracy

log = logging.getLogger(__name__)

MIN_GROUPS = 3
#: Beyond this many groups the summary line gives their number, not each score.
MAX_LISTED = 12
#: Coverage of the prediction interval for one new group.
INTERVAL_LEVEL = 0.9
#: Review budgets of the curve (share of a new recording's units a curator checks, most uncertain first).
REVIEW_BUDGETS = (0.0, 0.05, 0.1, 0.2, 0.3)


def prediction_interval(values: Sequence[float], level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """Where one new group's score should fall with probability ``level``, from ``values`` of n groups.

    Student-t prediction interval: mean +/- t(n-1) x sd x sqrt(1 + 1/n), clipped to [0, 1].
    """
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    n, mean = len(v), float(np.mean(v))
    half = t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) * np.sqrt(1 + 1 / n)
    return max(0.0, mean - half), min(1.0, mean + half)


@dataclass(frozen=True)
class GroupScore:
    """A refit's scores on one left-out group: the model alone, and curated after reviews of its units.

    Attributes
    ----------
    balanced_accuracy : float
        The model's labels alone.
    curated : dict
        Review budget (share of the group's units, the most uncertain first) -> balanced accuracy of the labels
        after the curator's review replaced the model's on those units.
    """

    balanced_accuracy: float
    curated: dict[float, float]


@dataclass(frozen=True)
class GroupEstimate:
    """Balanced accuracy of refits scored on each left-out group.

    Attributes
    ----------
    by : str
        ``subject`` or ``recording``.
    scores : dict
        Left-out group -> balanced accuracy of the model fitted on the other groups.
    n_refits : int
        How many refits made the scores.
    curated : dict
        Left-out group -> review budget -> curated balanced accuracy (:class:`GroupScore`); empty if not scored.
    """

    by: str
    scores: dict[str, float]
    n_refits: int
    curated: dict[str, dict[float, float]] = field(default_factory=dict)

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
        """Where one new group's score should fall with probability ``level`` (:func:`prediction_interval`)."""
        return prediction_interval(list(self.scores.values()), level)

    def review_curve(self, level: float = INTERVAL_LEVEL) -> list[dict[str, Any]]:
        """Per review budget: the mean curated balanced accuracy over left-out groups and its prediction interval."""
        if len(self.curated) < 2:
            return []
        budgets = list(next(iter(self.curated.values())))
        curve = []
        for b in budgets:
            values = [c[b] for c in self.curated.values()]
            low, high = prediction_interval(values, level)
            curve.append({"review_fraction": b, "balanced_accuracy": float(np.mean(values)), "interval": [low, high],
                          "per_group": {g: c[b] for g, c in self.curated.items()}})
        return curve


@dataclass(frozen=True)
class EstimatePlan:
    """Which groups each refit of the estimate leaves out.

    Attributes
    ----------
    by : str
        ``subject`` or ``recording``.
    folds : list of list of (group, mask)
        Per refit, the groups it leaves out and a boolean mask of their units in the table.
    groups : list of str
        Every group scored, in the table's order.
    """

    by: str
    folds: list[list[tuple[str, np.ndarray]]]
    groups: list[str]

    def training_positions(self, k: int) -> np.ndarray:
        """Positions of the units refit ``k`` is fitted on (every unit outside its groups)."""
        return np.flatnonzero(~np.logical_or.reduce([held for _, held in self.folds[k]]))


def plan_estimate(table: UnitTable, max_refits: int = 10, seed: int = 0) -> EstimatePlan | None:
    """Plan the refits: one per subject (or recording), each leaving it out; at most ``max_refits`` of them.

    Parameters
    ----------
    table : UnitTable
        Every labelled unit, held-out recordings included.
    max_refits : int
        With more usable groups than this, the groups are dealt (shuffled with ``seed``) into this many folds
        and each refit leaves a fold out; every group is still scored on its own.
    seed : int
        Shuffles the groups into folds.

    Returns
    -------
    EstimatePlan or None
        None when there are fewer than three subjects and three recordings, or fewer than two usable groups.
        Groups whose removal leaves a class without training units, or that hold a single class, are skipped
        (logged).
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
    return EstimatePlan(by, folds, [g for g, _ in usable]) if folds else None


def score_fold(model: Any, table: UnitTable, fold: list[tuple[str, np.ndarray]],
               budgets: Sequence[float] = REVIEW_BUDGETS) -> list[GroupScore]:
    """Scores of ``model`` on each of the fold's groups, each on its own: alone, and curated at each review budget.

    The units a curator reviews first are those the model is least sure of around its own decision
    (:func:`unitrefine.model.uncertainty.model_uncertainty`), as ``predict review=`` queues them.
    """
    from unitrefine.model.uncertainty import curated_scores, decision_threshold, model_uncertainty

    threshold = decision_threshold(model)
    scores = []
    for _, mask in fold:
        part = table.subset(np.flatnonzero(mask))
        proba = np.asarray(model.predict_proba(part.X))
        predicted = np.asarray(model.predict(part.X))
        curated = curated_scores(part.y, predicted, model_uncertainty(proba, threshold), budgets) if budgets else {}
        scores.append(GroupScore(balanced_accuracy(part.y, predicted), curated))
    return scores


def group_estimate(plan: EstimatePlan, scores: list[list[GroupScore]]) -> GroupEstimate | None:
    """The estimate from each refit's per-group ``scores`` (in the plan's fold order); None below two groups."""
    by_group = {g: sc for fold, fold_scores in zip(plan.folds, scores) for (g, _), sc in zip(fold, fold_scores)}
    ordered = {g: by_group[g] for g in plan.groups if g in by_group}
    if len(ordered) < 2:
        return None
    return GroupEstimate(plan.by, {g: float(sc.balanced_accuracy) for g, sc in ordered.items()}, len(plan.folds),
                         {g: sc.curated for g, sc in ordered.items() if sc.curated})


def leave_group_out(
    fit: Callable[[UnitTable], Any], table: UnitTable, n_jobs: int = 1, max_refits: int = 10, seed: int = 0
) -> GroupEstimate | None:
    """Refit with ``fit`` once per subject (or recording) on the others and score it on the one left out.

    Parameters
    ----------
    fit : callable
        Fits the model to export on a table (:meth:`unitrefine.model.final_model.FinalModel.fit`).
    table : UnitTable
        Every labelled unit, held-out recordings included.
    n_jobs : int
        Refits run side by side (threads; each fit uses one thread).
    max_refits, seed
        See :func:`plan_estimate`.

    Returns
    -------
    GroupEstimate or None
        See :func:`plan_estimate`.
    """
    plan = plan_estimate(table, max_refits, seed)
    if plan is None:
        return None

    def refit(k: int) -> list[GroupScore]:
        return score_fold(fit(table.subset(plan.training_positions(k))), table, plan.folds[k])

    return group_estimate(plan, parallel_map(refit, range(len(plan.folds)), n_jobs, "estimate refits"))


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
                "holdout_balanced_accuracy": held, "optimistic": False, "review_budget": groups.review_curve()}
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
    text = (f"Expected balanced accuracy on new recordings: {estimate['balanced_accuracy']:.3f} "
            f"({estimate['source']}: {per}; {spread}). The CV scores above are optimistic: each is the best of "
            "many trials.")
    curve = estimate.get("review_budget") or []
    if curve:
        text += (f"\nWith a person's review of the units the model is least sure of (predict review=; share of a new "
                 f"{estimate['by']}'s units -> expected balanced accuracy of the curated labels, "
                 f"{estimate['interval_level']:.0%} interval): " + ", ".join(
                     f"{c['review_fraction']:.0%} -> {c['balanced_accuracy']:.2f} ({c['interval'][0]:.2f}-"
                     f"{c['interval'][1]:.2f})" for c in curve) + ". The reviewed units carry the person's labels: "
                 "the score is of the curated recording, not of the model alone.")
    return text
