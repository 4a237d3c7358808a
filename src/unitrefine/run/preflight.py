"""Checks before any work: whatever a training run would otherwise find out only after its search.

:func:`preflight` runs first in :func:`unitrefine.run.training.train`: names MLflow or the folder layout would refuse,
an ``output.folder`` that may not be written, and MLflow stores, artifact folders and study storages that cannot
be written. It opens no store and writes nothing (each folder's writability is probed with a file made and
removed at once inside a folder that already exists), so a refused run leaves no MLflow store, no study journal
and no folder behind. Database and tracking servers are not contacted: they are checked when the run opens them.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from unitrefine.config import TrainConfig
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import check_output_folder
from unitrefine.run.outputs import model_folder_path
from unitrefine.search.storage import default_storage, local_storage_file
from unitrefine.tracking.store_checks import experiment_name_problem, local_artifacts, local_store, model_name_problem
from unitrefine.tracking.tracker import default_artifact_location, default_tracking_uri

__all__ = ["preflight"]

#: The longest experiment name that still makes a file name (at most 255 bytes) of ``<name>.journal.locks``.
_MAX_NAME_BYTES = 240


def preflight(cfg: TrainConfig) -> None:
    """Refuse, before any work, a run that would fail after its search.

    Checked: ``experiment_name`` (and ``tracking.model_name``) against MLflow's own rules for experiment and
    registered model names and, where it names folders, as one folder name; ``output.folder`` (an existing file,
    link or non-model folder is never replaced) or the default model folder, where it can be made; the MLflow store
    of ``tracking.uri`` (a scheme MLflow supports; a local file or folder that can be written) and the artifact
    location; the study storage of ``search.storage`` (or the journal beside the MLflow store) writable.

    Parameters
    ----------
    cfg : TrainConfig
        The validated configuration of the run.

    Raises
    ------
    UnitRefineError
        Listing every problem found, each naming its configuration key and what to do. Nothing was written.
    """
    problems = _name_problems(cfg)
    named = not _folder_name_problem(cfg)  # the default locations are made of the experiment name
    problems += _output_problems(cfg, named)
    tracking = _tracking_problems(cfg, named)
    problems += tracking
    # Unset, search.storage is a journal beside the MLflow store: a store refused already says what to fix.
    if cfg.search.storage is not None or not any("tracking.uri" in p for p in tracking):
        problems += _storage_problems(cfg, named)
    if len(problems) == 1:
        raise UnitRefineError(problems[0])
    if problems:
        raise UnitRefineError("The run cannot start; nothing was written:\n  - " + "\n  - ".join(problems))


# ------------------------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------------------------


def _tracking_uri(cfg: TrainConfig) -> str:
    return cfg.tracking.uri or default_tracking_uri(cfg.root_dir)


def _folder_uses(cfg: TrainConfig) -> list[str]:
    """The folders and files named after the experiment in this run."""
    uses = [] if cfg.output.folder else ["experiments/<experiment_name>/ (output.folder is unset)"]
    if cfg.tracking.enabled and not cfg.tracking.artifact_location:
        uses.append("mlruns/artifacts/<experiment_name> (tracking.artifact_location is unset)")
    if cfg.tracking.enabled and not cfg.search.storage:
        uses.append("the study journal <experiment_name>.journal (search.storage is unset)")
    return uses


def _path_problem(name: str) -> str | None:
    """Why ``name`` cannot be one file or folder name, or None."""
    if name in ("", ".", ".."):
        return f"'{name}' is not a folder name"
    bad = [c for c in dict.fromkeys(("/", os.sep, os.altsep, "\0")) if c and c in name]
    if bad:
        return f"it contains {' and '.join(repr(c) for c in bad)}"
    if len(name.encode()) > _MAX_NAME_BYTES:
        return f"it is longer than a file name may be ({_MAX_NAME_BYTES} bytes)"
    return None


def _folder_name_problem(cfg: TrainConfig) -> str | None:
    """Why the experiment name cannot name the folders this run names after it, or None."""
    uses = _folder_uses(cfg)
    problem = _path_problem(cfg.experiment_name) if uses else None
    return f"{problem}, but it names folders and files: {', '.join(uses)}" if problem else None


def _usable(name: str, cfg: TrainConfig) -> bool:
    return not (_path_problem(name) or experiment_name_problem(name) or model_name_problem(name, _tracking_uri(cfg)))


def _name_problems(cfg: TrainConfig) -> list[str]:
    """``experiment_name`` and ``tracking.model_name`` that the folder layout or MLflow would refuse."""
    name, uri, tracking = cfg.experiment_name, _tracking_uri(cfg), cfg.tracking
    registered = tracking.enabled and tracking.register
    reasons = [r for r in (_folder_name_problem(cfg),) if r]
    if tracking.enabled and (why := experiment_name_problem(name)):
        reasons.append(f"MLflow refuses it as an experiment name ({why})")
    if registered and not tracking.model_name and (why := model_name_problem(name, uri)):
        reasons.append(f"it is also the name the model is registered under (tracking.model_name is unset), which "
                       f"MLflow's registry refuses ({why})")
    problems = []
    if reasons:
        fixed = re.sub(r"[^\w.-]+", "_", name).strip("._")
        hint = f", e.g. experiment_name={fixed}" if fixed and _usable(fixed, cfg) else ""
        problems.append(f"experiment_name='{name}': {'; '.join(reasons)}. Choose another experiment_name{hint}.")
    if registered and tracking.model_name and (why := model_name_problem(tracking.model_name, uri)):
        problems.append(f"tracking.model_name='{tracking.model_name}': MLflow's registry refuses it as a registered "
                        f"model name ({why}). Choose another tracking.model_name, or set tracking.register=false.")
    return problems


# ------------------------------------------------------------------------------------------------------------
# Where the run writes
# ------------------------------------------------------------------------------------------------------------


def _folder_problem(path: Path) -> str | None:
    """Why no folder can be made (or written in, if it exists) at ``path``, or None.

    Probes the nearest folder that exists with a file made and removed at once, which also finds read-only file
    systems and whatever permissions ``os.access`` cannot tell.
    """
    existing = path
    try:
        while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
    except OSError as exc:
        return f"{existing} cannot be reached ({exc.strerror or exc})"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable (permission denied)"
    try:
        fd, probe = tempfile.mkstemp(prefix=".unitrefine-write-probe-", dir=existing)
    except OSError as exc:
        return f"{existing} is not writable ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None


def _file_problem(path: Path) -> str | None:
    """Why the file ``path`` (a database or journal, with lock files beside it) cannot be written, or None."""
    if path.is_dir():
        return f"{path} is a folder, not a file"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is read-only"
    return _folder_problem(path.parent)


def _output_problems(cfg: TrainConfig, named: bool) -> list[str]:
    """An ``output.folder`` that exists and may not be replaced, or a model folder that cannot be made."""
    if not cfg.output.folder and not named:
        return []
    folder = model_folder_path(cfg, None)
    if cfg.output.folder:
        try:
            check_output_folder(folder, cfg.output.overwrite)
        except UnitRefineError as exc:
            return [str(exc)]
        why = _folder_problem(folder.parent)
        return [f"output.folder={folder} cannot be made: {why}. Choose an output.folder where you can write."] if why \
            else []
    why = _folder_problem(folder.parent)
    return [f"The model folder goes under {folder.parent} (output.folder is unset), which cannot be made: {why}. "
            "Set output.folder to a folder you can write to."] if why else []


def _tracking_problems(cfg: TrainConfig, named: bool) -> list[str]:
    """A ``tracking.uri`` MLflow cannot open or write, or an artifact location it cannot write."""
    if not cfg.tracking.enabled:
        return []
    key = "tracking.uri" if cfg.tracking.uri else "tracking.uri (unset: <project>/mlruns/mlflow.db)"
    problems = []
    try:
        store = local_store(_tracking_uri(cfg))
    except UnitRefineError as exc:
        problems.append(str(exc))
        store = None
    why = None if store is None else _folder_problem(store[0]) if store[1] else _file_problem(store[0])
    if why:
        problems.append(f"The MLflow store of {key} cannot be written: {why}. Set tracking.uri to a store you can "
                        "write to, e.g. sqlite:///<a folder you can write to>/mlflow.db.")
    location = cfg.tracking.artifact_location
    if location is None and named:
        location = default_artifact_location(cfg.root_dir, cfg.experiment_name)
    try:
        folder = local_artifacts(location) if location else None
    except UnitRefineError as exc:
        return [*problems, str(exc)]
    if folder is not None and (why := _folder_problem(folder)):
        key = "tracking.artifact_location" if cfg.tracking.artifact_location else \
            "tracking.artifact_location (unset: <project>/mlruns/artifacts/<experiment_name>)"
        problems.append(f"The MLflow artifacts of {key} cannot be written: {why}. Set tracking.artifact_location to "
                        "a folder you can write to.")
    return problems


def _storage_problems(cfg: TrainConfig, named: bool) -> list[str]:
    """A study storage (``search.storage``, or the journal beside the MLflow store) that cannot be written."""
    spec = cfg.search.storage
    if spec is None and not named:
        return []
    if spec is None:
        spec = default_storage(cfg.tracking.enabled, _tracking_uri(cfg), cfg.root_dir, cfg.experiment_name)
    try:
        path = local_storage_file(spec, cfg.resolve_path)
    except UnitRefineError as exc:
        return [str(exc)]
    why = _file_problem(path) if path is not None else None
    if not why:
        return []
    if cfg.search.storage is not None:
        return [f"The study storage search.storage='{spec}' cannot be written: {why}. Set search.storage to a "
                "location you can write to (or 'memory' for a study that is not kept)."]
    return [f"The study journal {path} (search.storage is unset: it goes beside the MLflow store of tracking.uri) "
            f"cannot be written: {why}. Set search.storage to a .journal file you can write to."]
