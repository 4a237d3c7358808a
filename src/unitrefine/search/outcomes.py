"""The search as the layers above it see it: trials as plain records, and the trial log they are written to.

Optuna stays in :mod:`unitrefine.search`: the final model, the export, MLflow tracking and the stages of a run
read a study's trials as :class:`TrialOutcome` records, and the search writes each finished trial to a
:class:`TrialLog` (MLflow's :class:`unitrefine.tracking.tracker.Tracker` is one) without knowing what it is.
A study itself leaves the search only as an opaque handle (:data:`Study`), for Optuna's plots
(:mod:`unitrefine.search.study_plots`) and for users of the Python API.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna

#: An Optuna study, as held (never queried) outside :mod:`unitrefine.search`.
Study = optuna.Study


@dataclass(frozen=True)
class TrialOutcome:
    """One trial of a study, as plain values.

    Attributes
    ----------
    study : str
        The study's name.
    number : int
        The trial's number in the study.
    state : str
        Optuna's state in lower case: ``complete``, ``pruned``, ``fail``, ``running`` or ``waiting``.
    value : float or None
        The CV score of a completed trial.
    params : dict
        The parameters Optuna drew (names as in :meth:`unitrefine.search.search_space.SearchSpace.partial_spec`).
    user_attrs : dict
        What the search recorded of it (:mod:`unitrefine.search.trial_attrs`).
    started, completed : datetime or None
        When it started and finished.
    """

    study: str
    number: int
    state: str
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    started: dt.datetime | None = None
    completed: dt.datetime | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (None until it finished)."""
        if self.started is None or self.completed is None:
            return None
        return (self.completed - self.started).total_seconds()


def outcome(study_name: str, trial: optuna.trial.FrozenTrial) -> TrialOutcome:
    """``trial`` of the study ``study_name`` as a :class:`TrialOutcome`."""
    return TrialOutcome(
        study=study_name, number=trial.number, state=trial.state.name.lower(), value=trial.value,
        params=dict(trial.params), user_attrs=dict(trial.user_attrs), started=trial.datetime_start,
        completed=trial.datetime_complete,
    )


def outcomes(study: Study) -> tuple[TrialOutcome, ...]:
    """Every trial of ``study``, by number."""
    return tuple(outcome(study.study_name, t) for t in study.get_trials(deepcopy=False))


def ranked(trials: Sequence[TrialOutcome]) -> list[TrialOutcome]:
    """The completed ``trials``, best first; equal scores by trial number (the first is Optuna's best trial)."""
    complete = [t for t in trials if t.state == "complete" and t.value is not None]
    return sorted(complete, key=lambda t: (-(t.value or 0.0), t.number))


class TrialLog(Protocol):
    """Where the search records its parent run and each finished trial (MLflow, or nothing)."""

    #: False when nothing is recorded (tracking off): the search then skips work only done for the log.
    enabled: bool

    def create_parent(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        """Start the study's parent run; return its id."""

    def attach(self, run_id: str) -> bool:
        """Attach to the parent run ``run_id``; False if it is gone."""

    def set_running(self) -> None:
        """Mark the parent run running again."""

    def end_parent(self, status: str) -> None:
        """End the parent run with ``status`` (``FINISHED``, ``KILLED`` or ``FAILED``)."""

    def logged_trials(self, study_name: str) -> set[int]:
        """The numbers of the study's trials that have a run."""

    def has_trial_run(self, study_name: str, number: int) -> bool:
        """Whether trial ``number`` of the study has a run."""

    def log_trial(
        self, trial: TrialOutcome, params: Mapping[str, Any], status: str | None = None, error: str | None = None,
    ) -> None:
        """Record a finished trial with its parameters as logged (``status``/``error`` override its state)."""

    def flush(self) -> None:
        """Wait until every trial is recorded."""
