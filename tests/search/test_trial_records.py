"""A worker's records of trials it did not see to the end, on a real Optuna study and a real MLflow store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from unitrefine.config import SearchConfig
from unitrefine.search.locks import Lock
from unitrefine.search.session import Session
from unitrefine.search.storage import open_storage
from unitrefine.search.trial_attrs import WORKER_ATTR
from unitrefine.search.trial_records import fail_unnamed, record_stopped, settle
from unitrefine.tracking.tracker import Tracker


def _asked(study: optuna.Study, worker: str | None) -> int:
    """A trial asked for (RUNNING), named by ``worker`` unless None: as a Ctrl-C inside Optuna's ask leaves it."""
    trial = study.ask({"C": FloatDistribution(0, 1)})
    if worker is not None:
        trial.set_user_attr(WORKER_ATTR, worker)
    return trial.number


def test_a_trial_asked_but_not_yet_named_is_failed_and_named_ones_are_left_alone() -> None:
    study = optuna.create_study()
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5, params={}, distributions={}))
    named, unnamed = _asked(study, "host:1"), _asked(study, None)
    assert fail_unnamed(study, Lock()) == [unnamed]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {0: TrialState.COMPLETE, named: TrialState.RUNNING, unnamed: TrialState.FAIL}


def test_without_the_study_lock_nothing_is_failed(tmp_path: Path) -> None:
    """Another thread or worker holding the lock may be between its ask and naming its trial: not ours to fail."""
    study = optuna.create_study()
    unnamed = _asked(study, None)
    lock, held, release = Lock(), threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        assert fail_unnamed(study, lock, wait_s=0.2) == []
    finally:
        release.set()
        holder.join()
    assert study.trials[unnamed].state == TrialState.RUNNING
    assert lock.acquire(blocking=False), "fail_unnamed must not keep the lock"


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    """A worker's session on a journal study, logging to a real SQLite MLflow store."""
    store = open_storage(SearchConfig(), str(tmp_path / "s.journal"), lambda p: tmp_path / p)
    study = optuna.create_study(study_name="s", storage=store.storage, direction="maximize")
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", (tmp_path / "artifacts").as_uri())
    run_id = tracker.create_parent("s", {}, {})
    yield Session(study, store, tracker, run_id, "exp")
    store.close()


def _trial_runs(session: Session) -> dict[int, tuple[str, str]]:
    """Status and error tag of each trial run, once the background writer has written them."""
    session.tracker.flush()
    client = MlflowClient(session.tracker.uri)  # type: ignore[attr-defined]
    runs = client.search_runs([session.tracker.experiment_id],  # type: ignore[attr-defined]
                              f"tags.`mlflow.parentRunId` = '{session.run_id}'")
    return {int(r.data.tags["optuna.trial_number"]): (r.info.status, r.data.tags.get("error", "")) for r in runs}


def test_a_stop_fails_the_running_trials_logs_them_killed_and_ends_the_parent_run(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    study = session.study
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.7, params={"C": 0.3},
                                 distributions={"C": FloatDistribution(0, 1)}))
    running = _asked(study, session.store.worker_id)
    record_stopped(session, [running], "KILLED", "interrupted (Ctrl-C)", dict, n_trials=10, max_retries=3)
    assert study.trials[running].state == TrialState.FAIL
    status, error = _trial_runs(session)[running]
    assert status == "KILLED" and error.startswith("interrupted (Ctrl-C); the trial is run again")
    assert MlflowClient(session.tracker.uri).get_run(session.run_id).info.status == "KILLED"  # type: ignore[attr-defined]
    assert "1 of 10 trials of study 's' finished; best so far: trial 0, CV score 0.7000" in caplog.text


def test_settling_retries_an_interrupted_trial_and_gives_it_a_killed_run_once(session: Session) -> None:
    study = session.study
    interrupted = _asked(study, "gone-worker")
    study.tell(interrupted, state=TrialState.FAIL)  # interrupted: no error recorded, so it is retried
    b = settle(session, max_retries=3, params=dict)
    assert (b.counted, b.waiting, b.to_retry) == (0, 1, ())
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.WAITING]
    assert _trial_runs(session) == {
        interrupted: ("KILLED", "its worker stopped before the trial finished; the trial was run again")}
    settle(session, max_retries=3, params=dict)
    assert len(study.get_trials()) == 2 and len(_trial_runs(session)) == 1, "retried and logged once only"
