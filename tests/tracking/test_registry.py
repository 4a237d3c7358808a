"""Registered models for prediction (:mod:`unitrefine.tracking.registry`): ``models:/`` URIs parsed, versions and
aliases looked up and their model folders downloaded from a real SQLite registry; what the registry does not hold is
an error naming the URI and the store, raised before anything is downloaded or created."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from unitrefine.errors import UnitRefineError
from unitrefine.tracking.lookups import MODEL_FOLDER, StoreMissing
from unitrefine.tracking.registry import download_model_folder, is_registry_uri, parse_uri, registered_version

#: The model folders the fixture uploads (by relative path), one per training run.
FOLDERS = {
    "first": {"best_model.skops": b"first model " * 50, "model_info.json": b'{"label_conversion": {"0": "a"}}'},
    "second": {"best_model.skops": b"second model " * 70, "model_info.json": b'{"label_conversion": {"0": "b"}}',
               "plots/roc.csv": b"fpr,tpr\n0,0\n1,1\n"},
}


@dataclass(frozen=True)
class Registry:
    uri: str
    runs: dict[str, str]  # "first", "second", "bare" (no model folder) -> run id


def listing(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def files(folder: Path) -> dict[str, bytes]:
    """The files under ``folder`` by relative path, with their bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Model ``mouse_v1``: version 1 (run first, alias champion), 2 (run second, alias challenger), 3 (run bare,
    whose artifacts hold no model folder, alias bare)."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("registry", artifact_location=(root / "artifacts").as_uri())
    runs = {}
    for name in ("first", "second", "bare"):
        run = client.create_run(exp, run_name=name)
        runs[name] = run.info.run_id
        for path, data in FOLDERS.get(name, {}).items():
            (root / name / path).parent.mkdir(parents=True, exist_ok=True)
            (root / name / path).write_bytes(data)
        if name in FOLDERS:
            client.log_artifacts(run.info.run_id, str(root / name), MODEL_FOLDER)
        client.set_terminated(run.info.run_id, "FINISHED")
    client.create_registered_model("mouse_v1")
    for name, alias in (("first", "champion"), ("second", "challenger"), ("bare", "bare")):
        source = f"{client.get_run(runs[name]).info.artifact_uri}/{MODEL_FOLDER}"
        version = client.create_model_version("mouse_v1", source, run_id=runs[name]).version
        client.set_registered_model_alias("mouse_v1", alias, version)
    return Registry(uri, runs)


@pytest.mark.parametrize("spec, expected", [("models:/mouse_v1@champion", True), ("models:/mouse_v1/3", True),
                                            ("models/mouse_v1", False), ("runs:/abc/model", False),
                                            ("/data/models:/x", False)])
def test_is_registry_uri(spec: str, expected: bool) -> None:
    assert is_registry_uri(spec) is expected


@pytest.mark.parametrize("spec, parts", [("models:/mouse_v1@champion", ("mouse_v1", "champion", None)),
                                         ("models:/mouse v1@my-alias", ("mouse v1", "my-alias", None)),
                                         ("models:/mouse_v1/12", ("mouse_v1", None, "12"))])
def test_parse_uri(spec: str, parts: tuple[str, str | None, str | None]) -> None:
    assert parse_uri(spec) == parts


@pytest.mark.parametrize("spec", ["models:/mouse_v1", "models:/mouse_v1/latest", "models:/mouse_v1@",
                                  "models:/a/b/1", "models:/mouse_v1/1@champion", "models:/@champion"])
def test_a_malformed_uri_is_named_with_the_forms_to_write(spec: str) -> None:
    with pytest.raises(UnitRefineError) as excinfo:
        parse_uri(spec)
    assert str(excinfo.value) == (
        f"'{spec}' is not a registered-model URI: write models:/<name>@<alias> (e.g. models:/mouse_v1@champion) "
        "or models:/<name>/<version>."
    )


def test_registered_version_by_alias_and_by_number(registry: Registry) -> None:
    runs = registry.runs
    assert registered_version(registry.uri, "models:/mouse_v1@champion") == ("1", runs["first"])
    assert registered_version(registry.uri, "models:/mouse_v1@challenger") == ("2", runs["second"])
    assert registered_version(registry.uri, "models:/mouse_v1/3") == ("3", runs["bare"])


@pytest.mark.parametrize("spec, reason", [
    ("models:/mouse_v1@gold", "Registered model alias gold not found."),
    ("models:/mouse_v1/9", "Model Version (name=mouse_v1, version=9) not found"),
    ("models:/rat_v2@champion", "Registered Model with name=rat_v2 not found"),
])
def test_what_the_registry_does_not_hold_is_named_with_the_store(registry: Registry, spec: str, reason: str) -> None:
    with pytest.raises(UnitRefineError) as excinfo:
        registered_version(registry.uri, spec)
    assert str(excinfo.value) == f"{spec} is not in the registry at {registry.uri} ({reason})."


def test_a_missing_store_is_not_created_and_a_malformed_uri_is_told_first(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(StoreMissing, match=f"No MLflow store at {tmp_path / 'mlflow.db'}"):
        registered_version(uri, "models:/mouse_v1@champion")
    with pytest.raises(UnitRefineError, match="'models:/mouse_v1' is not a registered-model URI"):
        registered_version(uri, "models:/mouse_v1")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("spec, run", [("models:/mouse_v1@champion", "first"),
                                       ("models:/mouse_v1@challenger", "second"), ("models:/mouse_v1/1", "first")])
def test_download_gives_the_model_folder_of_that_version(
    registry: Registry, tmp_path: Path, spec: str, run: str
) -> None:
    path = download_model_folder(spec, registry.uri, tmp_path / "download")
    assert path == tmp_path / "download" / MODEL_FOLDER
    assert files(path) == FOLDERS[run]


def test_download_from_a_missing_store_names_it_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "mlruns" / "mlflow.db"
    with pytest.raises(UnitRefineError) as excinfo:
        download_model_folder("models:/mouse_v1@champion", f"sqlite:///{db}", tmp_path / "download")
    assert str(excinfo.value) == (f"No MLflow store at {db} (for models:/mouse_v1@champion). Train a model first, "
                                  "or set tracking_uri=... to your store.")
    assert listing(tmp_path) == []


def test_download_of_an_unknown_alias_names_it_and_creates_nothing(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(UnitRefineError) as excinfo:
        download_model_folder("models:/mouse_v1@gold", registry.uri, tmp_path / "download")
    message = str(excinfo.value)
    assert message.startswith(f"models:/mouse_v1@gold is not in the registry at {registry.uri} "
                              "(Registered model alias gold not found.).")
    assert "'challenger' when it passes the gate" in message and "`python -m unitrefine.promote`" in message
    assert listing(tmp_path) == []


def test_download_of_a_version_without_a_model_folder_names_version_and_run(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(UnitRefineError) as excinfo:
        download_model_folder("models:/mouse_v1@bare", registry.uri, tmp_path / "download")
    assert str(excinfo.value).startswith(
        f"models:/mouse_v1@bare (version 3, run {registry.runs['bare']}) has no 'model_folder' artifacts "
    )
    assert "Download its model folder and pass the folder instead." in str(excinfo.value)
    assert listing(tmp_path) == ["download"]  # the destination made for the download, left empty


def test_a_malformed_uri_is_told_before_the_store_is_looked_at(tmp_path: Path) -> None:
    with pytest.raises(UnitRefineError, match="'models:/mouse_v1/latest' is not a registered-model URI"):
        download_model_folder("models:/mouse_v1/latest", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "download")
    assert listing(tmp_path) == []
