"""``model_info.json`` (:mod:`unitrefine.export.model_info`): written from a :class:`ModelInfo` and read back as it
was; folders of older versions (and SpikeInterface's) still read; a missing or unreadable file named. Loading a
whole folder through ``predict`` is in tests/test_bad_inputs.py (no file, not JSON)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import snapshot

from unitrefine.errors import UnitRefineError
from unitrefine.export.model_info import INFO_FILE, ModelInfo, TrainedOn, read_model_info


def tiny_record(**changes: Any) -> ModelInfo:
    fields: dict[str, Any] = dict(
        metric_params={"quality_metric_params": {"metric_names": ["snr"]}},
        requirements={"spikeinterface": "0.105.3"},
        label_conversion={"0": "other", "1": "good"},
        task={"name": "sua_vs_all", "classes": ["other", "good"], "mapping": {"good": "good", "unsorted": None}},
        features=["snr", "firing_rate"],
        best_configuration={"classifier": "logistic_regression", "logistic_regression.C": 0.5},
        ensemble=None, threshold={"value": 0.4}, calibration=None,
        cv={"scoring": "balanced_accuracy", "best_score": 0.8, "n_folds": 3, "grouped_by": None},
        holdout=None,
        estimate_new_recordings={"balanced_accuracy": 0.75, "optimistic": True},
        trained_on=TrainedOn(["recA", "recB"], {"other": 18, "good": 12}, "ab" * 32),
        unit_limits={}, seed=7,
        search={"n_trials": 4, "n_jobs": 1, "timeout_s": None, "stopped_by_timeout": False},
        mlflow={"tracking_uri": Path("/runs/mlflow.db"), "run_id": None},  # a Path is written as its text
        trusted_types=["numpy.dtype"],
    )
    fields.update(changes)
    return ModelInfo(**fields)


def test_a_record_reads_back_as_written_in_field_order(tmp_path: Path) -> None:
    record = tiny_record(stage_seconds={"search": 1.5})
    path = record.write(tmp_path)
    assert path == tmp_path / INFO_FILE and [p.name for p in tmp_path.iterdir()] == [INFO_FILE]
    info = read_model_info(tmp_path)
    assert list(info) == [f.name for f in dataclasses.fields(ModelInfo)]
    assert info["trained_on"] == {"recordings": ["recA", "recB"], "class_counts": {"other": 18, "good": 12},
                                  "dataset_fingerprint": "ab" * 32}
    assert info["mlflow"] == {"tracking_uri": str(Path("/runs/mlflow.db")), "run_id": None}
    assert info["task"]["mapping"] == {"good": "good", "unsorted": None} and info["stage_seconds"] == {"search": 1.5}
    assert info == {**record.to_dict(), "mlflow": info["mlflow"]}
    assert tiny_record().to_dict()["stage_seconds"] == {}  # optional: records made before stages were timed


def test_a_trained_folders_record_is_a_model_info_and_writes_back_identically(
    tmp_path: Path, synthetic_models: dict[str, Path]
) -> None:
    folder = synthetic_models["three_class"]
    info = read_model_info(folder)  # only read
    assert list(info) == [f.name for f in dataclasses.fields(ModelInfo)]
    record = ModelInfo(**{**info, "trained_on": TrainedOn(**info["trained_on"])})
    record.write(tmp_path)
    assert (tmp_path / INFO_FILE).read_bytes() == (folder / INFO_FILE).read_bytes()


@pytest.mark.parametrize("content", [
    # SpikeInterface's train_model: the three keys its load_model reads.
    {"metric_params": {}, "requirements": {"spikeinterface": "0.102.0"},
     "label_conversion": {"0": "noise", "1": "sua"}},
    # An older unitrefine folder: no stage times, no trusted types, no estimate, and keys since dropped.
    {"label_conversion": {"0": "good"}, "task": {"name": "three_class"}, "cv": {"best_score": 0.9}, "legacy": [1, 2]},
])
def test_older_and_spikeinterface_folders_are_read_as_they_are(tmp_path: Path, content: dict[str, Any]) -> None:
    (tmp_path / INFO_FILE).write_text(json.dumps(content))
    before = snapshot(tmp_path)
    assert read_model_info(tmp_path) == content
    assert snapshot(tmp_path) == before


def test_a_missing_record_names_the_folder_and_the_file(tmp_path: Path) -> None:
    (tmp_path / "model" / INFO_FILE).mkdir(parents=True)  # a folder where the file should be
    before = snapshot(tmp_path)
    for folder in (tmp_path / "model", tmp_path / "absent"):
        with pytest.raises(UnitRefineError) as excinfo:
            read_model_info(folder)
        assert str(excinfo.value) == (f"Model folder {folder} has no {INFO_FILE}; it is needed to know the labels "
                                      "and metrics.")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("content", "message"), [
    (b'["good", "mua"]', "does not hold a JSON object. Re-export the model folder."),
    (b'"model"', "does not hold a JSON object. Re-export the model folder."),
    (b'{"label_conversion": {"0": "caf\xe9"}}', "is not valid JSON ("),  # Latin-1, not UTF-8
    (b'{"seed": 7,', "is not valid JSON ("),  # cut short
])
def test_an_unreadable_record_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / INFO_FILE).write_bytes(content)
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        read_model_info(tmp_path)
    assert str(excinfo.value).startswith(f"{tmp_path / INFO_FILE} {message}")
    assert str(excinfo.value).endswith("Re-export the model folder.")
    assert snapshot(tmp_path) == before
