"""``model_info.json``: the model folder's record of what a model is, how it was made and how well it does.

SpikeInterface's ``load_model`` reads three of its keys (``metric_params``, ``requirements``,
``label_conversion``); the rest is unitrefine's audit trail (configuration, ensemble, threshold, scores,
training data, stage times), read by ``predict``, ``promote``, warm starts and the model card. The record is
built in one place (:class:`ModelInfo`) and written and read here only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unitrefine.errors import UnitRefineError

INFO_FILE = "model_info.json"


@dataclass(frozen=True)
class TrainedOn:
    """The units the exported model was fitted on."""

    recordings: list[str]
    class_counts: dict[str, int]
    dataset_fingerprint: str


@dataclass(frozen=True)
class ModelInfo:
    """Everything ``model_info.json`` holds, one typed field per key.

    The first three fields are SpikeInterface's folder contract; the rest describe the run.
    """

    metric_params: dict[str, Any]
    requirements: dict[str, str]
    label_conversion: dict[str, str]
    task: dict[str, Any]
    features: list[str]
    best_configuration: dict[str, Any]
    ensemble: list[dict[str, Any]] | None
    threshold: dict[str, Any] | None
    calibration: str | None
    cv: dict[str, Any]
    holdout: dict[str, Any] | None
    estimate_new_recordings: dict[str, Any]
    trained_on: TrainedOn
    unit_limits: dict[str, int]
    seed: int
    search: dict[str, Any]
    mlflow: dict[str, str | None]
    trusted_types: list[str]
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in field order."""
        return asdict(self)

    def write(self, folder: Path) -> Path:
        """Write ``model_info.json`` into ``folder``."""
        path = folder / INFO_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
        return path


def read_model_info(folder: Path) -> dict[str, Any]:
    """The ``model_info.json`` of a model folder (ours, of any version, or SpikeInterface's) as a mapping.

    Raises
    ------
    UnitRefineError
        If the file is missing or not a JSON object; the message names the file.
    """
    path = folder / INFO_FILE
    if not path.is_file():
        raise UnitRefineError(f"Model folder {folder} has no {INFO_FILE}; it is needed to know the labels and metrics.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnitRefineError(f"{path} is not valid JSON ({exc}). Re-export the model folder.") from None
    if not isinstance(info, dict):
        raise UnitRefineError(f"{path} does not hold a JSON object. Re-export the model folder.")
    return info
