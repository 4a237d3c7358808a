"""Registered models for prediction: ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> a local folder.

A version registered by ``unitrefine.train`` belongs to a training run whose ``model_folder`` artifacts
are the exported model folder (``best_model.skops`` + ``model_info.json``); that folder is downloaded and
loaded like any other, with the reviewed trusted types. The version's source is that same folder (an
``MLmodel`` beside its one ``.skops``, so ``mlflow.sklearn.load_model`` reads the same file); versions
registered by older unitrefine releases point at a separate MLflow copy of the pipeline, which is not used.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from unitrefine.errors import UnitRefineError
from unitrefine.tracking.lookups import MODEL_FOLDER, reader

log = logging.getLogger(__name__)

PREFIX = "models:/"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def is_registry_uri(spec: str) -> bool:
    """Whether ``spec`` names a registered model rather than a folder."""
    return spec.startswith(PREFIX)


def parse_uri(spec: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> ``(name, alias, None)``; ``models:/name/3`` -> ``(name, None, "3")``."""
    m = _URI.match(spec)
    if m is None:
        raise UnitRefineError(
            f"'{spec}' is not a registered-model URI: write models:/<name>@<alias> (e.g. models:/mouse_v1@champion) "
            "or models:/<name>/<version>."
        )
    return m["name"], m["alias"], m["version"]


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

    name, alias, version = parse_uri(spec)
    client = reader(uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    except MlflowException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnitRefineError(f"{spec} is not in the registry at {uri} ({first}).") from None
    return str(mv.version), str(mv.run_id)


def download_model_folder(spec: str, tracking_uri: str, destination: Path) -> Path:
    """Download the model folder of a registered model version.

    Parameters
    ----------
    spec : str
        ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.
    tracking_uri : str
        The MLflow tracking/registry store.
    destination : Path
        An empty folder to download into.

    Returns
    -------
    Path
        The local model folder.

    Raises
    ------
    UnitRefineError
        Bad URI, no store, unknown name/alias/version, or a version without a unitrefine model folder.
    """
    name, alias, version = parse_uri(spec)
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise UnitRefineError(
                f"No MLflow store at {db} (for {spec}). Train a model first, or set tracking_uri=... to your store."
            )
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnitRefineError(
            f"{spec} is not in the registry at {tracking_uri} ({first}). Check the name and alias: a trained model "
            "gets 'challenger' when it passes the gate, and `python -m unitrefine.promote` moves 'champion'."
        ) from None
    destination.mkdir(parents=True, exist_ok=True)
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=MODEL_FOLDER, dst_path=str(destination), tracking_uri=tracking_uri
        )
    except (MlflowException, OSError) as exc:
        raise UnitRefineError(
            f"{spec} (version {mv.version}, run {mv.run_id}) has no '{MODEL_FOLDER}' artifacts ({type(exc).__name__}); "
            "it was not registered by unitrefine.train. Download its model folder and pass the folder instead."
        ) from None
    log.info("%s is version %s (run %s).", spec, mv.version, mv.run_id)
    return Path(path)
