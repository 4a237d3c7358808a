"""The study-wide trial budget: which trials count toward ``search.n_trials``, retries, and duplicates.

Budget accounting. A trial *counts* toward ``search.n_trials`` when it is COMPLETE, PRUNED, or FAIL because
its configuration cannot be fitted (the objective records the reason in the :data:`ERROR_ATTR` attribute). A
trial that FAILed because its worker stopped (Ctrl-C, SIGKILL, a lost node) does not count: it is retried as a
new WAITING trial with the same parameters, linked by Optuna's retry attributes (``failed_trial``,
``retry_history``, as :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` writes them), up to
``search.max_retries`` times; after that it counts as failed.

Duplicates. A trial whose sampled configuration equals one the study already evaluated, or is evaluating, is
not fitted again (:meth:`unitrefine.search.objective.Objective.sample` marks it with :data:`DUPLICATE_ATTR`,
naming the earlier trial): it is told PRUNED at once, without a value, and does not count toward
``search.n_trials``, so the budget is the number of distinct configurations evaluated. Told PRUNED without a fold
score, it counts for the TPE sampler as a poor result at that point, as a running trial does with
``constant_liar``, which steers the sampler away from proposing it again. When the last
:data:`MAX_DUPLICATES_IN_A_ROW` trials were all duplicates the search space is taken as exhausted and the search
ends before its budget (:attr:`Budget.exhausted`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from unitrefine.search.trial_attrs import DUPLICATE_ATTR, ERROR_ATTR, WARM_START_ATTR

TrialState = optuna.trial.TrialState
#: After this many duplicates in a row (in trial-number order) the search space is taken as exhausted.
MAX_DUPLICATES_IN_A_ROW = 10


def is_duplicate(t: optuna.trial.FrozenTrial) -> bool:
    """Whether ``t`` repeated the configuration of an earlier trial and was not fitted (:data:`DUPLICATE_ATTR`)."""
    return DUPLICATE_ATTR in t.user_attrs


def first_evaluation(study: optuna.Study, number: int, params: Mapping[str, Any]) -> int | None:
    """The first other trial of ``study`` that evaluated, or is evaluating, the configuration ``params``.

    Trials of any state count (an interrupted one is retried with these parameters) except queued ones,
    duplicates and the earlier attempts that trial ``number`` retries. Call it where the trial's parameters are
    drawn, in the order trials are asked (under the study lock), so that what it finds does not depend on timing.

    Parameters
    ----------
    study : optuna.Study
    number : int
        The trial whose parameters were just drawn.
    params : mapping
        Its parameters.

    Returns
    -------
    int or None
        The earlier trial's number; None when the configuration is new (or ``params`` is empty).
    """
    if not params:
        return None
    trials = study.get_trials(deepcopy=False)
    own = next((t for t in trials if t.number == number), None)
    skip = {number, *(retry_history(own) if own is not None else [])}
    same = [t for t in trials if t.number not in skip and t.state != TrialState.WAITING and not is_duplicate(t)
            and t.params == params]
    # An interrupted attempt names the configuration only when no retry of it has a result (or runs).
    interrupted = {t.number for t in same if t.state == TrialState.FAIL and not _is_config_failure(t)}
    first = min(same, key=lambda t: (t.number in interrupted, t.number), default=None)
    return None if first is None else first.number


def _is_config_failure(t: optuna.trial.FrozenTrial) -> bool:
    return t.state == TrialState.FAIL and ERROR_ATTR in t.user_attrs


def retry_history(t: optuna.trial.FrozenTrial) -> list[int]:
    """The numbers of the earlier attempts ``t`` retries (Optuna's ``retry_history`` attribute)."""
    return list(t.system_attrs.get("retry_history", []))


@dataclass(frozen=True)
class Budget:
    """Where a study stands against its trial budget.

    Attributes
    ----------
    counted : int
        Trials that count toward ``n_trials`` (complete, pruned, failed by their configuration, or
        interrupted more than ``max_retries`` times).
    running : int
        Trials running now (in any worker).
    waiting : int
        Queued trials (defaults, retries).
    to_retry : tuple of FrozenTrial
        Interrupted trials not retried yet.
    interrupted : int
        Interrupted trials already retried (they do not count).
    n_complete : int
        Completed trials.
    duplicates : int
        Trials not fitted because they repeated an earlier trial's configuration (they do not count).
    duplicates_in_a_row : int
        How many of the last trials, in trial-number order (queued ones aside), are duplicates.
    """

    counted: int
    running: int
    waiting: int
    to_retry: tuple[optuna.trial.FrozenTrial, ...]
    interrupted: int
    n_complete: int
    duplicates: int = 0
    duplicates_in_a_row: int = 0

    @property
    def exhausted(self) -> bool:
        """Whether the sampler proposed only configurations evaluated already, :data:`MAX_DUPLICATES_IN_A_ROW`
        times in a row: the search space looks exhausted and the search ends."""
        return self.duplicates_in_a_row >= MAX_DUPLICATES_IN_A_ROW


def budget(trials: Sequence[optuna.trial.FrozenTrial], max_retries: int) -> Budget:
    """Count ``trials`` against the budget (see the module docstring)."""
    retried = {h[-1] for t in trials if (h := retry_history(t))}
    counted = running = waiting = interrupted = duplicates = in_a_row = 0
    to_retry = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state != TrialState.WAITING:
            in_a_row = in_a_row + 1 if is_duplicate(t) else 0
        if is_duplicate(t):
            duplicates += 1
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED) or _is_config_failure(t):
            counted += 1
        elif t.state == TrialState.RUNNING:
            running += 1
        elif t.state == TrialState.WAITING:
            waiting += 1
        elif t.state == TrialState.FAIL:
            if t.number in retried:
                interrupted += 1
            elif len(retry_history(t)) >= max_retries:
                counted += 1
            else:
                to_retry.append(t)
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    return Budget(counted, running, waiting, tuple(to_retry), interrupted, n_complete, duplicates, in_a_row)


def trial_counts(trials: Sequence[optuna.trial.FrozenTrial], max_retries: int) -> dict[str, int]:
    """``complete``, ``pruned``, ``fail`` (counted failures), ``interrupted`` (retried) and ``duplicate`` (not
    fitted: the configuration of an earlier trial) trials."""
    b = budget(trials, max_retries)
    complete = b.n_complete
    pruned = sum(t.state == TrialState.PRUNED and not is_duplicate(t) for t in trials)
    return {"complete": complete, "pruned": pruned, "fail": b.counted - complete - pruned, "interrupted": b.interrupted,
            "duplicate": b.duplicates}


def study_budget(study: optuna.Study, max_retries: int) -> Budget:
    """:func:`budget` of every trial of ``study``."""
    return budget(study.get_trials(deepcopy=False), max_retries)


def study_counts(study: optuna.Study, max_retries: int) -> dict[str, int]:
    """:func:`trial_counts` of every trial of ``study``."""
    return trial_counts(study.get_trials(deepcopy=False), max_retries)


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue ``trial``'s parameters again as a WAITING trial, recording it as a retry of ``trial``.

    The same system attributes as :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (so its
    ``retried_trial_number``/``retry_history`` read them). Of the interrupted attempt's user attributes only
    where its configuration came from is kept (:data:`WARM_START_ATTR`); its partial fold scores must not leak
    into the retry.
    """
    history = [*retry_history(trial), trial.number]
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={k: v for k, v in trial.user_attrs.items() if k == WARM_START_ATTR},
            system_attrs={"failed_trial": history[0], "retry_history": history},
        )
    )
