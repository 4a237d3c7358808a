"""The study storage: search.storage values, the default journal, lock files, and trials whose worker died.

A worker's liveness is an flock on its file; here another process takes it with plain fcntl, as a live worker's
kernel lock would be, and SIGKILL ends it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from _flock import held_by_another_process, other_process_gets

from unitrefine.config import SearchConfig
from unitrefine.errors import UnitRefineError
from unitrefine.search.locks import FileLock, Lock
from unitrefine.search.storage import StudyStorage, default_storage, local_storage_file, open_storage
from unitrefine.search.trial_attrs import WORKER_ATTR

State = optuna.trial.TrialState
RUNNING, FAIL, COMPLETE = State.RUNNING, State.FAIL, State.COMPLETE

worker_process = held_by_another_process  # a live worker holds the flock on its file


def locked_elsewhere(path: Path) -> bool:
    """Whether some process holds the flock on ``path``."""
    return not other_process_gets(path)


def listing(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def under(root: Path) -> Callable[[str], Path]:
    """Resolve relative search.storage paths against ``root`` (as the project root)."""
    return lambda spec: root / spec


@pytest.mark.parametrize("spec", ["mysql://u@127.0.0.1/db", "study.db", "Memory", "", "optuna.journal.bak"])
def test_an_unsupported_storage_is_refused_naming_search_storage_before_anything_is_written(
    tmp_path: Path, spec: str
) -> None:
    pattern = rf"search.storage='{spec}' is not supported\. Use 'memory', a file path ending in '\.journal'"
    with pytest.raises(UnitRefineError, match=pattern):
        open_storage(SearchConfig(), spec, under(tmp_path))
    with pytest.raises(UnitRefineError, match=pattern):
        local_storage_file(spec, under(tmp_path))
    assert listing(tmp_path) == {}


@pytest.mark.parametrize("spec", ["sqlite:///:memory:", "sqlite://"])
def test_an_in_memory_sqlite_storage_is_refused_before_anything_is_written(tmp_path: Path, spec: str) -> None:
    message = "search.storage: an in-memory SQLite database cannot be shared; use 'memory'."
    with pytest.raises(UnitRefineError) as opened:
        open_storage(SearchConfig(), spec, under(tmp_path))
    with pytest.raises(UnitRefineError) as located:
        local_storage_file(spec, under(tmp_path))
    assert str(opened.value) == str(located.value) == message
    assert listing(tmp_path) == {}


@pytest.mark.parametrize("spec", ["blocker/study.journal", "sqlite:///{root}/blocker/study.db"])
def test_a_storage_where_nothing_can_be_written_is_refused_naming_the_place_and_the_setting(
    tmp_path: Path, spec: str
) -> None:
    (tmp_path / "blocker").write_bytes(b"a file, not a folder")
    before = listing(tmp_path)
    spec = spec.format(root=tmp_path)
    with pytest.raises(UnitRefineError, match=r"Could not open the study storage .*blocker/study\.(journal|db).*"
                       r"Set search\.storage to a location you can write to"):
        open_storage(SearchConfig(), spec, under(tmp_path))
    assert listing(tmp_path) == before


@pytest.mark.parametrize(("spec", "expected"), [
    ("memory", None),
    ("studies/s.journal", "studies/s.journal"),
    ("sqlite:///{root}/db/s.db", "db/s.db"),
    ("sqlite+pysqlite:///{root}/db/../s.db", "s.db"),
    ("postgresql://u:secret@db.example.org:5432/studies", None),
])
def test_the_local_storage_file_is_where_open_storage_writes_and_nothing_is_created(
    tmp_path: Path, spec: str, expected: str | None
) -> None:
    path = local_storage_file(spec.format(root=tmp_path), under(tmp_path))
    assert path == (None if expected is None else tmp_path.resolve() / expected)
    assert listing(tmp_path) == {}


def test_a_database_url_with_a_bad_port_is_refused_naming_search_storage(tmp_path: Path) -> None:
    spec = "postgresql://u@db:/studies"
    with pytest.raises(UnitRefineError, match=r"search\.storage='postgresql://u@db:/studies' is not a valid"):
        local_storage_file(spec, under(tmp_path))
    with pytest.raises(UnitRefineError, match=r"search\.storage='postgresql://u@db:/studies' is not a valid"):
        open_storage(SearchConfig(), spec, under(tmp_path))
    assert listing(tmp_path) == {}


@pytest.mark.parametrize(("enabled", "uri", "expected"), [
    (False, "sqlite:///{root}/elsewhere/mlflow.db", "memory"),
    (True, "sqlite:///{root}/elsewhere/mlflow.db", "{root}/elsewhere/optuna/exp.journal"),
    (True, "sqlite:///{root}/a/../b/mlflow.db", "{root}/b/optuna/exp.journal"),
    (True, "sqlite:///:memory:", "{root}/mlruns/optuna/exp.journal"),
    (True, "http://127.0.0.1:5000", "{root}/mlruns/optuna/exp.journal"),
])
def test_the_default_storage_is_a_journal_beside_the_mlflow_store_or_memory_without_tracking(
    tmp_path: Path, enabled: bool, uri: str, expected: str
) -> None:
    root = tmp_path.resolve()
    assert default_storage(enabled, uri.format(root=root), root, "exp") == expected.format(root=root)
    assert listing(tmp_path) == {}


def test_an_in_memory_study_has_thread_locks_every_worker_alive_and_no_files(tmp_path: Path) -> None:
    store = open_storage(SearchConfig(), "memory", under(tmp_path))
    assert (store.kind, store.persistent, store.label, store.lock_dir) == ("memory", False, "memory", None)
    assert isinstance(store.storage, optuna.storages.InMemoryStorage)
    lock = store.study_lock("exp")
    assert type(lock) is Lock and store.study_lock("exp") is lock and store.finalize_lock("exp") is not lock
    assert store.is_alive("any-host-1-abcdef") and not store.is_alive(None)
    study = optuna.create_study(storage=store.storage)
    study.ask().set_user_attr(WORKER_ATTR, "gone-1-abcdef")
    assert store.fail_orphaned(study) == []
    assert [t.state for t in study.trials] == [RUNNING]
    store.close()
    assert listing(tmp_path) == {}


def test_a_journal_storage_keeps_its_locks_beside_it_and_holds_its_worker_file_while_open(tmp_path: Path) -> None:
    store = open_storage(SearchConfig(), "studies/s.journal", under(tmp_path))
    journal = (tmp_path / "studies" / "s.journal").resolve()
    locks = journal.parent / "s.journal.locks"
    assert (store.kind, store.persistent, store.label, store.lock_dir) == ("journal", True, str(journal), locks)
    assert isinstance(store.storage, optuna.storages.JournalStorage)
    worker_file = locks / "workers" / f"{store.worker_id}.lock"
    assert locked_elsewhere(worker_file)
    study_lock, finalize_lock = store.study_lock("exp"), store.finalize_lock("exp:v2/a b")
    assert isinstance(study_lock, FileLock) and isinstance(finalize_lock, FileLock)
    assert (study_lock.path, finalize_lock.path) == (locks / "study_exp.lock", locks / "finalize_exp_v2_a_b.lock")
    assert store.study_lock("exp") is study_lock
    with study_lock:
        assert locked_elsewhere(study_lock.path)
    optuna.create_study(study_name="exp", storage=store.storage)
    assert journal.stat().st_size > 0
    store.close()
    assert not worker_file.exists()
    reopened = open_storage(SearchConfig(), str(journal), Path)
    assert optuna.get_all_study_names(reopened.storage) == ["exp"]
    reopened.close()


def running(study: optuna.Study, worker: str | None) -> int:
    trial = study.ask()
    if worker is not None:
        trial.set_user_attr(WORKER_ATTR, worker)
    return trial.number


def test_trials_of_dead_workers_fail_and_trials_of_live_ones_keep_running(tmp_path: Path) -> None:
    store = open_storage(SearchConfig(), "s.journal", under(tmp_path))
    assert store.lock_dir is not None
    workers = store.lock_dir / "workers"
    study = optuna.create_study(study_name="exp", storage=store.storage)
    (workers / "killed-2-aaaaaa.lock").touch()  # left behind by a worker killed with SIGKILL
    with worker_process(workers / "live-1-bbbbbb.lock") as live:
        mine = running(study, store.worker_id)  # 0
        other = running(study, "live-1-bbbbbb")  # 1
        killed = running(study, "killed-2-aaaaaa")  # 2
        gone = running(study, "gone-3-cccccc")  # 3: no file at all
        unnamed = running(study, None)  # 4: its worker died before naming itself
        done = running(study, "gone-3-cccccc")  # 5: finished before its worker died
        study.tell(done, 0.5)
        assert (store.is_alive(store.worker_id), store.is_alive("live-1-bbbbbb")) == (True, True)
        assert (store.is_alive("gone-3-cccccc"), store.is_alive(None)) == (False, False)
        assert store.fail_orphaned(study) == [killed, gone, unnamed]
        states = {t.number: t.state for t in study.get_trials()}
        assert states == {mine: RUNNING, other: RUNNING, killed: FAIL, gone: FAIL, unnamed: FAIL, done: COMPLETE}
        assert sorted(p.name for p in workers.iterdir()) == sorted([f"{store.worker_id}.lock", "live-1-bbbbbb.lock"])
        live.kill()  # SIGKILL: the kernel releases its lock
        live.wait(timeout=10)
        assert not store.is_alive("live-1-bbbbbb")
        assert store.fail_orphaned(study) == [other]
    assert store.fail_orphaned(study) == [], "its own trial stays running while it lives"
    assert [t.state for t in study.get_trials(states=(RUNNING,))] == [RUNNING]
    assert [p.name for p in workers.iterdir()] == [f"{store.worker_id}.lock"]
    store.close()


def test_a_sqlite_storage_keeps_its_locks_beside_the_database(tmp_path: Path) -> None:
    db = tmp_path / "db" / "s.db"
    store = open_storage(SearchConfig(), f"sqlite:///{db}", under(tmp_path))
    assert isinstance(store, StudyStorage) and isinstance(store.storage, optuna.storages.RDBStorage)
    assert (store.kind, store.persistent, store.label) == ("rdb", True, f"sqlite:///{db}")
    locks = db.resolve().parent / "s.db.locks"
    assert store.lock_dir == locks and db.is_file()
    assert locked_elsewhere(locks / "workers" / f"{store.worker_id}.lock")
    assert store.study_lock("exp").path == locks / "study_exp.lock"  # type: ignore[attr-defined]
    study = optuna.create_study(study_name="exp", storage=store.storage)
    with pytest.warns(UserWarning, match="Heartbeat of storage is supposed to be used with Study.optimize"):
        running(study, "gone-3-cccccc")  # workers run trials through Study.optimize, which beats
    assert store.fail_orphaned(study) == [], "no heartbeat missed: Optuna's heartbeat decides, not the lock files"
    assert [t.state for t in study.get_trials()] == [RUNNING]
    store.close()
    assert not (locks / "workers" / f"{store.worker_id}.lock").exists()
