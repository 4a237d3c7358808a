"""Joining a study (:func:`unitrefine.search.session.join_study`): create, resume or start beside; its parent run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from unitrefine.config import SearchConfig
from unitrefine.errors import UnitRefineError
from unitrefine.search.outcomes import TrialLog
from unitrefine.search.session import QueuedTrial, Session, StudyPlace, join_study
from unitrefine.search.storage import open_storage
from unitrefine.search.study import EXPORTED_ATTR, IDENTITY, RUN_ATTR, create_study
from unitrefine.search.trial_attrs import WARM_START_ATTR
from unitrefine.tracking.tracker import NullTracker, Tracker

IDENTITY_A = {key: "a" for key in IDENTITY}
IDENTITY_B = {**IDENTITY_A, "unitrefine.seed": "7"}
QUEUED = [
    QueuedTrial({"classifier": "logistic_regression"}, {WARM_START_ATTR: "models:/m@champion best"}),
    QueuedTrial({"classifier": "random_forest"}),
    QueuedTrial({"classifier": "hist_gradient_boosting"}),
]


def _place(root: Path, **search: object) -> StudyPlace:
    """The study of experiment ``exp`` in a journal under ``root`` (a relative storage path, resolved against it)."""
    config = SearchConfig(**{"n_trials": 2, "pruner": "none", "unit_limits": {}, **search})  # type: ignore[arg-type]
    return StudyPlace(config, "exp", 0, "optuna/exp.journal", lambda spec: root / spec)


@pytest.fixture
def sessions() -> Iterator[list[Session]]:
    """Sessions to close after the test (each holds its worker's liveness lock)."""
    opened: list[Session] = []
    yield opened
    for session in opened:
        session.store.close()


def _join(sessions: list[Session], place: StudyPlace, identity: dict[str, str],
          make_tracker: Callable[[], TrialLog] = NullTracker, queued: Sequence[QueuedTrial] = QUEUED) -> Session:
    session = join_study(place, identity, queued, make_tracker, "run", {"team": "lab"},
                         {"search": {"n_trials": place.search.n_trials}})
    sessions.append(session)
    return session


def _first_draw(study: optuna.Study) -> float:
    """The sampler's first random draw of a parameter no queued trial fixes."""
    return study.ask().suggest_float("x", 0.0, 1.0)


def test_a_new_study_gets_its_queued_trials_and_identity_and_a_second_join_resumes_it(
    tmp_path: Path, sessions: list[Session], caplog: pytest.LogCaptureFixture
) -> None:
    place = _place(tmp_path)
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        created = _join(sessions, place, IDENTITY_A)
    label = str((tmp_path / "optuna" / "exp.journal").resolve())
    assert f"Study 'exp' created in {label}." in caplog.text
    assert (created.study.study_name, created.experiment, created.run_id) == ("exp", "exp", "")
    assert created.store.label == label and (tmp_path / "optuna" / "exp.journal").is_file()
    assert not created.tracker.enabled and RUN_ATTR not in created.study.user_attrs
    assert created.study.user_attrs == IDENTITY_A
    # At most search.n_trials of the queued trials, in order, with their attributes.
    trials = created.study.get_trials()
    assert [(t.state, t.system_attrs["fixed_params"], t.user_attrs) for t in trials] == [
        (TrialState.WAITING, {"classifier": "logistic_regression"}, {WARM_START_ATTR: "models:/m@champion best"}),
        (TrialState.WAITING, {"classifier": "random_forest"}, {}),
    ]
    # The same identity again: the study is resumed as it is (nothing queued again), with a fresh random stream.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        resumed = _join(sessions, place, IDENTITY_A, queued=QUEUED[2:])
    assert f"Resuming study 'exp' in {label}: 0 of 2 trials finished, 0 running elsewhere." in caplog.text
    assert resumed.study.study_name == "exp" and len(resumed.study.get_trials()) == 2
    assert resumed.study.user_attrs == IDENTITY_A
    seeded = create_study("reference", place.search, place.seed)  # in memory, seeded as the creator's sampler
    reference = _first_draw(seeded)
    assert _first_draw(created.study) == reference
    assert _first_draw(resumed.study) != reference


def test_another_identity_starts_a_fresh_study_beside_the_first(
    tmp_path: Path, sessions: list[Session], caplog: pytest.LogCaptureFixture
) -> None:
    place = _place(tmp_path)
    first = _join(sessions, place, IDENTITY_A, queued=QUEUED[:1])
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        fresh = _join(sessions, place, IDENTITY_B, queued=QUEUED[1:])
    assert "is not continued: its seed differs from this run's. Starting a fresh study 'exp#2'" in caplog.text
    assert fresh.study.study_name == "exp#2" and fresh.study.user_attrs == IDENTITY_B
    assert [t.system_attrs["fixed_params"]["classifier"] for t in fresh.study.get_trials()] == [
        "random_forest", "hist_gradient_boosting"]
    assert [t.system_attrs["fixed_params"]["classifier"] for t in first.study.get_trials()] == ["logistic_regression"]
    assert sorted(optuna.get_all_study_names(fresh.store.storage)) == ["exp", "exp#2"]
    # Each identity finds its own study again.
    assert _join(sessions, place, IDENTITY_A).study.study_name == "exp"
    assert _join(sessions, place, IDENTITY_B).study.study_name == "exp#2"


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A SQLite MLflow store under tmp_path. A Tracker sets MLflow's tracking URI (and ``MLFLOW_TRACKING_URI``),
    which other tests rely on: both put back afterwards."""
    from mlflow.tracking._tracking_service import utils

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = utils._tracking_uri
    yield uri
    mlflow.set_tracking_uri(previous)


def test_with_tracking_one_parent_run_is_shared_by_the_joins_of_a_study(
    tmp_path: Path, sessions: list[Session], tracking: str
) -> None:
    place = _place(tmp_path, warm_start="models:/m@champion")

    def make_tracker() -> Tracker:
        return Tracker(tracking, "exp", None)

    created = _join(sessions, place, IDENTITY_A, make_tracker)
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("exp").experiment_id
    runs = client.search_runs([experiment])
    assert [r.info.run_id for r in runs] == [created.run_id]
    assert created.study.user_attrs[RUN_ATTR] == created.run_id == created.tracker.parent_id  # type: ignore[attr-defined]
    run = runs[0]
    assert (run.info.run_name, run.info.status, run.data.params) == ("run", "RUNNING", {"search.n_trials": "2"})
    assert {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")} == {
        "team": "lab", "unitrefine.search.study": "exp", "unitrefine.study_storage": created.store.label,
        WARM_START_ATTR: "models:/m@champion"}
    # A resumed join attaches to the recorded run.
    resumed = _join(sessions, place, IDENTITY_A, make_tracker)
    assert resumed.run_id == created.run_id == resumed.tracker.parent_id  # type: ignore[attr-defined]
    assert [r.info.run_id for r in client.search_runs([experiment])] == [created.run_id]
    # Once its trials were exported by that run, more trials go to a parent run of their own.
    resumed.study.set_user_attr(EXPORTED_ATTR, {"n_finished": 0, "run_id": created.run_id})
    extended = _join(sessions, place, IDENTITY_A, make_tracker)
    assert extended.run_id != created.run_id and extended.study.user_attrs[RUN_ATTR] == extended.run_id
    assert client.get_run(extended.run_id).data.tags["unitrefine.previous_run"] == created.run_id
    assert len(client.search_runs([experiment])) == 2


def test_a_join_that_fails_releases_the_study_lock_and_the_worker(tmp_path: Path) -> None:
    place = _place(tmp_path)

    def refuse() -> NullTracker:
        raise UnitRefineError("tracking.uri: the MLflow store cannot be opened")

    with pytest.raises(UnitRefineError, match="tracking.uri: the MLflow store cannot be opened"):
        join_study(place, IDENTITY_A, QUEUED, refuse, "run", {}, {})
    # The worker's liveness lock is given back (its file removed), and so is the study lock.
    assert list((tmp_path / "optuna" / "exp.journal.locks" / "workers").iterdir()) == []
    other = open_storage(place.search, place.storage, place.resolve)
    try:
        lock = other.study_lock("exp")
        assert lock.acquire(blocking=False)
        lock.release()
    finally:
        other.close()
