"""Join a study: open its storage, create or resume it (identity checked) and its shared parent run (its TrialLog)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from unitrefine.config import SearchConfig
from unitrefine.search.budget import budget
from unitrefine.search.outcomes import TrialLog
from unitrefine.search.resume import check_identity, choose_study
from unitrefine.search.storage import StudyStorage, open_storage
from unitrefine.search.study import EXPORTED_ATTR, RUN_ATTR, create_study
from unitrefine.search.trial_attrs import WARM_START_ATTR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueuedTrial:
    """Optuna parameters to enqueue, and the user attributes the trial starts with."""

    params: dict[str, Any]
    user_attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Session:
    """A worker's handle on its study.

    Attributes
    ----------
    study : optuna.Study
    store : StudyStorage
    tracker : TrialLog
        Attached to the study's parent run (MLflow's :class:`unitrefine.tracking.tracker.Tracker`, or a log
        that records nothing).
    run_id : str
        The parent run ("" when tracking is off).
    experiment : str
        The experiment (the study lock is per experiment).
    """

    study: optuna.Study
    store: StudyStorage
    tracker: TrialLog
    run_id: str
    experiment: str


@dataclass(frozen=True)
class StudyPlace:
    """What joining a study needs of the configuration.

    Attributes
    ----------
    search : SearchConfig
        ``search.resume``, the budget (``n_trials``, ``max_retries``), the pruner and sampler settings, the
        heartbeat of database storages, ``warm_start`` (recorded on a new parent run).
    experiment : str
        ``experiment_name``: the study lock, and the name of its studies.
    seed : int
        The sampler's seed.
    storage : str
        The study storage to open: ``search.storage``, or its default
        (:func:`unitrefine.search.storage.default_storage`).
    resolve : callable
        Resolves a relative storage path against the project root.
    """

    search: SearchConfig
    experiment: str
    seed: int
    storage: str
    resolve: Callable[[str], Path]


def join_study(
    place: StudyPlace,
    identity: Mapping[str, str],
    queued: Sequence[QueuedTrial],
    make_tracker: Callable[[], TrialLog],
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
) -> Session:
    """Open the storage, then create or resume the experiment's study and its MLflow parent run.

    Everything happens under the study lock, so concurrent workers on a fresh storage neither race on
    creating the schema, the study, the MLflow store or the parent run, nor see a half-made study.

    Parameters
    ----------
    place : StudyPlace
        Where the study lives, and how it is searched.
    identity : mapping
        :func:`unitrefine.search.study.study_identity` of this configuration: the experiment's study started with it is
        continued, or a fresh one started beside the others (:func:`unitrefine.search.resume.choose_study`).
    queued : sequence of QueuedTrial
        Trials queued first in a new study, in order (``search.warm_start``, then ``search.enqueue_defaults``:
        :func:`unitrefine.run.warm_start.queued_trials`); at most ``search.n_trials`` of them.
    make_tracker : callable
        Creates the trial log (called under the lock: it may create the MLflow store).
    run_name, tags, params
        Name, tags and parameters of a new parent run.

    Raises
    ------
    UnitRefineError
        If the storage cannot be opened, or (``search.resume=strict``) no study of the experiment was started with
        this configuration.
    """
    search = place.search
    store = open_storage(search, place.storage, place.resolve)
    try:
        with store.study_lock(place.experiment):
            # Retraining with new labels from a previous model (search.warm_start) is a study of other data: a
            # fresh study beside the one it learns from.
            name = choose_study(store.storage, place.experiment, identity, search.resume, store.label)
            study = create_study(name, search, place.seed, store.storage)
            _start_or_resume(study, store, identity, queued, search)
            tracker = make_tracker()
            run_id = _parent_run(study, tracker, search.n_trials, search.max_retries, run_name,
                                 {**tags, "unitrefine.search.study": name, "unitrefine.study_storage": store.label,
                                  **({WARM_START_ATTR: search.warm_start} if search.warm_start else {})},
                                 params)
    except BaseException:
        store.close()
        raise
    return Session(study, store, tracker, run_id, place.experiment)


def _start_or_resume(
    study: optuna.Study, store: StudyStorage, identity: Mapping[str, str], queued: Sequence[QueuedTrial],
    search: SearchConfig,
) -> None:
    """A new study gets its identity and its ``queued`` trials; a resumed one a fresh random stream."""
    if check_identity(study, identity, store.label):
        for q in list(queued)[: search.n_trials] if not study.get_trials(deepcopy=False) else []:
            study.enqueue_trial(dict(q.params), user_attrs=dict(q.user_attrs) or None)
        log.info("Study '%s' created in %s.", study.study_name, store.label)
        return
    # Every worker seeds its sampler with the same seed: those joining an existing study (other
    # workers, resumed runs) would replay the creator's random draws and run trials twice.
    study.sampler.reseed_rng()
    if search.warm_start:
        log.info("search.warm_start applies to new studies only: resuming '%s' as it is.", study.study_name)
    b = budget(study.get_trials(deepcopy=False), search.max_retries)
    log.info(
        "Resuming study '%s' in %s: %d of %d trials finished, %d running elsewhere.",
        study.study_name, store.label, b.counted, search.n_trials, b.running,
    )


def _parent_run(
    study: optuna.Study,
    tracker: TrialLog,
    n_trials: int,
    max_retries: int,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
) -> str:
    """The study's shared MLflow parent run: the recorded one, or a new one (first worker, or more trials
    after an export, whose results then go to a run of their own)."""
    if not tracker.enabled:
        return ""
    run_id = study.user_attrs.get(RUN_ATTR)
    exported = study.user_attrs.get(EXPORTED_ATTR) or {}
    b = budget(study.get_trials(deepcopy=False), max_retries)
    extending = exported.get("run_id") == run_id and b.counted < n_trials and not b.exhausted
    if run_id and not extending and tracker.attach(run_id):
        return str(run_id)
    tags = {**tags, **({"unitrefine.previous_run": str(run_id)} if run_id else {})}
    run_id = tracker.create_parent(run_name, tags, params)
    study.set_user_attr(RUN_ATTR, run_id)
    return run_id
