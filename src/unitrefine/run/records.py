"""What the stages of a training run (:mod:`unitrefine.run.stages`) hand each other: plain frozen records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sklearn.pipeline import Pipeline

from unitrefine.data.dataset import UnitTable
from unitrefine.model.estimate import EstimatePlan, GroupScore
from unitrefine.search.election import Finalizer
from unitrefine.search.evaluation import Plan
from unitrefine.search.objective import Objective
from unitrefine.search.outcomes import Study, TrialOutcome, ranked
from unitrefine.search.search_space import SearchSpace
from unitrefine.search.session import Session
from unitrefine.search.study import stopped_by_timeout
from unitrefine.tracking.tracker import NullTracker, Tracker


@dataclass(frozen=True)
class Data:
    """The labelled units and where each goes: searched (``train``) or held out (``held``)."""

    table: UnitTable
    plan: Plan
    train: UnitTable
    held: UnitTable


@dataclass(frozen=True)
class RunRecord:
    """How the run describes itself to MLflow and in the model folder."""

    name: str
    tags: dict[str, str]
    config: dict[str, Any]
    versions: dict[str, str]


@dataclass(frozen=True)
class Searched:
    """A finished study and what its trials were scored with.

    Attributes
    ----------
    study : Study
        The Optuna study (for its plots, and for users of the Python API).
    trials : tuple of TrialOutcome
        Its trials, by number.
    space : SearchSpace
    objective : Objective
    counts : dict
        Trials by state, as counted against the budget (:func:`unitrefine.search.budget.trial_counts`).
    """

    study: Study
    trials: tuple[TrialOutcome, ...]
    space: SearchSpace
    objective: Objective
    counts: dict[str, int]

    @property
    def ranked(self) -> list[TrialOutcome]:
        """The completed trials, best first."""
        return ranked(self.trials)

    @property
    def best(self) -> TrialOutcome:
        """The best completed trial (the search stage ensures there is one)."""
        return self.ranked[0]

    @property
    def stopped_by_timeout(self) -> bool:
        """Whether the time cap ended the search: then the model depends on the machine's speed and load."""
        return stopped_by_timeout(self.study)


@dataclass(frozen=True)
class Exporter:
    """The worker that exports, after the search: its session (study, MLflow tracker) and the export lock."""

    session: Session
    finalizer: Finalizer
    searched: Searched

    @property
    def tracker(self) -> Tracker | NullTracker:
        """The study's MLflow tracker."""
        tracker = self.session.tracker
        assert isinstance(tracker, Tracker | NullTracker), "made by unitrefine.run.stages"
        return tracker


@dataclass(frozen=True)
class Refits:
    """The final model fitted on every training set the run needs.

    Attributes
    ----------
    on_train : Pipeline or None
        Fitted on the search's recordings (None when no recording is held out).
    exported : Pipeline
        The model to export, fitted on ``fitted_on``.
    fitted_on : UnitTable
    estimate_plan : EstimatePlan or None
        The estimate's refits (None: no estimate).
    estimate_scores : list of list of GroupScore
        Per refit of ``estimate_plan``, its scores on each group it left out (alone, and after reviews).
    """

    on_train: Pipeline | None
    exported: Pipeline
    fitted_on: UnitTable
    estimate_plan: EstimatePlan | None
    estimate_scores: list[list[GroupScore]]
