"""The record a re-creation starts from: a model folder, as it is or downloaded from its MLflow run.

A run id or a registered model (``models:/name@alias``) is looked up read-only in its MLflow store: the run's
``model_folder`` artifacts are downloaded, and its tags (the whole dataset's fingerprint, held-out recordings
included) and how many worker processes ran its trials are kept. A missing SQLite store is an error, never a
new store.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unitrefine.config import PROJECT_ROOT
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import CONFIG_FILE, LABELS_FILE, LEADERBOARD_FILE, TRAINING_DATA_FILE
from unitrefine.export.model_info import INFO_FILE, read_model_info
from unitrefine.tracking.registry import is_registry_uri

log = logging.getLogger(__name__)

_RUN_ID = re.compile(r"^(?:runs:/)?(?P<id>[0-9a-f]{32})/?$")
#: What a model folder needs for its run to be re-created.
RECORD_FILES = (CONFIG_FILE, INFO_FILE, LEADERBOARD_FILE, TRAINING_DATA_FILE, LABELS_FILE)


@dataclass(frozen=True)
class Recorded:
    """What a run recorded: its model folder, and its MLflow run's tags when the run is known."""

    source: str
    folder: Path
    info: dict[str, Any]
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    #: The worker processes that ran the run's trials (``<host>-<pid>-<id>``, from its trial runs' tags).
    workers: tuple[str, ...] = ()


def find_record(source: str, tracking_uri: str, workdir: Path) -> Recorded:
    """The record of ``source``: a model folder as it is, or downloaded from a run or a registered model.

    Raises
    ------
    UnitRefineError
        No such folder, run or registered model, or a folder lacking what a re-creation needs.
    """
    path = Path(source).expanduser()
    if not path.is_absolute() and not path.is_dir() and (PROJECT_ROOT / path).is_dir():
        log.info("source=%s is not in the working directory: using the project's %s.", source, PROJECT_ROOT / path)
        path = PROJECT_ROOT / path  # as predict, suggest and merge_review find their inputs
    if path.is_dir():
        folder = path.resolve()
        info = _read_record(folder, source)
        run_id = (info.get("mlflow") or {}).get("run_id")
        uri = (info.get("mlflow") or {}).get("tracking_uri")
        tags, workers = _run_tags_if_reachable(run_id, uri)
        return Recorded(source, folder, info, run_id, tags, workers)
    if is_registry_uri(source):
        return _from_store(source, None, tracking_uri, workdir)
    match = _RUN_ID.match(source.strip())
    if match:
        return _from_store(source, match["id"], tracking_uri, workdir)
    raise UnitRefineError(
        f"source={source}: there is no such folder, and it is not an MLflow run id (32 hexadecimal digits) or a "
        "registered model (models:/<name>@<alias>). Pass a model folder written by unitrefine.train, the run id "
        "its summary printed, or a registered model."
    )


def _read_record(folder: Path, source: str) -> dict[str, Any]:
    missing = [name for name in RECORD_FILES if not (folder / name).is_file()]
    if missing:
        raise UnitRefineError(
            f"{source} lacks {missing}: it is not a model folder written by unitrefine.train (a SpikeInterface "
            "train_model folder, or a folder from an older version, records no configuration to re-create)."
        )
    info = read_model_info(folder)
    if not (info.get("trained_on") or {}).get("dataset_fingerprint"):
        raise UnitRefineError(
            f"{folder / INFO_FILE} records no trained_on.dataset_fingerprint to check the data against: the folder "
            "was written by an older unitrefine. Train it again with this version (python -m unitrefine.train with "
            "the folder's config.yaml) to get a model that can be re-created."
        )
    return info


def _from_store(source: str, run_id: str | None, tracking_uri: str, workdir: Path) -> Recorded:
    """The record of run ``run_id``, or (None) of the registered model ``source``, read-only from ``tracking_uri``.

    Raises
    ------
    UnitRefineError
        No such store, registered model or run, or a run without a model folder to re-create.
    """
    from unitrefine.tracking.lookups import StoreMissing
    from unitrefine.tracking.registry import registered_version

    try:
        if run_id is None:
            version, run_id = registered_version(tracking_uri, source)
            log.info("%s is version %s (run %s).", source, version, run_id)
        return _from_run(run_id, tracking_uri, workdir, source)
    except StoreMissing:
        raise UnitRefineError(
            f"No MLflow store at {tracking_uri.removeprefix('sqlite:///')}. Pass tracking_uri=<the store the run was "
            "tracked in>, or the model folder instead."
        ) from None


def _from_run(run_id: str, tracking_uri: str, workdir: Path, source: str) -> Recorded:
    """Download a training run's ``model_folder`` artifacts; keep its tags and the workers that ran its trials."""
    from unitrefine.tracking.lookups import download_run_folder, has_model_folder, read_run, study_workers

    run = read_run(tracking_uri, run_id)
    if run is None:
        raise UnitRefineError(f"There is no MLflow run {run_id} in {tracking_uri}. Check the id, or pass "
                              "tracking_uri=<the store it was tracked in>.")
    parent = run.tags.get("mlflow.parentRunId")
    if parent:
        raise UnitRefineError(f"MLflow run {run_id} is a trial ({run.name}) of the study run {parent}: "
                              f"re-create source={parent}.")
    if not has_model_folder(tracking_uri, run_id):
        raise UnitRefineError(
            f"MLflow run {run_id} ({run.name}, {run.status}) has no model_folder artifacts: it is not a "
            "finished unitrefine.train run (an interrupted or failed study exports nothing)."
        )
    folder = download_run_folder(tracking_uri, run_id, workdir)
    return Recorded(source, folder, _read_record(folder, source), run_id, run.tags, study_workers(tracking_uri, run))


def _run_tags_if_reachable(run_id: str | None, tracking_uri: str | None) -> tuple[dict[str, str], tuple[str, ...]]:
    """A folder's run tags, when its run is in a local SQLite store that still exists (else none)."""
    from unitrefine.tracking.lookups import StoreMissing, read_run, study_workers

    if not run_id or not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return {}, ()
    try:
        run = read_run(tracking_uri, run_id)
    except StoreMissing:
        return {}, ()
    if run is None:
        log.info("The folder's MLflow run %s is not in %s: checking the folder's record only.", run_id, tracking_uri)
        return {}, ()
    return run.tags, study_workers(tracking_uri, run)
