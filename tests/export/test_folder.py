"""Loading model folders (:func:`unitrefine.export.folder.load_model_folder`,
:func:`unitrefine.export.folder.load_skops`): damaged files and paths a user may give are clear errors naming the
file, and nothing is written or changed."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _tiny_models import fit_model, metrics_frame
from conftest import snapshot, write_recording

from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import INFO_FILE, MODEL_FILE, load_model_folder, load_skops


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny three-class model folder (read-only: tests that damage it work on a copy)."""
    return fit_model(tmp_path_factory.mktemp("export") / "model", "three_class")


def copy_model(model: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in (MODEL_FILE, INFO_FILE):
        (dest / name).write_bytes((model / name).read_bytes())
    return dest


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_model_file_is_an_error_naming_it(tmp_path: Path, model: Path, keep: float) -> None:
    folder = copy_model(model, tmp_path / "copy")
    data = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(data[: int(len(data) * keep)])
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        load_model_folder(folder)
    message = str(excinfo.value)
    assert f"The model file {folder / MODEL_FILE} could not be read" in message
    assert "damaged or not a skops file" in message and "Copy or export the model folder again" in message
    assert snapshot(tmp_path) == before


def test_a_damaged_entry_inside_the_model_file_is_an_error_naming_it(tmp_path: Path, model: Path) -> None:
    """A zip whose schema.json is not JSON (skops raises JSONDecodeError) or is missing (KeyError)."""
    for name, content in (("bad_schema.skops", "{not json"), ("no_schema.skops", None)):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("schema.json" if content is not None else "other.txt", content or "x")
        before = snapshot(tmp_path)
        with pytest.raises(UnitRefineError, match=re.escape(f"The model file {path} could not be read: it is damaged")):
            load_skops(path)
        assert snapshot(tmp_path) == before


def test_the_model_file_itself_loads_its_folder(tmp_path: Path, model: Path) -> None:
    """model=<folder>/best_model.skops is the folder's model (with the model_info.json beside it)."""
    X = metrics_frame(write_recording(tmp_path / "new", n_units=20, seed=3)["metrics"]).drop(columns="cluster_id")
    by_folder, info = load_model_folder(model)
    by_file, info_file = load_model_folder(model / MODEL_FILE)
    assert info_file == info
    X = X[list(by_folder.feature_names_in_)].astype("float32")
    np.testing.assert_array_equal(by_file.predict_proba(X), by_folder.predict_proba(X))


def test_a_file_that_is_not_a_model_file_says_what_to_give(tmp_path: Path, model: Path) -> None:
    folder = copy_model(model, tmp_path / "copy")
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        load_model_folder(folder / INFO_FILE)
    assert f"Model {folder / INFO_FILE} is a file, not a model folder" in str(excinfo.value)
    assert f"the folder that holds {MODEL_FILE} and {INFO_FILE}" in str(excinfo.value)
    (folder / INFO_FILE).unlink()
    with pytest.raises(UnitRefineError, match=re.escape(f"Model folder {folder} has no {INFO_FILE}")):
        load_model_folder(folder / MODEL_FILE)
    assert snapshot(tmp_path) == {k: v for k, v in before.items() if k != f"copy/{INFO_FILE}"}


def test_the_recorded_versions_are_the_imported_ones_whatever_distribution_provides_them() -> None:
    import numpy
    import sklearn
    import xgboost  # here from the xgboost-cpu distribution

    from unitrefine.export.folder import package_versions

    versions = package_versions()
    assert (versions["xgboost"], versions["scikit-learn"], versions["numpy"]) == (
        xgboost.__version__, sklearn.__version__, numpy.__version__)
