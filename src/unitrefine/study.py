"""The Optuna study: seeded TPE, a pruner, an identity checked on resume, and the study-wide trial budget.

Budget accounting. A trial *counts* toward ``search.n_trials`` when it is COMPLETE, PRUNED, or FAIL because
its configuration cannot be fitted (the objective records the reason in the ``error`` attribute). A trial
that FAILed because its worker stopped (Ctrl-C, SIGKILL, a lost node) does not count: it is retried as a
new WAITING trial with the same parameters, linked by Optuna's retry attributes (``failed_trial``,
``retry_history``, as :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` writes them), up to
``search.max_retries`` times; after that it counts as failed.

Pruning trials run side by side. A pruner judges a trial by the other trials' results, and which of them have
finished when a trial reaches a fold depends on timing. The pruners here (:class:`WindowedPruner`) judge a trial
only by the trials its worker had finished and told before the trial started (its *cutoff*), so that a worker
with ``search.n_jobs`` threads prunes the same trials on a busy or an idle machine (see :mod:`unitrefine.workers`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from unitrefine.config import SearchConfig
from unitrefine.errors import UnitRefineError

#: User attribute of a trial queued from a previous model's configurations (``search.warm_start``): its source.
WARM_START_ATTR = "unitrefine.warm_start"

log = logging.getLogger(__name__)

TrialState = optuna.trial.TrialState
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: Study user attributes that must match for a study to be resumed, and how to name them.
IDENTITY = {
    "unitrefine.search_space": "search space",
    "unitrefine.data": "data (searched units, features, labels)",
    "unitrefine.cv": "CV folds or scoring",
    "unitrefine.seed": "seed",
}
EXPORTED_ATTR = "unitrefine.exported"
RUN_ATTR = "unitrefine.mlflow_run_id"
#: Study user attribute: True when the time cap (``search.timeout_s``) ended the search before its trial budget.
TIMEOUT_ATTR = "unitrefine.stopped_by_timeout"


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
        "unitrefine.search_space": _digest(search_space),
        "unitrefine.data": data_fingerprint,
        "unitrefine.cv": _digest({"folds": fold_sets, **cv}),
        "unitrefine.seed": str(seed),
    }


def study_name(storage: optuna.storages.BaseStorage, experiment: str, resume: bool) -> str:
    """The study to use for ``experiment``: the latest one (``resume``) or a new one.

    Studies of an experiment are named ``<experiment>``, then ``<experiment>#2``, ``<experiment>#3``...
    """
    pattern = re.compile(re.escape(experiment) + r"(?:#(\d+))?")
    taken = sorted(
        int(m.group(1) or 1) for name in optuna.get_all_study_names(storage) if (m := pattern.fullmatch(name))
    )
    if not taken:
        return experiment
    k = taken[-1] if resume else taken[-1] + 1
    return experiment if k == 1 else f"{experiment}#{k}"


def check_identity(study: optuna.Study, identity: Mapping[str, str], storage_label: str) -> bool:
    """Record ``identity`` on a new study, or check that a resumed study has the same one.

    Returns
    -------
    bool
        True if the study was new (nothing recorded yet).

    Raises
    ------
    UnitRefineError
        If the study was started with another search space, data, CV setup or seed.
    """
    recorded = {k: v for k, v in study.user_attrs.items() if k in IDENTITY}
    if not recorded:
        for key, value in identity.items():
            study.set_user_attr(key, value)
        return True
    differ = [label for key, label in IDENTITY.items() if recorded.get(key) != identity.get(key)]
    if differ:
        raise UnitRefineError(
            f"Cannot resume study '{study.study_name}' ({storage_label}): its {', '.join(differ)} differ from "
            "this run's, so its trials cannot be compared with new ones. Re-run with search.resume=false to "
            "start a fresh study (kept beside it under a new name), choose another experiment_name, or restore "
            "the original configuration to resume it."
        )
    return False


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
    """

    counted: int
    running: int
    waiting: int
    to_retry: tuple[optuna.trial.FrozenTrial, ...]
    interrupted: int
    n_complete: int


def budget(trials: Sequence[optuna.trial.FrozenTrial], max_retries: int) -> Budget:
    """Count ``trials`` against the budget (see the module docstring)."""
    retried = {h[-1] for t in trials if (h := retry_history(t))}
    counted = running = waiting = interrupted = 0
    to_retry = []
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or _is_config_failure(t):
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
    return Budget(counted, running, waiting, tuple(to_retry), interrupted, n_complete)


def trial_counts(trials: Sequence[optuna.trial.FrozenTrial], max_retries: int) -> dict[str, int]:
    """``complete``, ``pruned``, ``fail`` (counted failures) and ``interrupted`` (retried) trials."""
    b = budget(trials, max_retries)
    complete = b.n_complete
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    return {"complete": complete, "pruned": pruned, "fail": b.counted - complete - pruned, "interrupted": b.interrupted}


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
