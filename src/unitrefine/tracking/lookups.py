"""Read-only lookups in an MLflow store: they never create a store, an experiment or a run.

MLflow is imported where it is used, so that :mod:`unitrefine.tracking.registry` (which imports this module) stays
light for commands that only ask whether a model argument is a ``models:/`` URI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from unitrefine.errors import UnitRefineError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: Where a training run's model folder goes among its artifacts; a registered version's source is this folder.
MODEL_FOLDER = "model_folder"


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


def check_store(uri: str) -> None:
    """Raise :class:`StoreMissing` if ``uri`` names a SQLite file that does not exist."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise StoreMissing(Path(uri.removeprefix("sqlite:///")))


def reader(uri: str) -> MlflowClient:
    """A client of an existing store (:class:`StoreMissing` for a SQLite file that does not exist)."""
    from mlflow.tracking import MlflowClient

    check_store(uri)
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

    client = reader(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    info = run.info
    return RunSummary(info.run_id, info.run_name, info.status, info.experiment_id, dict(run.data.tags))


def study_workers(uri: str, run: RunSummary) -> tuple[str, ...]:
    """The worker processes that ran the trials of study run ``run`` (its trial runs' ``unitrefine.worker`` tags)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from unitrefine.tracking.trial_runs import WORKER_TAG

    runs = reader(uri).search_runs(
        [run.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run.run_id}'", max_results=50000
    )
    return tuple(sorted({r.data.tags[WORKER_TAG] for r in runs if WORKER_TAG in r.data.tags}))


def has_model_folder(uri: str, run_id: str) -> bool:
    """Whether run ``run_id`` holds a model folder among its artifacts (:data:`MODEL_FOLDER`)."""
    return bool(reader(uri).list_artifacts(run_id, MODEL_FOLDER))


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
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    check_store(uri)
    destination.mkdir(parents=True, exist_ok=True)
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=MODEL_FOLDER, dst_path=str(destination), tracking_uri=uri
        )
    except (MlflowException, OSError) as exc:
        raise UnitRefineError(f"Could not download the model folder of MLflow run {run_id} ({exc}).") from None
    return Path(path)
