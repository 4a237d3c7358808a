"""Where the Optuna study lives, the locks workers share, and which running trials have lost their worker.

Three kinds of storage, chosen by ``search.storage``:

``memory``
    One process; nothing survives it (the default when tracking is off).
a path ending in ``.journal``
    Optuna's journal file (the default: ``<mlflow store>/optuna/<experiment>.journal``). Workers on one
    host share it; locks are ``flock`` locks on files beside it, released by the kernel when a worker dies.
``sqlite:///...`` or ``postgresql://...``
    Optuna's RDB storage with its heartbeat, for workers on many hosts (PostgreSQL). Locks are
    PostgreSQL advisory locks (``flock`` files beside the database for SQLite), also released when the
    holder's connection or process dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from unitrefine.config import SearchConfig, storage_kind
from unitrefine.errors import UnitRefineError
from unitrefine.search.locks import AdvisoryLock, FileLock, Lock
from unitrefine.search.trial_attrs import WORKER_ATTR

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

log = logging.getLogger(__name__)


class StudyStorage:
    """An Optuna storage plus the locks and the liveness check its workers share.

    Parameters
    ----------
    spec : str
        The ``search.storage`` value after defaults (``memory``, a ``.journal`` path or an RDB URL).
    storage : optuna.storages.BaseStorage
        The opened storage.
    label : str
        How to name the storage in messages (passwords hidden).
    lock_dir : Path or None
        Where lock files go (journal and SQLite).
    engine : sqlalchemy.engine.Engine or None
        For PostgreSQL advisory locks.
    """

    def __init__(self, spec: str, storage: optuna.storages.BaseStorage, label: str,
                 lock_dir: Path | None = None, engine: Any = None) -> None:
        self.spec = spec
        self.kind = storage_kind(spec)
        self.storage = storage
        self.label = label
        self.lock_dir = lock_dir
        self.engine = engine
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._locks: dict[str, Lock] = {}
        # Held for the worker's lifetime and released by the kernel or the database when it dies, so other
        # workers can tell whether it still lives (see is_alive).
        self._alive: Lock | None = None if self.kind == "memory" else self._liveness_lock(self.worker_id)
        if self._alive is not None:
            self._alive.acquire()

    @property
    def persistent(self) -> bool:
        """Whether the study outlives this process."""
        return self.kind != "memory"

    def _lock(self, name: str) -> Lock:
        if name not in self._locks:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            if self.kind == "memory":
                self._locks[name] = Lock()
            elif self.engine is not None and self.engine.dialect.name == "postgresql":
                self._locks[name] = AdvisoryLock(self.engine, name)
            else:
                assert self.lock_dir is not None
                self._locks[name] = FileLock(self.lock_dir / f"{safe}.lock")
        return self._locks[name]

    def study_lock(self, experiment: str) -> Lock:
        """Serialises creating, resuming and claiming trials of ``experiment``'s studies."""
        return self._lock(f"study:{experiment}")

    def finalize_lock(self, study_name: str) -> Lock:
        """Held by the one worker that refits and exports ``study_name``."""
        return self._lock(f"finalize:{study_name}")

    def _worker_file(self, worker_id: str) -> Path:
        assert self.lock_dir is not None
        return self.lock_dir / "workers" / f"{worker_id}.lock"

    def _liveness_lock(self, worker_id: str) -> Lock:
        if self.engine is not None and self.engine.dialect.name == "postgresql":
            return AdvisoryLock(self.engine, f"worker:{worker_id}")
        return FileLock(self._worker_file(worker_id))

    def is_alive(self, worker_id: str | None) -> bool:
        """Whether the worker ``worker_id`` (a trial's ``worker`` attribute) still runs."""
        if worker_id is None:
            return False
        if worker_id == self.worker_id or self.kind == "memory":
            return True
        probe = self._liveness_lock(worker_id)
        if isinstance(probe, FileLock) and not probe.path.exists():
            return False
        if not probe.acquire(blocking=False):
            return True
        probe.release()
        if isinstance(probe, FileLock):
            with contextlib.suppress(FileNotFoundError):
                probe.path.unlink()
        return False

    def fail_orphaned(self, study: optuna.Study) -> list[int]:
        """Mark FAIL the running trials whose worker is gone; return their numbers.

        RDB storages use Optuna's heartbeat (``fail_stale_trials``: no heartbeat for ``grace_period_s``).
        Journal files use the workers' lock files: a worker holds an ``flock`` on its file while it lives,
        so a trial whose worker's file can be locked has lost its worker (killed, even with SIGKILL).
        Call it holding :meth:`study_lock`.
        """
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return []
        before = {t.number for t in running}
        if self.kind == "rdb":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            still = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
            return sorted(before - still)
        if self.kind != "journal":
            return []
        failed = []
        for t in running:
            if self.is_alive(t.user_attrs.get(WORKER_ATTR)):
                continue
            # No owner: the worker died between creating the trial and naming itself (both happen under
            # the study lock, which we hold now), so the trial is orphaned too.
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
        return failed

    def close(self) -> None:
        """Release this worker's liveness lock."""
        if self._alive is not None:
            self._alive.release()
            if isinstance(self._alive, FileLock):
                with contextlib.suppress(FileNotFoundError):
                    self._alive.path.unlink()
            self._alive = None


def default_storage(tracking_enabled: bool, tracking_uri: str, root: Path, experiment: str) -> str:
    """The ``search.storage`` used when it is null.

    ``<folder of the MLflow SQLite store>/optuna/<experiment>.journal`` (``<root>/mlruns/optuna/`` for the
    default store, or when MLflow is a server), so that the study is kept, and resumed, next to the runs
    that record it; ``memory`` when tracking is off (nothing is written besides the model folder then).
    """
    if not tracking_enabled:
        return "memory"
    base = root / "mlruns"
    if tracking_uri.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(tracking_uri).database
        if database and database != ":memory:":
            base = Path(database).expanduser().resolve().parent
    return str(base / "optuna" / f"{experiment}.journal")


def local_storage_file(spec: str, resolve: Callable[[str], Path]) -> Path | None:
    """The file a journal or SQLite study storage writes (its lock files go beside it), as :func:`open_storage`
    opens it; None for ``memory`` and database servers. Nothing is opened or created.

    Raises
    ------
    UnitRefineError
        If ``spec`` is not a supported ``search.storage`` value, or is an in-memory SQLite database.
    """
    kind = storage_kind(spec)
    if kind == "journal":
        return resolve(spec).resolve()
    if kind == "memory":
        return None
    url = _database_url(spec)
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise UnitRefineError("search.storage: an in-memory SQLite database cannot be shared; use 'memory'.")
    return Path(url.database).expanduser().resolve()


@contextlib.contextmanager
def _storage_errors(label: str) -> Iterator[None]:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except ModuleNotFoundError as exc:
        raise UnitRefineError(
            f"search.storage={label} needs the database driver '{exc.name}': pip install 'psycopg[binary]' "
            "(or install unitrefine with the [postgres] extra)."
        ) from None
    except SQLAlchemyError as exc:
        detail = str(exc).strip().splitlines()[0]
        raise UnitRefineError(
            f"Could not open the study storage {label} ({detail}). Is the database server running and the URL "
            "right (search.storage)?"
        ) from None
    except OSError as exc:
        raise UnitRefineError(
            f"Could not open the study storage {label}: {exc}. Set search.storage to a location you can write to "
            "(when search.storage is unset, the study journal goes beside the MLflow store of tracking.uri)."
        ) from None


def open_storage(search: SearchConfig, spec: str, resolve: Callable[[str], Path]) -> StudyStorage:
    """Open (creating if needed) the study storage ``spec``.

    Parameters
    ----------
    search : SearchConfig
        Heartbeat settings for RDB storages.
    spec : str
        ``memory``, a ``.journal`` path (relative paths go through ``resolve``) or an RDB URL.
    resolve : callable
        Resolves a relative path against the project root.

    Raises
    ------
    UnitRefineError
        If the storage cannot be opened (bad path, no server, no driver).
    """
    kind = storage_kind(spec)
    if kind == "memory":
        return StudyStorage(spec, optuna.storages.InMemoryStorage(), "memory")
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = resolve(spec).resolve()
        label = str(path)
        with _storage_errors(label):
            lock_dir = path.parent / f"{path.name}.locks"
            (lock_dir / "workers").mkdir(parents=True, exist_ok=True)
            backend = JournalFileBackend(str(path))
            return StudyStorage(spec, optuna.storages.JournalStorage(backend), label, lock_dir=lock_dir)
    return _open_rdb(search, spec)


def _database_url(spec: str) -> URL:
    """SQLAlchemy's URL of the database storage ``spec``; a malformed one (bad port, ...) is the user's error."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(spec)
    except (ArgumentError, ValueError) as exc:
        raise UnitRefineError(f"search.storage='{spec}' is not a valid database URL ({exc}); a SQLite file is "
                              "sqlite:///path/to/study.db, a server postgresql://user@host:5432/database.") from None


def _open_rdb(search: SearchConfig, spec: str) -> StudyStorage:
    """Open (creating its schema if needed, one worker at a time) the SQLite or database-server storage ``spec``."""
    from sqlalchemy import create_engine

    url = _database_url(spec)
    label = url.render_as_string(hide_password=True)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    lock_dir = None
    with _storage_errors(label):
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:":
                raise UnitRefineError("search.storage: an in-memory SQLite database cannot be shared; use 'memory'.")
            db = Path(url.database).expanduser().resolve()
            db.parent.mkdir(parents=True, exist_ok=True)
            lock_dir = db.parent / f"{db.name}.locks"
            (lock_dir / "workers").mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": 60}}
            engine = None
            init_lock: Lock = FileLock(lock_dir / "init.lock")
        else:
            engine = create_engine(spec, pool_pre_ping=True, pool_size=2, max_overflow=4)
            init_lock = AdvisoryLock(engine, "storage-init")
        # Creating the schema of a fresh database is not safe against other workers doing the same
        # (alembic_version races): one worker at a time.
        with init_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                spec,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=search.heartbeat_s,
                grace_period=search.grace_period_s,
            )
    return StudyStorage(spec, storage, label, lock_dir=lock_dir, engine=engine)
