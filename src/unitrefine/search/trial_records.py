"""A worker's records of trials it did not see to the end: interrupted ones (retried), ones whose worker died
before logging them, and its own running trials when it stops."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import optuna

from unitrefine.search.budget import Budget, budget, is_duplicate, retry
from unitrefine.search.locks import Lock
from unitrefine.search.outcomes import outcome
from unitrefine.search.session import Session
from unitrefine.search.trial_attrs import ERROR_ATTR, WORKER_ATTR

log = logging.getLogger(__name__)

#: A trial's parameters as logged (from the parameters Optuna drew; some may be missing).
TrialParams = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def log_trial(
    session: Session, trial: optuna.trial.FrozenTrial, params: TrialParams, status: str | None = None,
    error: str | None = None,
) -> None:
    """Record ``trial`` in the session's trial log (``status``/``error``: see
    :meth:`unitrefine.search.outcomes.TrialLog.log_trial`)."""
    session.tracker.log_trial(outcome(session.study.study_name, trial), params(trial.params), status, error)


def settle(session: Session, max_retries: int, params: TrialParams) -> Budget:
    """Under the study lock: fail orphaned trials, queue retries of interrupted ones, count the budget.

    An interrupted trial without an MLflow run gets one, ``KILLED``, saying that it is run again.
    """
    study = session.study
    session.store.fail_orphaned(study)
    b = budget(study.get_trials(deepcopy=False), max_retries)
    if not b.to_retry:
        return b
    for t in b.to_retry:
        retry(study, t)
        log.warning("Trial %d was interrupted before it finished: it is run again.", t.number)
        if not session.tracker.has_trial_run(study.study_name, t.number):
            log_trial(session, t, params, status="KILLED",
                      error="its worker stopped before the trial finished; the trial was run again")
    return budget(study.get_trials(deepcopy=False), max_retries)


def log_orphans(session: Session, params: TrialParams) -> None:
    """Log to MLflow the finished trials whose worker died before it could (killed right after the trial).

    Only trials of workers that are gone: a live worker logs its own trials, so none is logged twice.
    """
    tracker, study = session.tracker, session.study
    if not tracker.enabled:
        return
    alive: dict[str | None, bool] = {}
    orphans = []
    for t in study.get_trials(deepcopy=False):
        worker = t.user_attrs.get(WORKER_ATTR)
        if worker not in alive:
            alive[worker] = session.store.is_alive(worker)
        if t.state.is_finished() and not alive[worker] and not is_duplicate(t):
            orphans.append(t)
    if not orphans:
        return
    logged = tracker.logged_trials(study.study_name)
    for t in orphans:
        if t.number not in logged:
            log.info("Trial %d finished but was not in MLflow (its worker stopped): logging it.", t.number)
            log_trial(session, t, params)


def fail_unnamed(study: optuna.Study, lock: Lock, wait_s: float = 5.0) -> list[int]:
    """Tell FAIL the running trials no worker has named yet; return their numbers.

    A worker asks for a trial and names itself on it under the study lock, so a trial seen unnamed by a worker
    holding that lock was left by a stop that struck in between (inside Optuna's ``ask``): this worker's. If the
    lock cannot be had within ``wait_s``, nothing is done here and the next run fails the trial as orphaned.
    """
    deadline = time.monotonic() + wait_s
    while not lock.acquire(blocking=False):
        if time.monotonic() > deadline:
            return []
        time.sleep(0.05)
    try:
        unnamed = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                   if WORKER_ATTR not in t.user_attrs]
        for number in unnamed:
            study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        return unnamed
    finally:
        lock.release()


def record_stopped(
    session: Session, running: Iterable[int], status: str, why: str, params: TrialParams, n_trials: int,
    max_retries: int,
) -> None:
    """Record this worker's ``running`` trials as stopped, report the best so far, end the parent run if last.

    Each running trial is told FAIL (so that it is retried when the study is resumed) and logged with ``status``
    (``KILLED`` or ``FAILED``) and ``why``. The parent run ends with ``status`` when no trial runs elsewhere.
    """
    study, tracker = session.study, session.tracker
    for number in running:
        study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        trial = study.get_trials(deepcopy=False)[number]
        if trial.state == optuna.trial.TrialState.FAIL and ERROR_ATTR not in trial.user_attrs \
                and not is_duplicate(trial):
            log_trial(session, trial, params, status=status,
                      error=f"{why}; the trial is run again when the study is resumed")
    trials = study.get_trials(deepcopy=False)
    b = budget(trials, max_retries)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number), default=None)
    best_text = "no trial completed" if best is None else (
        f"best so far: trial {best.number}, CV score {best.value:.4f} with {dict(params(best.params))}"
    )
    log.warning(
        "Search stopped: %d of %d trials of study '%s' finished; %s. Nothing was exported. Run the same "
        "command again to resume the study (%s).",
        b.counted, n_trials, study.study_name, best_text, session.store.label,
    )
    if b.running == 0:
        tracker.end_parent(status)
    tracker.flush()
