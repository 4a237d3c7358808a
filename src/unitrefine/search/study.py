"""The Optuna study: seeded TPE, a pruner, its identity, duplicates, and the study-wide trial budget.

Which study a run continues, or starts beside the others, is in :mod:`unitrefine.search.resume`.

Budget accounting. A trial *counts* toward ``search.n_trials`` when it is COMPLETE, PRUNED, or FAIL because
its configuration cannot be fitted (the objective records the reason in the ``error`` attribute). A trial
that FAILed because its worker stopped (Ctrl-C, SIGKILL, a lost node) does not count: it is retried as a
new WAITING trial with the same parameters, linked by Optuna's retry attributes (``failed_trial``,
``retry_history``, as :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` writes them), up to
``search.max_retries`` times; after that it counts as failed.

Duplicates. A trial whose sampled configuration equals one the study already evaluated, or is evaluating, is
not fitted again (:meth:`unitrefine.search.objective.Objective.sample` marks it with :data:`DUPLICATE_ATTR`, naming the
earlier trial): it is told PRUNED at once, without a value, and does not count toward ``search.n_trials``, so
the budget is the number of distinct configurations evaluated. Told PRUNED without a fold score, it counts for
the TPE sampler as a poor result at that point, as a running trial does with ``constant_liar``, which steers
the sampler away from proposing it again. When the last :data:`MAX_DUPLICATES_IN_A_ROW` trials were all
duplicates the search space is taken as exhausted and the search ends before its budget
(:attr:`Budget.exhausted`).

Pruning trials run side by side. A pruner judges a trial by the other trials' results, and which of them have
finished when a trial reaches a fold depends on timing. The pruners here (:class:`WindowedPruner`) judge a trial
only by the trials its worker had finished and told before the trial started (its *cutoff*), so that a worker
with ``search.n_jobs`` threads prunes the same trials on a busy or an idle machine (see :mod:`unitrefine.run.workers`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from unitrefine.config import SearchConfig

#: User attribute of a trial queued from a previous model's configurations (``search.warm_start``): its source.
WARM_START_ATTR = "unitrefine.run.warm_start"

log = logging.getLogger(__name__)

TrialState = optuna.trial.TrialState
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: Study user attributes that must match for a study to be resumed, and how to name them.
IDENTITY = {
    "unitrefine.search.search_space": "search space",
    "unitrefine.data.dataset": "data (searched units, features, labels)",
    "unitrefine.cv": "cross-validation (folds or scoring)",
    "unitrefine.seed": "seed",
}
EXPORTED_ATTR = "unitrefine.exported"
RUN_ATTR = "unitrefine.mlflow_run_id"
#: Study user attribute: True when the time cap (``search.timeout_s``) ended the search before its trial budget.
TIMEOUT_ATTR = "unitrefine.stopped_by_timeout"
#: Trial user attribute of a duplicate: the number of the trial that evaluated (or evaluates) its configuration.
DUPLICATE_ATTR = "duplicate_of"
#: After this many duplicates in a row (in trial-number order) the search space is taken as exhausted.
MAX_DUPLICATES_IN_A_ROW = 10


def stopped_by_timeout(study: optuna.Study) -> bool:
    """Whether the time cap (``search.timeout_s``) stopped the study's search before its trial budget was used.

    Then how many trials ran, and so the exported model, depend on the machine's speed and load: the result
    is not reproducible. Recorded by each worker when its search ends (False once a later run uses up the
    budget); False for a study that never recorded it.
    """
    return bool(study.user_attrs.get(TIMEOUT_ATTR, False))


def record_stopped_by_timeout(study: optuna.Study, stopped: bool) -> None:
    """Record in ``study`` whether the time cap ended its search (see :func:`stopped_by_timeout`)."""
    if stopped_by_timeout(study) != stopped:
        study.set_user_attr(TIMEOUT_ATTR, stopped)


class _TrialsBefore:
    """A study's storage as a pruner reads it: only the trials numbered below ``cutoff`` exist; writes pass through."""

    def __init__(self, storage: optuna.storages.BaseStorage, cutoff: int) -> None:
        self._storage = storage
        self._cutoff = cutoff

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[optuna.trial.FrozenTrial]:
        trials = self._storage.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        return [t for t in trials if t.number < self._cutoff]

    def get_best_trial(self, study_id: int) -> optuna.trial.FrozenTrial:
        # Optuna's own rule over the visible trials (storages override it with a lookup over all trials).
        return optuna.storages.BaseStorage.get_best_trial(self, study_id)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


class WindowedPruner(optuna.pruners.BasePruner):
    """Mixin: a pruner that judges a trial only by the trials numbered below the trial's *cutoff*.

    The worker gives each trial its cutoff when it starts it (:meth:`start`): every trial below it is
    finished and told by then, and which trials those are does not depend on timing. A trial without a cutoff
    is judged by the whole study, as Optuna's pruner would. The pruner sees a view of the study, as Optuna's
    Hyperband pruner gives each of its brackets (and the pruner stays an instance of its Optuna class, which
    Optuna's samplers look at).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._views: dict[int, optuna.Study] = {}

    def start(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, cutoff: int) -> None:
        """Judge ``trial`` (just asked, nothing reported yet) by the trials numbered below ``cutoff`` from now on.

        Call it in the order trials are asked: a pruner with state that it sets up lazily from the trials it
        sees (Hyperband's brackets) sets it up here, in that order, rather than whenever a fold ends.
        """
        # A study on a filtered view of the same storage, as Optuna's Hyperband builds its bracket studies.
        visible = _TrialsBefore(study._storage, cutoff)
        self._views[trial.number] = optuna.Study(
            study.study_name, visible, sampler=study.sampler, pruner=self  # type: ignore[arg-type]
        )
        super().prune(self._views[trial.number], trial)

    def finish(self, number: int) -> None:
        """Forget trial ``number``'s cutoff (it is told)."""
        self._views.pop(number, None)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """The wrapped pruner's decision, over the trials below ``trial``'s cutoff if it has one."""
        view = self._views.get(trial.number)
        return super().prune(study if view is None else view, trial)


class WindowedMedianPruner(WindowedPruner, optuna.pruners.MedianPruner):
    """:class:`optuna.pruners.MedianPruner` over the trials below each trial's cutoff."""


class WindowedWilcoxonPruner(WindowedPruner, optuna.pruners.WilcoxonPruner):
    """:class:`optuna.pruners.WilcoxonPruner` over the trials below each trial's cutoff."""


class WindowedHyperbandPruner(WindowedPruner, optuna.pruners.HyperbandPruner):
    """:class:`optuna.pruners.HyperbandPruner` over the trials below each trial's cutoff.

    Hyperband sets up its brackets from the first completed trial it sees, and from then on judges trials by
    successive halving, which also marks each trial with the rungs it reached. A trial started before the
    brackets were set up is never pruned (as in a sequential study, where nothing else completes while it
    runs), so whether it is pruned or marked does not depend on when another trial set them up.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unready: set[int] = set()

    def start(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, cutoff: int) -> None:
        super().start(study, trial, cutoff)
        if not self._pruners:  # Optuna's brackets: set up by the call above once a completed trial is visible
            self._unready.add(trial.number)

    def finish(self, number: int) -> None:
        super().finish(number)
        self._unready.discard(number)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number not in self._unready and super().prune(study, trial)


def make_pruner(search: SearchConfig) -> optuna.pruners.BasePruner:
    """The configured pruner (see :class:`WindowedPruner`); folds are its steps."""
    if search.pruner == "median":
        return WindowedMedianPruner(n_startup_trials=search.n_startup_trials, n_warmup_steps=1)
    if search.pruner == "hyperband":
        return WindowedHyperbandPruner(min_resource=1)
    if search.pruner == "wilcoxon":
        return WindowedWilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    return optuna.pruners.NopPruner()


def create_study(
    name: str, search: SearchConfig, seed: int, storage: optuna.storages.BaseStorage | None = None
) -> optuna.Study:
    """A maximising study with a seeded multivariate TPE sampler, loaded if ``storage`` already holds it.

    Parameters
    ----------
    name : str
        Study name.
    search : SearchConfig
        Pruner and start-up settings.
    seed : int
        Sampler seed: the same seed gives the same sequential trial sequence.
    storage : optuna.storages.BaseStorage, optional
        Where the study lives (None: a new in-memory storage).
    """
    with warnings.catch_warnings():
        # `group` (conditional spaces sampled jointly) is still flagged experimental; we rely on it knowingly.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=search.n_startup_trials
        )
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=make_pruner(search),
        direction="maximize",
        load_if_exists=True,
    )


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def study_identity(
    search_space: Mapping[str, Any],
    data_fingerprint: str,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    cv: Mapping[str, Any],
    seed: int,
) -> dict[str, str]:
    """What a study's trials depend on; a resumed study must match it (see :data:`IDENTITY`).

    Parameters
    ----------
    search_space : mapping
        The search-space config.
    data_fingerprint : str
        Fingerprint of the units the search cross-validates (held-out recordings excluded).
    folds : sequence of (train, validation) arrays
        The CV folds.
    cv : mapping
        Settings that change scores without changing the folds (e.g. ``scoring``).
    seed : int
        The sampler and estimator seed.
    """
    fold_sets = [sorted(int(i) for i in valid) for _, valid in folds]
    return {
        "unitrefine.search.search_space": _digest(search_space),
        "unitrefine.data.dataset": data_fingerprint,
        "unitrefine.cv": _digest({"folds": fold_sets, **cv}),
        "unitrefine.seed": str(seed),
    }


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
    return t.state == TrialState.FAIL and "error" in t.user_attrs


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
