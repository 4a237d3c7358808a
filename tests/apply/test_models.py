"""Loading curation models for ``predict``/``suggest`` (:mod:`unitrefine.apply.models`), called directly on a copy of
a model folder trained once per session (``synthetic_models``). Folder-format errors shared with
:func:`unitrefine.export.folder.load_model_folder` (a truncated file, no model_info.json, two .skops files) are in
tests/export/test_folder.py and tests/test_bad_inputs.py."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import snapshot

from unitrefine.apply.models import LoadedModel, load_model, load_models, model_folders
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import INFO_FILE, MODEL_FILE, dump_model


@pytest.fixture
def folder(tmp_path: Path, synthetic_models: dict[str, Path]) -> Path:
    """A copy of the session's three-class model folder, under tmp_path/model."""
    return shutil.copytree(synthetic_models["three_class"], tmp_path / "model")


def _info(folder: Path) -> dict:
    return json.loads((folder / INFO_FILE).read_text())


def _edit_info(folder: Path, **changes: object) -> None:
    info = {k: v for k, v in _info(folder).items() if k not in changes}
    info.update({k: v for k, v in changes.items() if v is not None})
    (folder / INFO_FILE).write_text(json.dumps(info))


def test_a_model_folder_loads_with_its_features_and_class_names(folder: Path) -> None:
    info = _info(folder)
    model = load_model(str(folder), [], None, folder.parent / "unused")
    assert model.source == str(folder) and model.info == info
    assert model.features == info["features"] == list(model.pipeline.feature_names_in_)
    assert model.classes == ["good", "mua", "noise"] == info["task"]["classes"]
    assert model.required_metrics() == info["features"]  # current names already
    assert not (folder.parent / "unused").exists()


def test_the_model_file_from_the_working_directory_is_its_folder(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """model=model/best_model.skops (relative): the same model; model_folders gives the folder, not the file, and
    leaves registered models out."""
    monkeypatch.chdir(folder.parent)
    by_file = load_model(f"model/{MODEL_FILE}", [], None, folder.parent / "unused")
    by_folder = load_model(str(folder), [], None, folder.parent / "unused")
    assert (by_file.features, by_file.classes, by_file.info) == (by_folder.features, by_folder.classes, by_folder.info)
    values = np.random.default_rng(1).uniform(0.1, 5.0, (4, len(by_file.features))).astype("float32")
    X = pd.DataFrame(values, columns=by_file.features)
    np.testing.assert_array_equal(by_file.pipeline.predict_proba(X), by_folder.pipeline.predict_proba(X))
    assert model_folders([f"model/{MODEL_FILE}", "models:/smoke@champion", "model"]) == [folder, folder]


def test_a_model_file_damaged_inside_is_refused_naming_it(folder: Path) -> None:
    """Bytes of a compressed array entry flipped (a bad copy): the zip opens, the entry does not decompress."""
    path = folder / MODEL_FILE
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        entry = max((i for i in zf.infolist() if i.filename.endswith(".npy")), key=lambda i: i.compress_size)
    name_len, extra_len = struct.unpack("<HH", data[entry.header_offset + 26: entry.header_offset + 30])
    middle = entry.header_offset + 30 + name_len + extra_len + entry.compress_size // 2
    data[middle: middle + 16] = bytes(b ^ 0xFF for b in data[middle: middle + 16])
    path.write_bytes(bytes(data))
    before = snapshot(folder.parent)
    with pytest.raises(UnitRefineError) as excinfo:
        load_model(str(folder), [], None, folder.parent / "unused")
    message = str(excinfo.value)
    assert message.startswith(f"The model file {path} could not be ")
    assert "it is damaged or not a skops file" in message and "Copy or export the model folder again." in message
    assert snapshot(folder.parent) == before


def test_a_model_file_that_is_not_a_fitted_classifier_is_refused(folder: Path) -> None:
    from sklearn.preprocessing import StandardScaler

    (folder / MODEL_FILE).unlink()
    dump_model(StandardScaler().fit(np.arange(6.0).reshape(3, 2)), folder)
    before = snapshot(folder.parent)
    with pytest.raises(UnitRefineError) as excinfo:
        load_model(str(folder), [], None, folder.parent / "unused")
    assert str(excinfo.value) == (f"Model {folder}: StandardScaler is not a fitted pipeline trained on a metrics "
                                  "DataFrame (it needs feature_names_in_, classes_ and predict_proba).")
    assert snapshot(folder.parent) == before


def test_class_names_come_from_label_conversion_or_are_the_codes(folder: Path) -> None:
    """A label_conversion that misses a class is an error naming model_info.json and the class; none at all (a bare
    SpikeInterface folder) gives the class codes."""
    _edit_info(folder, label_conversion={"0": "good", "1": "mua"})
    before = snapshot(folder.parent)
    with pytest.raises(UnitRefineError) as excinfo:
        load_model(str(folder), [], None, folder.parent / "unused")
    assert str(excinfo.value) == (f"Model {folder}: {INFO_FILE} label_conversion {{'0': 'good', '1': 'mua'}} does "
                                  "not name the model's classes ['2'].")
    assert snapshot(folder.parent) == before
    _edit_info(folder, label_conversion=None)
    assert load_model(str(folder), [], None, folder.parent / "unused").classes == ["0", "1", "2"]


def test_types_trusted_beyond_the_reviewed_list_are_logged(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="unitrefine.apply.models"):
        models = load_models([str(folder), str(folder / MODEL_FILE)], ["numpy.dtype", "my.Custom"], None)
    assert [m.source for m in models] == [str(folder), str(folder / MODEL_FILE)]
    assert "Trusting types beyond the reviewed list, as asked (trust=): ['my.Custom']" in caplog.text
    assert "numpy.dtype" not in caplog.text  # already on the list: not reported


def test_required_metrics_are_current_names_once_each() -> None:
    model = LoadedModel("m", None, {}, ["peak_to_valley", "snr", "peak_to_trough_duration", "half_width"], ["a"])
    assert model.required_metrics() == ["peak_to_trough_duration", "snr", "trough_half_width"]
