"""Pruners for trials run side by side: each judges a trial only by the trials finished before it started.

A pruner judges a trial by the other trials' results, and which of them have finished when a trial reaches a fold
depends on timing. The pruners here (:class:`WindowedPruner`) judge a trial only by the trials its worker had
finished and told before the trial started (its *cutoff*), so that a worker with ``search.n_jobs`` threads prunes
the same trials on a busy or an idle machine (see :mod:`unitrefine.search.workers`).
"""

from __future__ import annotations

import warnings
from collections.abc import Container
from typing import Any

import optuna

from unitrefine.config import SearchConfig

TrialState = optuna.trial.TrialState


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
        with warnings.catch_warnings():  # chosen knowingly (search.pruner=wilcoxon): not a warning for the user
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return WindowedWilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    return optuna.pruners.NopPruner()
