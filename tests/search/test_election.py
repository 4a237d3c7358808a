"""The election of the one exporting worker (:mod:`unitrefine.search.election`) on a real journal storage."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from unitrefine.config import SearchConfig
from unitrefine.search.budget import MAX_DUPLICATES_IN_A_ROW, Budget, budget
from unitrefine.search.election import Finalizer, elect
from unitrefine.search.session import Session
from unitrefine.search.storage import StudyStorage, open_storage
from unitrefine.search.study import EXPORTED_ATTR, create_study
from unitrefine.search.trial_attrs import WORKER_ATTR
from unitrefine.tracking.tracker import NullTracker

SEARCH = SearchConfig(n_trials=3, pruner="none", max_retries=2, unit_limits={})
RUN = "parent-run-1"


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Callable[[], StudyStorage]]:
    """Opens worker storages on one journal (each its own locks, as separate workers have); all closed after."""
    opened: list[StudyStorage] = []

    def open_one() -> StudyStorage:
        opened.append(open_storage(SEARCH, str(tmp_path / "optuna" / "exp.journal"), Path))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


def _session(store: StudyStorage, run_id: str = RUN) -> Session:
    return Session(create_study("exp", SEARCH, 0, store.storage), store, NullTracker(), run_id, "exp")


def _complete(study: optuna.Study, n: int) -> None:
    for value in range(n):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value / 10, params={"x": 0.5},
                                     distributions={"x": FloatDistribution(0, 1)}))


def _settle(session: Session, other: StudyStorage) -> Callable[[], Budget]:
    """As a worker settles: orphaned trials failed, the budget counted; it checks that it runs under the study
    lock (another worker cannot take it meanwhile)."""
    def settle() -> Budget:
        assert not other.study_lock("exp").acquire(blocking=False), "settled without the study lock"
        session.store.fail_orphaned(session.study)
        return budget(session.study.get_trials(deepcopy=False), SEARCH.max_retries)

    return settle


def _free(store: StudyStorage) -> bool:
    """Whether the finalize lock is free: taken (and given back) by another worker."""
    lock = store.finalize_lock("exp")
    if not lock.acquire(blocking=False):
        return False
    lock.release()
    return True


def test_the_first_elector_exports_and_records_it_and_a_second_one_gets_none(
    stores: Callable[[], StudyStorage], caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third = stores(), stores(), stores()
    session = _session(first)
    _complete(session.study, 2)
    finalizer = elect(session, first.study_lock("exp"), _settle(session, third))
    assert isinstance(finalizer, Finalizer)
    assert (finalizer.n_finished, finalizer.run_id, finalizer.study.study_name) == (2, RUN, "exp")
    # While it exports, any other worker gets None, at once.
    other = _session(second)
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        assert elect(other, second.study_lock("exp"), _settle(other, third)) is None
    assert "Another worker is exporting study 'exp'; this worker is done." in caplog.text
    assert not _free(third)
    assert EXPORTED_ATTR not in other.study.user_attrs
    with finalizer:
        finalizer.exported(Path("models") / "m1", "4")
    assert _free(third)
    recorded = {"n_finished": 2, "run_id": RUN, "model_folder": str(Path("models") / "m1"), "model_version": "4"}
    assert optuna.load_study(study_name="exp", storage=third.storage).user_attrs[EXPORTED_ATTR] == recorded


def test_no_export_while_a_trial_runs_in_a_live_worker(
    stores: Callable[[], StudyStorage], caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third = stores(), stores(), stores()
    session = _session(first)
    _complete(session.study, 1)
    running = session.study.ask()
    running.set_user_attr(WORKER_ATTR, second.worker_id)
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        assert elect(session, first.study_lock("exp"), _settle(session, third)) is None
    assert "1 trials still run in other workers, and the last to finish exports" in caplog.text
    assert _free(third)
    assert EXPORTED_ATTR not in session.study.user_attrs
    # Its worker dies: the trial is failed (to be retried), no trial runs, and this worker exports.
    second.close()
    finalizer = elect(session, first.study_lock("exp"), _settle(session, third))
    assert isinstance(finalizer, Finalizer) and finalizer.n_finished == 1
    assert session.study.get_trials()[running.number].state == TrialState.FAIL
    with finalizer:
        pass
    assert _free(third)


def test_a_study_exported_by_this_parent_run_is_not_exported_again(
    stores: Callable[[], StudyStorage], caplog: pytest.LogCaptureFixture
) -> None:
    first, other = stores(), stores()
    session = _session(first)
    _complete(session.study, 2)
    exported = {"n_finished": 2, "run_id": RUN, "model_folder": "models/m1", "model_version": "4"}
    session.study.set_user_attr(EXPORTED_ATTR, exported)
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        assert elect(session, first.study_lock("exp"), _settle(session, other)) is None
    assert ("Study 'exp' has its 2 trials and was exported to models/m1 (model version 4): nothing to do. Raise "
            "search.n_trials to search further, or set search.resume=false for a fresh study.") in caplog.text
    assert _free(other)
    # An exhausted search space says so instead.
    caplog.clear()
    exhausted = Budget(counted=2, running=0, waiting=0, to_retry=(), interrupted=0, n_complete=2,
                       duplicates=MAX_DUPLICATES_IN_A_ROW, duplicates_in_a_row=MAX_DUPLICATES_IN_A_ROW)
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        assert elect(session, first.study_lock("exp"), lambda: exhausted) is None
    assert ("nothing to do. Widen search_space to search further (the sampler proposes only configurations "
            "evaluated already), or set search.resume=false") in caplog.text
    assert _free(other)
    # Another parent run, or more trials since the export: exported again.
    for run_id, n_more in ((RUN + "-other", 0), (RUN, 1)):
        _complete(session.study, n_more)
        finalizer = elect(_session(first, run_id), first.study_lock("exp"), _settle(session, other))
        assert isinstance(finalizer, Finalizer)
        assert (finalizer.n_finished, finalizer.run_id) == (2 + n_more, run_id)
        finalizer.lock.release()
    assert session.study.user_attrs[EXPORTED_ATTR] == exported


def test_a_failed_export_records_nothing_and_gives_the_lock_back(stores: Callable[[], StudyStorage]) -> None:
    first, other = stores(), stores()
    session = _session(first)
    _complete(session.study, 1)
    finalizer = elect(session, first.study_lock("exp"), _settle(session, other))
    assert isinstance(finalizer, Finalizer)
    with pytest.raises(RuntimeError, match="refit failed"), finalizer:
        finalizer.exported("models/m1", "1")
        raise RuntimeError("refit failed")
    assert EXPORTED_ATTR not in optuna.load_study(study_name="exp", storage=other.storage).user_attrs
    assert _free(other)
    # Settling that fails gives the lock back too.

    def broken() -> Budget:
        raise OSError("journal unreadable")

    with pytest.raises(OSError, match="journal unreadable"):
        elect(session, first.study_lock("exp"), broken)
    assert _free(other) and _free(first)
