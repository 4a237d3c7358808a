"""Loading curation models: a model folder (ours, or one SpikeInterface's ``train_model`` wrote) or a registered
model (``models:/<name>@<alias>``), only with the reviewed trusted types (plus types a user explicitly trusts)."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unitrefine.apply.command_paths import input_path
from unitrefine.data.metric_names import current_metric_name
from unitrefine.errors import UnitRefineError
from unitrefine.export.model_info import INFO_FILE
from unitrefine.search.estimators import TRUSTED_TYPES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model and what prediction needs to know about it."""

    source: str
    pipeline: Any
    info: dict[str, Any]
    features: list[str]
    classes: list[str]

    def required_metrics(self) -> list[str]:
        """The metric columns the model needs, by their current SpikeInterface names."""
        return list(dict.fromkeys(current_metric_name(f) for f in self.features))


def _class_names(pipeline: Any, info: dict[str, Any], source: str) -> list[str]:
    conversion = {str(k): str(v) for k, v in (info.get("label_conversion") or {}).items()}
    codes = [str(c.item() if isinstance(c, np.generic) else c) for c in pipeline.classes_]
    if not conversion:
        return codes
    unknown = [c for c in codes if c not in conversion]
    if unknown:
        raise UnitRefineError(
            f"Model {source}: {INFO_FILE} label_conversion {conversion} does not name the model's classes {unknown}."
        )
    return [conversion[c] for c in codes]


def load_model(spec: str, trust: list[str], tracking_uri: str | None, workdir: Path) -> LoadedModel:
    """Load a model folder or a registered model (``models:/name@alias``) with the reviewed trusted types.

    Parameters
    ----------
    spec : str
        A model folder, or ``models:/<name>@<alias>`` / ``models:/<name>/<version>``.
    trust : list of str
        Types to trust beyond :data:`~unitrefine.search.estimators.TRUSTED_TYPES`, explicitly chosen by the user.
    tracking_uri : str or None
        Registry store for ``models:/`` URIs (None: the project's ``mlruns/mlflow.db``).
    workdir : Path
        Where a registered model's folder is downloaded.

    Returns
    -------
    LoadedModel

    Raises
    ------
    UnitRefineError
        Missing folder or registry entry, untrusted types (named), or a file that is not a usable pipeline.
    """
    from unitrefine.export.folder import load_model_folder
    from unitrefine.tracking.registry import download_model_folder, is_registry_uri

    if is_registry_uri(spec):
        if tracking_uri is None:
            from unitrefine.config import PROJECT_ROOT
            from unitrefine.tracking.tracker import default_tracking_uri

            tracking_uri = default_tracking_uri(PROJECT_ROOT)
        folder = download_model_folder(spec, tracking_uri, workdir)
    else:
        folder = input_path(spec, "model")
    extra = sorted(set(trust) - set(TRUSTED_TYPES))
    if extra:
        log.warning("Trusting types beyond the reviewed list, as asked (trust=): %s", extra)
    pipeline, info = load_model_folder(folder, trusted=[*TRUSTED_TYPES, *extra])
    if not all(hasattr(pipeline, a) for a in ("feature_names_in_", "predict_proba", "classes_")):
        raise UnitRefineError(
            f"Model {spec}: {type(pipeline).__name__} is not a fitted pipeline trained on a metrics DataFrame "
            "(it needs feature_names_in_, classes_ and predict_proba)."
        )
    return LoadedModel(spec, pipeline, info, [str(f) for f in pipeline.feature_names_in_],
                       _class_names(pipeline, info, spec))


def model_folders(specs: list[str]) -> list[Path]:
    """The local model folders of ``model=`` (registered models are left out), found as :func:`load_model` finds
    them.

    Raises
    ------
    UnitRefineError
        A relative path found neither in the working directory nor in the project.
    """
    from unitrefine.tracking.registry import is_registry_uri

    paths = [input_path(spec, "model") for spec in specs if not is_registry_uri(spec)]
    return [p.parent if p.is_file() else p for p in paths]


def load_models(specs: list[str], trust: list[str], tracking_uri: str | None) -> list[LoadedModel]:
    """Load each model of ``specs`` with :func:`load_model`; registered models are downloaded to a temporary folder.

    Raises
    ------
    UnitRefineError
        As :func:`load_model`.
    """
    with tempfile.TemporaryDirectory(prefix="unitrefine-predict-") as tmp:
        return [load_model(spec, trust, tracking_uri, Path(tmp) / f"model{i}") for i, spec in enumerate(specs)]
