"""The run's model folder as an MLflow model (:mod:`unitrefine.tracking.mlmodel`), checked by reading back with
MLflow's own APIs from a real SQLite store: the ``MLmodel`` MLflow loads, the environment files, the registered
version, and the same predictions from MLflow's loaders as from the folder."""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version as installed
from pathlib import Path

import mlflow
import mlflow.artifacts
import numpy as np
import pandas as pd
import pytest
import yaml
from _tiny_models import fit_model, metrics_frame
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import INFO_FILE, MODEL_FILE, load_model_folder
from unitrefine.search.estimators import TRUSTED_TYPES
from unitrefine.tracking.lookups import MODEL_FOLDER
from unitrefine.tracking.mlmodel import log_model_folder, register, write_mlmodel
from unitrefine.tracking.uploads import upload_folder

REQUIREMENTS = [f"scikit-learn=={installed('scikit-learn')}", f"skops=={installed('skops')}"]
#: What MLflow's model files add to the folder's MODEL_FILE and INFO_FILE.
MLFLOW_FILES = {"MLmodel", "conda.yaml", "python_env.yaml", "requirements.txt", "input_example.json",
                "serving_input_example.json"}


@dataclass(frozen=True)
class Logged:
    uri: str
    client: MlflowClient
    experiment_id: str
    folder: Path  # a tiny three-class model folder (read-only)
    X: pd.DataFrame  # its training features, float32 as SpikeInterface feeds them
    run_id: str  # a run whose model folder log_model_folder made an MLflow model, registered as mouse_v1 version 1
    version: str | None


def tree(folder: Path) -> dict[str, bytes]:
    """The files under ``folder`` by relative path, with their bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logged:
    root = tmp_path_factory.mktemp("mlmodel")
    folder = fit_model(root / "model", "three_class")
    X = metrics_frame(str(root / "model_train" / "quality_metrics.csv")).drop(columns="cluster_id").astype("float32")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("mlmodel", artifact_location=(root / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    version = log_model_folder(client, run_id, folder, X.head(3), list(TRUSTED_TYPES), REQUIREMENTS, "mouse_v1")
    return Logged(uri, client, exp, folder, X, run_id, version)


@pytest.fixture
def tracking_uri(logged: Logged, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MLflow's loaders pointed at the module's store (and allowed to read a model file), put back afterwards.

    ``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in the environment: monkeypatch restores it.
    """
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.uri)
    previous = utils._tracking_uri  # None unless set: get_tracking_uri() would give the default instead
    mlflow.set_tracking_uri(logged.uri)
    yield logged.uri
    mlflow.set_tracking_uri(previous)


def downloaded(logged: Logged, run_id: str, dest: Path) -> Path:
    """The run's model folder artifacts, downloaded with MLflow."""
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MODEL_FOLDER, dst_path=str(dest),
                                                    tracking_uri=logged.uri))


def test_the_run_holds_the_folder_once_with_mlflow_s_files_beside_it(logged: Logged, tmp_path: Path) -> None:
    stored = tree(downloaded(logged, logged.run_id, tmp_path))
    assert set(stored) == {MODEL_FILE, INFO_FILE} | MLFLOW_FILES
    assert {name: stored[name] for name in (MODEL_FILE, INFO_FILE)} == tree(logged.folder)


def test_the_registered_version_is_the_run_s_model_folder(logged: Logged) -> None:
    assert logged.version == "1"
    mv = logged.client.get_model_version("mouse_v1", "1")
    assert mv.run_id == logged.run_id
    assert mv.source == f"{logged.client.get_run(logged.run_id).info.artifact_uri}/{MODEL_FOLDER}"


def test_mlflow_reads_the_flavours_signature_and_input_example(logged: Logged, tmp_path: Path) -> None:
    local = downloaded(logged, logged.run_id, tmp_path)
    model = Model.load(str(local))
    sklearn_flavor = model.flavors["sklearn"]
    assert (sklearn_flavor["pickled_model"], sklearn_flavor["serialization_format"]) == (MODEL_FILE, "skops")
    assert sklearn_flavor["skops_trusted_types"] == list(TRUSTED_TYPES)
    assert sklearn_flavor["sklearn_version"] == installed("scikit-learn")
    pyfunc = model.flavors["python_function"]
    assert (pyfunc["loader_module"], pyfunc["model_path"], pyfunc["predict_fn"]) == (
        "mlflow.sklearn", MODEL_FILE, "predict_proba")
    assert (model.run_id, model.artifact_path) == (logged.run_id, MODEL_FOLDER)
    assert model.model_size_bytes == sum(len(data) for data in tree(logged.folder).values())

    inputs = model.signature.inputs
    example = logged.X.head(3)
    assert inputs.input_names() == list(logged.X.columns)
    assert [c.required for c in inputs.inputs] == [not example[c].isna().any() for c in example.columns]
    [output] = model.signature.outputs.inputs
    assert (output.shape, str(output.type)) == ((-1, 3), "float64")  # three classes in model_info.json
    pd.testing.assert_frame_equal(model.load_input_example(str(local)), example)


def test_the_environment_files_pin_the_requirements_and_mlflow(logged: Logged, tmp_path: Path) -> None:
    local = downloaded(logged, logged.run_id, tmp_path)
    pins = [f"mlflow=={mlflow.__version__}", *REQUIREMENTS]
    assert (local / "requirements.txt").read_text().split() == pins
    conda = yaml.safe_load((local / "conda.yaml").read_text())
    assert [d["pip"] for d in conda["dependencies"] if isinstance(d, dict)] == [pins]
    assert f"python={platform.python_version()}" in conda["dependencies"]
    assert yaml.safe_load((local / "python_env.yaml").read_text())["python"] == platform.python_version()


def test_mlflow_s_loaders_predict_what_the_folder_predicts(logged: Logged, tracking_uri: str) -> None:
    # A run of its own: loading models:/ from a local store writes MLflow's registered_model_meta beside MLmodel.
    run_id = logged.client.create_run(logged.experiment_id).info.run_id
    version = log_model_folder(logged.client, run_id, logged.folder, logged.X.head(3), list(TRUSTED_TYPES),
                               REQUIREMENTS, "loaded_model")
    exported, _ = load_model_folder(logged.folder)
    expected = exported.predict_proba(logged.X)
    assert expected.shape == (len(logged.X), 3)
    by_version = mlflow.sklearn.load_model(f"models:/loaded_model/{version}")
    np.testing.assert_array_equal(by_version.predict_proba(logged.X), expected)
    pyfunc = mlflow.pyfunc.load_model(f"runs:/{run_id}/{MODEL_FOLDER}")
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(logged.X)), expected)


def test_the_folder_is_uploaded_only_when_the_run_does_not_hold_it_already(
    logged: Logged, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = logged.client

    def log_model(run_id: str) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="unitrefine.tracking.uploads"):
            assert log_model_folder(client, run_id, logged.folder, logged.X.head(3), list(TRUSTED_TYPES),
                                    REQUIREMENTS, None) is None
        return [r.getMessage().split(" (")[0] for r in caplog.records if r.name == "unitrefine.tracking.uploads"]

    registered = [m.name for m in client.search_registered_models()]
    fresh = client.create_run(logged.experiment_id).info.run_id
    assert log_model(fresh) == ["Uploading 2 files", "Uploaded 2 files"]

    uploaded = client.create_run(logged.experiment_id).info.run_id
    upload_folder(client, uploaded, logged.folder, MODEL_FOLDER)
    assert log_model(uploaded) == []

    stale = client.create_run(logged.experiment_id).info.run_id  # holds a model file of another size
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / MODEL_FILE).write_bytes((logged.folder / MODEL_FILE).read_bytes()[:100])
    upload_folder(client, stale, tmp_path / "stale", MODEL_FOLDER)
    assert log_model(stale) == ["Uploading 2 files", "Uploaded 2 files"]

    for i, run_id in enumerate((fresh, uploaded, stale)):
        stored = tree(downloaded(logged, run_id, tmp_path / f"download{i}"))
        assert set(stored) == {MODEL_FILE, INFO_FILE} | MLFLOW_FILES
        assert stored[MODEL_FILE] == (logged.folder / MODEL_FILE).read_bytes()
    assert [m.name for m in client.search_registered_models()] == registered  # nothing registered


@pytest.mark.parametrize("extra, holds", [(["old_model.skops"], ["best_model.skops", "old_model.skops"]), (None, [])])
def test_a_folder_without_exactly_one_skops_file_is_refused_before_anything_is_logged(
    logged: Logged, tmp_path: Path, extra: list[str] | None, holds: list[str]
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / INFO_FILE).write_bytes((logged.folder / INFO_FILE).read_bytes())
    for name in [MODEL_FILE, *extra] if extra is not None else []:
        (folder / name).write_bytes((logged.folder / MODEL_FILE).read_bytes())
    before = tree(tmp_path)
    run_id = logged.client.create_run(logged.experiment_id).info.run_id
    with pytest.raises(UnitRefineError) as excinfo:
        log_model_folder(logged.client, run_id, folder, logged.X.head(3), list(TRUSTED_TYPES), REQUIREMENTS,
                         "refused_model")
    assert str(excinfo.value) == f"Model folder {folder} must hold exactly one .skops file; it holds {holds}."
    assert logged.client.list_artifacts(run_id) == []
    assert logged.client.search_registered_models("name = 'refused_model'") == []
    assert tree(tmp_path) == before


def test_write_mlmodel_writes_only_into_its_destination(logged: Logged, tmp_path: Path) -> None:
    before = tree(logged.folder)
    write_mlmodel(tmp_path, logged.folder, MODEL_FILE, logged.X.head(2), ["numpy.dtype"], REQUIREMENTS, None)
    assert {p.name for p in tmp_path.iterdir()} == MLFLOW_FILES
    model = Model.load(str(tmp_path))
    assert (model.run_id, model.flavors["sklearn"]["skops_trusted_types"]) == (None, ["numpy.dtype"])
    assert len(model.load_input_example(str(tmp_path))) == 2
    assert tree(logged.folder) == before


def test_register_creates_the_model_once_and_numbers_the_versions(logged: Logged) -> None:
    client = logged.client
    assert [register(client, logged.run_id, "registered_twice") for _ in range(2)] == ["1", "2"]
    versions = client.search_model_versions("name = 'registered_twice'")
    source = f"{client.get_run(logged.run_id).info.artifact_uri}/{MODEL_FOLDER}"
    assert sorted((str(v.version), v.run_id, v.source) for v in versions) == [
        ("1", logged.run_id, source), ("2", logged.run_id, source)]
    with pytest.raises(MlflowException, match="Names cannot contain '/' or ':'"):
        register(client, logged.run_id, "mouse/v1")  # not "already exists": MLflow's error goes through
