"""Checks before any work (:mod:`unitrefine.run.preflight`): what MLflow would refuse, found without opening a store."""

from __future__ import annotations

from pathlib import Path

from unitrefine.errors import UnitRefineError


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
