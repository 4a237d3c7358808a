"""The one worker that exports: elected with the finalize lock once no trial runs, and the export it records."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

import optuna

from unitrefine.search.budget import Budget
from unitrefine.search.locks import Lock
from unitrefine.search.session import Session
from unitrefine.search.study import EXPORTED_ATTR

log = logging.getLogger(__name__)


class Finalizer:
    """Held by the one worker that refits, exports and registers; records the export in the study on success.

    Use as a context manager around the export; call :meth:`exported` with what was produced.
    """

    def __init__(self, lock: Lock, study: optuna.Study, n_finished: int, run_id: str) -> None:
        self.lock = lock
        self.study = study
        self.n_finished = n_finished
        self.run_id = run_id
        self._record: dict[str, Any] = {}

    def exported(self, folder: Any, model_version: str | None) -> None:
        """Note the model folder and registered version, to be recorded in the study."""
        self._record = {"model_folder": str(folder), "model_version": model_version}

    def __enter__(self) -> Finalizer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.study.set_user_attr(
                    EXPORTED_ATTR, {"n_finished": self.n_finished, "run_id": self.run_id, **self._record}
                )
        finally:
            self.lock.release()


def elect(session: Session, study_lock: Lock, settle: Callable[[], Budget]) -> Finalizer | None:
    """Take part in the election of the exporter, once this worker has nothing left to run.

    The worker that gets the study's finalize lock (without waiting) settles the study under ``study_lock``
    (``settle``: orphaned trials failed and retried, unlogged trials logged; the budget counted). It exports if
    no trial runs elsewhere and the study's trials were not exported already by this parent run.

    Returns
    -------
    Finalizer or None
        Held by the exporter (it releases the finalize lock); None for every other worker.
    """
    study = session.study
    final = session.store.finalize_lock(study.study_name)
    if not final.acquire(blocking=False):
        log.info("Another worker is exporting study '%s'; this worker is done.", study.study_name)
        return None
    try:
        with study_lock:
            b = settle()
        if _nothing_to_export(study, b, session.run_id):
            final.release()
            return None
    except BaseException:
        final.release()
        raise
    log.info("Study '%s': %d trials finished; this worker exports the model.", study.study_name, b.counted)
    return Finalizer(final, study, b.counted, session.run_id)


def _nothing_to_export(study: optuna.Study, b: Budget, run_id: str) -> bool:
    """Whether another worker still runs trials (the last to finish exports), or this parent run exported the
    study's trials already; either is logged."""
    if b.running:
        log.info("This worker is done; %d trials still run in other workers, and the last to finish exports.",
                 b.running)
        return True
    exported = study.user_attrs.get(EXPORTED_ATTR) or {}
    if exported.get("n_finished") != b.counted or exported.get("run_id") != run_id:
        return False
    further = ("Widen search_space to search further (the sampler proposes only configurations evaluated "
               "already)" if b.exhausted else "Raise search.n_trials to search further")
    log.info(
        "Study '%s' has its %d trials and was exported to %s (model version %s): nothing to do. "
        "%s, or set search.resume=false for a fresh study.",
        study.study_name, b.counted, exported.get("model_folder"), exported.get("model_version"), further,
    )
    return True
