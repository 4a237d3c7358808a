"""MLflow tracking: one parent run per study, one nested run per trial, the model in the registry.

This is the only module that talks to MLflow.
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from unitrefine.errors import UnitRefineError, is_interrupt
from unitrefine.export.model_info import read_model_info
from unitrefine.search.study import WARM_START_ATTR

log = logging.getLogger(__name__)

_RUN_STATUS = {
    optuna.trial.TrialState.COMPLETE: "FINISHED",
    optuna.trial.TrialState.PRUNED: "KILLED",
    optuna.trial.TrialState.FAIL: "FAILED",
}
_MAX_PARAM = 6000
#: Where a training run's model folder goes among its artifacts; a registered version's source is this folder.
MODEL_FOLDER = "model_folder"
#: The experiment kind ("Machine learning"). MLflow 3.17's UI does not read it to choose between its GenAI view and
#: the runs: that follows the "GenAI | Model training" switch (or ``?workflowType=`` in the address), see
#: :func:`runs_page`; set for the UIs and tools that do read it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: A saved view of the experiment's runs table (the UI's *Views* menu, or the address :func:`runs_page` gives): the
#: columns :data:`RUNS_VIEW_COLUMNS`, sorted by ``cv_score``. MLflow keeps saved views in experiment tags
#: ``mlflow.sharedViewState.<key>``; it has no setting for the columns a plain visit shows.
RUNS_VIEW_KEY = "unitrefine"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"
RUNS_VIEW_NAME = "unitrefine: cv_score"
RUNS_VIEW_COLUMNS = (
    "metrics.`cv_score`", "metrics.`cv_score_std`", "metrics.`holdout_balanced_accuracy`", "params.`classifier`",
)
#: Uploads at least this large show a progress bar (on a terminal).
_BAR_BYTES = 20 * 2**20


def default_tracking_uri(root: Path) -> str:
    """``sqlite:///<root>/mlruns/mlflow.db``: the project's store, wherever the command is run from."""
    return f"sqlite:///{(root / 'mlruns' / 'mlflow.db').resolve()}"


def default_artifact_location(root: Path, experiment: str) -> str:
    """``file://<root>/mlruns/artifacts/<experiment>``: where a new experiment's artifacts go by default."""
    return (root / "mlruns" / "artifacts" / experiment).resolve().as_uri()


# ------------------------------------------------------------------------------------------------------------
# Checks before any work (unitrefine.run.preflight): what MLflow would refuse, found without opening a store
# ------------------------------------------------------------------------------------------------------------


def experiment_name_problem(name: str) -> str | None:
    """Why MLflow refuses ``name`` as an experiment name (MLflow's own check), or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_experiment_name

    try:
        _validate_experiment_name(name)
    except MlflowException as exc:
        return exc.message.rstrip(".")
    return None


def model_name_problem(name: str, uri: str) -> str | None:
    """Why the registry of the MLflow store ``uri`` refuses ``name`` as a registered model name, or None.

    MLflow's own checks: a file store's registry (``uri`` a folder) also refuses path separators and ``%``.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.model_registry import file_store
    from mlflow.utils.uri import get_uri_scheme
    from mlflow.utils.validation import _validate_model_name

    try:
        file_registry = get_uri_scheme(uri) in ("", "file")
    except MlflowException:  # a tracking.uri MLflow cannot open (local_store says so)
        file_registry = False
    try:
        (file_store._validate_model_name if file_registry else _validate_model_name)(name)
    except MlflowException as exc:
        return exc.message.rstrip(".")
    return None


def local_store(uri: str) -> tuple[Path, bool] | None:
    """The local file (SQLite) or folder (file store) the MLflow store ``uri`` writes, and whether it is a folder.

    Returns
    -------
    (Path, bool) or None
        None for a tracking server, a database server or an in-memory SQLite database.

    Raises
    ------
    UnitRefineError
        If MLflow has no store for ``uri``'s scheme (the message names ``tracking.uri``).
    """
    from urllib.parse import urlparse

    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import get_uri_scheme
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        _tracking_store_registry.get_store_builder(uri)  # what MLflow itself does first with a tracking URI
        scheme = get_uri_scheme(uri)
        database = make_url(uri).database if scheme == "sqlite" else None
    except (MlflowException, ArgumentError):
        raise UnitRefineError(
            f"tracking.uri='{uri}' is not a store MLflow can open (scheme '{urlparse(uri).scheme}'). Use a SQLite file "
            "(sqlite:///path/to/mlflow.db), a tracking server (http://host:5000), a database "
            "(postgresql://user@host/database), or leave tracking.uri unset for <project>/mlruns/mlflow.db."
        ) from None
    if scheme in ("", "file"):
        return Path(local_file_uri_to_path(uri)).expanduser().resolve(), True
    if scheme == "sqlite" and database and database != ":memory:":
        return Path(database).expanduser().resolve(), False
    return None


def local_artifacts(location: str) -> Path | None:
    """The local folder of the artifact location ``location``; None for remote storage (S3, a server...).

    Raises
    ------
    UnitRefineError
        If MLflow has no artifact repository for ``location``'s scheme (the message names
        ``tracking.artifact_location``).
    """
    from mlflow.store.artifact.artifact_repository_registry import get_registered_artifact_repositories
    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import get_uri_scheme

    scheme = get_uri_scheme(location)
    if scheme not in get_registered_artifact_repositories():
        raise UnitRefineError(
            f"tracking.artifact_location='{location}': MLflow cannot store artifacts at '{scheme}://' locations. "
            "Use a folder path, or a location MLflow supports (s3://, gs://, mlflow-artifacts:/...)."
        )
    if scheme in ("", "file"):
        return Path(local_file_uri_to_path(location)).expanduser().resolve()
    return None


# ------------------------------------------------------------------------------------------------------------
# Read-only lookups: they never create a store, an experiment or a run
# ------------------------------------------------------------------------------------------------------------


class StoreMissing(UnitRefineError):
    """A read-only lookup in a SQLite store whose file does not exist (opening it would create it).

    Attributes
    ----------
    path : Path
        The missing database file.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(f"No MLflow store at {path}.")
        self.path = path


@dataclass(frozen=True)
class RunSummary:
    """What a read-only lookup tells of an MLflow run."""

    run_id: str
    name: str
    status: str
    experiment_id: str
    tags: dict[str, str]


def _check_store(uri: str) -> None:
    """Raise :class:`StoreMissing` if ``uri`` names a SQLite file that does not exist."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise StoreMissing(Path(uri.removeprefix("sqlite:///")))


def _reader(uri: str) -> MlflowClient:
    """A client of an existing store (:class:`StoreMissing` for a SQLite file that does not exist)."""
    _check_store(uri)
    return MlflowClient(uri)


def read_run(uri: str, run_id: str) -> RunSummary | None:
    """The name, status, experiment and tags of MLflow run ``run_id`` in the store ``uri``.

    Returns
    -------
    RunSummary or None
        None if the store has no such run.

    Raises
    ------
    StoreMissing
        If ``uri`` names a SQLite file that does not exist.
    """
    from mlflow.exceptions import MlflowException

    client = _reader(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    info = run.info
    return RunSummary(info.run_id, info.run_name, info.status, info.experiment_id, dict(run.data.tags))


def study_workers(uri: str, run: RunSummary) -> tuple[str, ...]:
    """The worker processes that ran the trials of study run ``run`` (its trial runs' ``unitrefine.worker`` tags)."""
    runs = _reader(uri).search_runs(
        [run.experiment_id], f"tags.`mlflow.parentRunId` = '{run.run_id}'", max_results=50000
    )
    return tuple(sorted({r.data.tags["unitrefine.worker"] for r in runs if "unitrefine.worker" in r.data.tags}))


def registered_version(uri: str, spec: str) -> tuple[str, str]:
    """The version and the training run of a registered model, looked up read-only.

    Parameters
    ----------
    uri : str
        The MLflow tracking/registry store.
    spec : str
        ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.

    Returns
    -------
    version, run_id : str

    Raises
    ------
    UnitRefineError
        A malformed ``spec``, or a name, alias or version the registry does not hold.
    StoreMissing
        If ``uri`` names a SQLite file that does not exist.
    """
    from mlflow.exceptions import MlflowException

    from unitrefine.tracking.registry import parse_uri

    name, alias, version = parse_uri(spec)
    client = _reader(uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    except MlflowException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnitRefineError(f"{spec} is not in the registry at {uri} ({first}).") from None
    return str(mv.version), str(mv.run_id)


def has_model_folder(uri: str, run_id: str) -> bool:
    """Whether run ``run_id`` holds a model folder among its artifacts (:data:`MODEL_FOLDER`)."""
    return bool(_reader(uri).list_artifacts(run_id, MODEL_FOLDER))


def download_run_folder(uri: str, run_id: str, destination: Path) -> Path:
    """Download the model folder (:data:`MODEL_FOLDER` artifacts) of run ``run_id`` into ``destination``.

    Returns
    -------
    Path
        ``destination / MODEL_FOLDER``, as MLflow wrote it.

    Raises
    ------
    UnitRefineError
        If the download fails.
    StoreMissing
        If ``uri`` names a SQLite file that does not exist.
    """
    from mlflow.exceptions import MlflowException

    _check_store(uri)
    destination.mkdir(parents=True, exist_ok=True)
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=MODEL_FOLDER, dst_path=str(destination), tracking_uri=uri
        )
    except (MlflowException, OSError) as exc:
        raise UnitRefineError(f"Could not download the model folder of MLflow run {run_id} ({exc}).") from None
    return Path(path)


def _ms(ts: Any) -> int | None:
    return None if ts is None else int(ts.timestamp() * 1000)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}`` (lists are kept as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def write_mlmodel(
    dest: Path,
    folder: Path,
    model_file: str,
    input_example: pd.DataFrame,
    trusted_types: list[str],
    pip_requirements: list[str],
    run_id: str | None,
) -> None:
    """Write into ``dest`` the files that make ``folder`` an MLflow model, without serialising the model again.

    What ``mlflow.sklearn.save_model(..., serialization_format="skops", pyfunc_predict_fn="predict_proba")``
    writes beside its own ``model.skops``: ``MLmodel`` (sklearn and python_function flavours pointing at
    ``model_file``, the trusted types, the signature), the input example, ``requirements.txt``,
    ``conda.yaml`` and ``python_env.yaml``. The signature's outputs are ``predict_proba``'s: one float64
    column per class of ``model_info.json``'s ``label_conversion``.

    Parameters
    ----------
    dest : Path
        An empty folder; its files go next to ``model_file`` (they name no other ``.skops`` file).
    folder : Path
        The model folder (``model_file`` and ``model_info.json``).
    model_file : str
        The folder's ``.skops`` file.
    input_example : DataFrame
        A few rows of features.
    trusted_types : list of str
        Types ``mlflow.sklearn.load_model`` passes to ``skops.io.load`` as trusted.
    pip_requirements : list of str
        The model's requirements; MLflow's own pin is added.
    run_id : str or None
        The run whose artifacts hold ``folder``.
    """
    from importlib.metadata import version

    import numpy as np
    import yaml
    from mlflow.models import Model, ModelSignature, infer_signature
    from mlflow.models.utils import _save_example
    from mlflow.pyfunc import add_to_model
    from mlflow.types.schema import Schema, TensorSpec
    from mlflow.utils.environment import _process_pip_requirements, _PythonEnv

    info = read_model_info(folder)
    outputs = Schema([TensorSpec(np.dtype("float64"), (-1, len(info["label_conversion"])))])
    model = Model(artifact_path=MODEL_FOLDER, run_id=run_id)
    model.signature = ModelSignature(infer_signature(input_example).inputs, outputs)
    _save_example(model, input_example, str(dest))
    add_to_model(
        model, loader_module="mlflow.sklearn", model_path=model_file, conda_env="conda.yaml",
        python_env="python_env.yaml", predict_fn="predict_proba",
    )
    model.add_flavor(
        "sklearn", pickled_model=model_file, sklearn_version=version("scikit-learn"), serialization_format="skops",
        code=None, skops_trusted_types=list(trusted_types),
    )
    model.model_size_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    conda_env, requirements, _ = _process_pip_requirements([], list(pip_requirements))
    model.save(str(dest / "MLmodel"))
    (dest / "conda.yaml").write_text(yaml.safe_dump(conda_env, default_flow_style=False), encoding="utf-8")
    (dest / "requirements.txt").write_text("\n".join(requirements), encoding="utf-8")
    _PythonEnv.current().to_yaml(str(dest / "python_env.yaml"))


@dataclass(frozen=True)
class TrialRun:
    """What one trial's nested run holds, captured when the trial finishes."""

    name: str
    start_ms: int | None
    end_ms: int
    status: str
    tags: dict[str, str]
    metrics: list[Metric]
    params: list[Param]


class RunWriter:
    """Writes trial runs on one background thread, in the order they come, so that trials do not wait on the store.

    A nested run costs three MLflow calls; on a SQLite store each commit waits for the disk (tens of
    milliseconds), as long as a cheap trial. The writer overlaps that with the next trials. A failed write is
    kept and raised by the next :meth:`put` or :meth:`flush` (the runs after it are not written), so a broken
    store still stops the search.

    Parameters
    ----------
    write : callable
        Writes one :class:`TrialRun` (on the writer thread).
    """

    def __init__(self, write: Callable[[TrialRun], None]) -> None:
        self._write = write
        self._queue: queue.Queue[TrialRun] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._error: Exception | None = None

    def put(self, run: TrialRun) -> None:
        """Queue ``run`` for writing (the writer thread starts with the first run)."""
        self._raise()
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="unitrefine-mlflow-writer", daemon=True)
                self._thread.start()
        self._queue.put(run)

    def flush(self) -> None:
        """Wait until every queued run is written; raise the error of a failed write."""
        self._queue.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        while True:
            run = self._queue.get()
            try:
                if self._error is None:
                    self._write(run)
            except Exception as exc:  # kept for the search's thread, which raises it (put/flush)
                self._error = exc
            finally:
                self._queue.task_done()


def experiment_tags() -> dict[str, str]:
    """The tags a unitrefine experiment gets: its kind and the saved view of its runs (:data:`RUNS_VIEW_TAG`).

    The view is what MLflow 3.17's UI writes when one saves a view of the runs table: a JSON envelope (name,
    creation and update times in ms, the state as a JSON string) whose state holds the selected columns and the
    sort order. Columns of metrics or parameters a run does not have are left out by the UI.
    """
    import json

    now = int(time.time() * 1000)
    state = {"selectedColumns": list(RUNS_VIEW_COLUMNS), "orderByKey": "metrics.`cv_score`", "orderByAsc": False}
    view = {"name": RUNS_VIEW_NAME, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, RUNS_VIEW_TAG: json.dumps(view)}


def runs_page(ui: str, experiment_id: str) -> str:
    """The MLflow UI address that opens experiment ``experiment_id`` on its runs, in the view :data:`RUNS_VIEW_TAG`.

    ``workflowType=machine_learning`` is the address form of the UI's "Model training" switch: without it (and
    until someone flips the switch in that browser) MLflow 3.17 opens every experiment on its GenAI view.

    Parameters
    ----------
    ui : str
        Where the UI is served, e.g. ``http://127.0.0.1:5000``.
    experiment_id : str
        The MLflow experiment.
    """
    query = f"workflowType=machine_learning&viewStateShareKey={RUNS_VIEW_KEY}"
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


class Tracker:
    """Logs a study to MLflow.

    Parameters
    ----------
    uri : str
        Tracking URI (e.g. ``sqlite:///.../mlruns/mlflow.db`` or ``http://127.0.0.1:5000``).
    experiment_name : str
        MLflow experiment; created with ``artifact_location`` if it does not exist.
    artifact_location : str or None
        Where the experiment's artifacts go (only used when creating the experiment).

    Notes
    -----
    The experiment gets the tags of :func:`experiment_tags` (an existing one, those it lacks: a kind or a view
    someone set is kept): the kind ``custom_model_development`` and the saved runs view ``unitrefine: cv_score``,
    which :func:`runs_page`'s address opens in the MLflow UI.
    """

    def __init__(self, uri: str, experiment_name: str, artifact_location: str | None) -> None:
        self.uri = uri
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment_name)
        tags = experiment_tags()
        if exp is None:
            self.experiment_id = self.client.create_experiment(
                experiment_name, artifact_location=artifact_location, tags=tags
            )
        else:
            self.experiment_id = exp.experiment_id
            for key, value in tags.items():
                if key not in exp.tags:
                    self.client.set_experiment_tag(self.experiment_id, key, value)
        self.parent_id: str | None = None
        self._writer = RunWriter(self._write_trial)

    def flush(self) -> None:
        """Wait until every trial run :meth:`log_trial` queued is in the store.

        Raises
        ------
        Exception
            The MLflow error of a trial run that could not be written.
        """
        self._writer.flush()

    @contextmanager
    def parent_run(self, run_name: str, tags: Mapping[str, str], run_id: str | None = None) -> Iterator[str]:
        """Start the study's parent run, or resume ``run_id``; it ends FINISHED, KILLED (Ctrl-C) or FAILED."""
        self.flush()
        if run_id:
            run = mlflow.start_run(run_id=run_id)
        else:
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=dict(tags))
        self.parent_id = run.info.run_id
        status = "FAILED"
        try:
            yield self.parent_id
            status = "FINISHED"
        except BaseException as exc:
            if is_interrupt(exc):
                status = "KILLED"
            raise
        finally:
            mlflow.end_run(status=status)

    def create_parent(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        """Create the study's parent run (status RUNNING) with its tags and parameters; return its id.

        Workers of a study share it: they log their trials under it without making it their active run.
        """
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        self.parent_id = run.info.run_id
        self.log_params(params)
        return self.parent_id

    def attach(self, run_id: str) -> bool:
        """Log trials under the existing parent run ``run_id``; False if it is gone."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        if run.info.lifecycle_stage != "active" or run.info.experiment_id != self.experiment_id:
            return False
        self.parent_id = run_id
        return True

    def set_running(self) -> None:
        """Mark the parent run RUNNING again (a resumed study whose run was KILLED or FINISHED)."""
        if self.parent_id and self.client.get_run(self.parent_id).info.status != "RUNNING":
            self.client.update_run(self.parent_id, status="RUNNING")

    def end_parent(self, status: str) -> None:
        """Terminate the parent run with ``status`` (``FINISHED``, ``KILLED`` or ``FAILED``), its trials written first."""
        self.flush()
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status)

    def logged_trials(self, study_name: str) -> set[int]:
        """The numbers of the trials of ``study_name`` that have a nested run."""
        self.flush()
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`optuna.study` = '{study_name}'", max_results=50000
        )
        return {int(r.data.tags["optuna.trial_number"]) for r in runs if "optuna.trial_number" in r.data.tags}

    def has_trial_run(self, study_name: str, number: int) -> bool:
        """Whether trial ``number`` of ``study_name`` already has a nested run."""
        self.flush()
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`optuna.study` = '{study_name}' and tags.`optuna.trial_number` = '{number}'",
            max_results=1,
        )
        return bool(runs)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters of the parent run (flattened, values stringified)."""
        assert self.parent_id is not None
        items = [Param(k, str(v)[:_MAX_PARAM]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.parent_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log scalar metrics of the parent run."""
        assert self.parent_id is not None
        now = _ms(pd.Timestamp.now())
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.parent_id, metrics=items[i : i + 500])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tag the parent run."""
        assert self.parent_id is not None
        self.client.log_batch(self.parent_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        """Upload every file under ``folder`` to the parent run, logging how many files and MB, and how long it took.

        Uploads of at least 20 MB show a progress bar (in bytes, with the file being uploaded) on a terminal;
        log lines written meanwhile go through the bar, not over it.
        """
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        assert self.parent_id is not None
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        sizes = [p.stat().st_size for p in files]
        total = sum(sizes)
        log.info("Uploading %d files (%.1f MB) from %s to MLflow run %s.",
                 len(files), total / 1e6, folder, self.parent_id)
        started = time.perf_counter()
        with logging_redirect_tqdm(), tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="upload", leave=False,
            disable=True if total < _BAR_BYTES else None,  # None: shown on a terminal only
        ) as bar:
            for path, size in zip(files, sizes, strict=True):
                bar.set_postfix_str(path.name, refresh=False)
                parts = [artifact_path, path.parent.relative_to(folder).as_posix()]
                destination = "/".join(p for p in parts if p and p != ".") or None
                self.client.log_artifact(self.parent_id, str(path), destination)
                bar.update(size)
        log.info("Uploaded %d files (%.1f MB) in %.1f s.", len(files), total / 1e6, time.perf_counter() - started)

    def log_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        params: Mapping[str, Any],
        status: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record one finished trial as a nested run: parameters, fold scores, mean/std, duration and state.

        ``status`` overrides the run status the trial's state maps to, and ``error`` its ``error`` tag
        (interrupted trials: ``KILLED``, and why). The run is written on a background thread (:class:`RunWriter`):
        :meth:`flush` waits for it.
        """
        assert self.parent_id is not None
        metrics = []
        end = _ms(trial.datetime_complete) or _ms(pd.Timestamp.now())
        for k, score in enumerate(trial.user_attrs.get("fold_scores", [])):
            metrics.append(Metric("cv_fold_score", float(score), end, k))
        if trial.value is not None:
            metrics.append(Metric("cv_score", float(trial.value), end, 0))
        if "cv_std" in trial.user_attrs:
            metrics.append(Metric("cv_score_std", float(trial.user_attrs["cv_std"]), end, 0))
        if trial.duration is not None:
            metrics.append(Metric("duration_s", trial.duration.total_seconds(), end, 0))
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "optuna.study": study.study_name,
            "optuna.trial_number": str(trial.number),
            "optuna.state": trial.state.name.lower(),
        }
        if "worker" in trial.user_attrs:
            tags["unitrefine.worker"] = str(trial.user_attrs["worker"])
        if WARM_START_ATTR in trial.user_attrs:  # queued from a previous model (search.warm_start)
            tags[WARM_START_ATTR] = str(trial.user_attrs[WARM_START_ATTR])[:5000]
        if error or "error" in trial.user_attrs:
            tags["error"] = error or str(trial.user_attrs["error"])
        self._writer.put(TrialRun(
            name=f"trial-{trial.number:04d}", start_ms=_ms(trial.datetime_start), end_ms=end,
            status=status or _RUN_STATUS.get(trial.state, "FAILED"), tags=tags, metrics=metrics,
            params=[Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()],
        ))

    def _write_trial(self, run: TrialRun) -> None:
        """Create one finished nested run (on the writer thread)."""
        created = self.client.create_run(self.experiment_id, start_time=run.start_ms, tags=run.tags, run_name=run.name)
        self.client.log_batch(created.info.run_id, metrics=run.metrics, params=run.params)
        self.client.set_terminated(created.info.run_id, run.status, end_time=run.end_ms)

    def log_model(
        self,
        folder: Path,
        input_example: pd.DataFrame,
        trusted_types: list[str],
        pip_requirements: list[str],
        registered_name: str | None,
    ) -> str | None:
        """Make the run's uploaded model folder an MLflow model (sklearn flavour, skops) and register it.

        The model is stored once, compressed: an ``MLmodel`` file (and MLflow's environment and input-example
        files) is written beside the folder's ``.skops`` file in the run's ``model_folder`` artifacts, its
        sklearn flavour pointing at that file, and the registered version's source is that folder. So
        ``models:/<name>@<alias>`` loads with ``mlflow.sklearn.load_model`` / ``mlflow.pyfunc.load_model``
        (``predict_proba``) as well as with SpikeInterface's ``load_model`` and unitrefine's own loader. The
        folder is uploaded first if the run does not hold it yet (:meth:`log_artifacts`).

        Parameters
        ----------
        folder : Path
            The exported model folder (exactly one ``.skops`` file and ``model_info.json``).
        input_example : DataFrame
            A few rows of features, as the model takes them: the signature's inputs and the input example.
        trusted_types : list of str
            The reviewed types the ``.skops`` file needs trusted (:data:`unitrefine.search.estimators.TRUSTED_TYPES`).
        pip_requirements : list of str
            The model's requirements (``package==version``).
        registered_name : str or None
            Register under this name; None: log the MLflow model without registering it.

        Returns
        -------
        str or None
            The registered model version, or None when not registering.
        """
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

        assert self.parent_id is not None
        models = sorted(folder.glob("*.skops"))
        if len(models) != 1:
            raise UnitRefineError(
                f"Model folder {folder} must hold exactly one .skops file; it holds {[m.name for m in models]}."
            )
        model_file = models[0]
        listed = self.client.list_artifacts(self.parent_id, MODEL_FOLDER)
        uploaded = {f.path.rsplit("/", 1)[-1]: f.file_size for f in listed}
        if uploaded.get(model_file.name) != model_file.stat().st_size:
            self.log_artifacts(folder, MODEL_FOLDER)
        with tempfile.TemporaryDirectory(prefix="unitrefine-mlmodel-") as tmp:
            write_mlmodel(Path(tmp), folder, model_file.name, input_example, trusted_types, pip_requirements,
                          self.parent_id)
            self.client.log_artifacts(self.parent_id, tmp, MODEL_FOLDER)
        if registered_name is None:
            return None
        try:
            self.client.create_registered_model(registered_name)
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        source = f"{self.client.get_run(self.parent_id).info.artifact_uri.rstrip('/')}/{MODEL_FOLDER}"
        mv = self.client.create_model_version(registered_name, source, run_id=self.parent_id)
        log.info("Registered '%s' version %s: the run's %s (%s).", registered_name, mv.version, MODEL_FOLDER, source)
        return str(mv.version)

    def download_model_folder(self, run_id: str, destination: Path) -> Path:
        """Download a training run's exported model folder (:func:`download_run_folder`)."""
        return download_run_folder(self.uri, run_id, destination)

    def gate(self, name: str, version: str, score: float, minimum: float, metric: str) -> bool:
        """Give a new version the alias ``challenger`` if ``score >= minimum``; tag the outcome either way.

        Returns
        -------
        bool
            Whether the version passed.
        """
        passed = score >= minimum
        self.client.set_model_version_tag(name, version, "gate.metric", metric)
        self.client.set_model_version_tag(name, version, "gate.score", f"{score:.4f}")
        self.client.set_model_version_tag(name, version, "gate.minimum", f"{minimum:.4f}")
        if passed:
            self.client.set_registered_model_alias(name, "challenger", version)
            self.client.set_model_version_tag(name, version, "gate", "passed")
        else:
            reason = f"{metric} {score:.4f} < registry.gate_min_score {minimum:.4f}"
            self.client.set_model_version_tag(name, version, "gate", f"failed: {reason}")
            log.warning("Model version %s did not pass the gate (%s): registered without an alias.", version, reason)
        return passed


class NullTracker:
    """Stands in for :class:`Tracker` when tracking is off (``tracking.enabled=false``): records nothing."""

    uri = None

    @contextmanager
    def parent_run(self, run_name: str, tags: Mapping[str, str], run_id: str | None = None) -> Iterator[str]:
        """Yield an empty run id."""
        yield ""

    def create_parent(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        """Create nothing."""
        return ""

    def attach(self, run_id: str) -> bool:
        """Attach to nothing."""
        return True

    def set_running(self) -> None:
        """Do nothing."""

    def flush(self) -> None:
        """Nothing is queued."""

    def end_parent(self, status: str) -> None:
        """Do nothing."""

    def logged_trials(self, study_name: str) -> set[int]:
        """Nothing is recorded."""
        return set()

    def has_trial_run(self, study_name: str, number: int) -> bool:
        """Nothing is recorded."""
        return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Do nothing."""

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Do nothing."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Do nothing."""

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        """Do nothing."""

    def log_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        params: Mapping[str, Any],
        status: str | None = None,
        error: str | None = None,
    ) -> None:
        """Do nothing."""

    def log_model(
        self,
        folder: Path,
        input_example: pd.DataFrame,
        trusted_types: list[str],
        pip_requirements: list[str],
        registered_name: str | None,
    ) -> str | None:
        """Register nothing."""
        return None
