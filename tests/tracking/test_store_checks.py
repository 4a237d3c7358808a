"""Checks before any work (:mod:`unitrefine.tracking.store_checks`): the local file or folder an MLflow store and
an artifact location write, found without opening anything, and names MLflow would refuse, checked against a real
SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from unitrefine.errors import UnitRefineError
from unitrefine.tracking.store_checks import (
    experiment_name_problem,
    local_artifacts,
    local_store,
    model_name_problem,
)


def listing(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MlflowClient]:
    """A real SQLite store opened through a relative URI (``sqlite:///rel/store.db``) from its root folder."""
    root = tmp_path_factory.mktemp("store_checks")
    (root / "rel").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        MlflowClient("sqlite:///rel/store.db").search_experiments()
    # The rest through the absolute URI: MLflow opens a client's registry later, from the working folder of then.
    return root, MlflowClient(f"sqlite:///{root / 'rel' / 'store.db'}")


def test_local_store_names_the_file_mlflow_opened_for_a_relative_sqlite_uri(
    store: tuple[Path, MlflowClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = store
    monkeypatch.chdir(root)
    path, is_folder = local_store("sqlite:///rel/store.db")
    assert (path, is_folder) == (root.resolve() / "rel" / "store.db", False)
    assert path.is_file()  # the file MLflow created when it opened the store


def test_local_store_of_absolute_sqlite_folder_and_file_uris(tmp_path: Path) -> None:
    db = tmp_path / "a b" / "mlflow.db"
    assert local_store(f"sqlite:///{db}") == (db.resolve(), False)
    assert local_store(str(tmp_path / "mlruns")) == ((tmp_path / "mlruns").resolve(), True)
    assert local_store((tmp_path / "x" / ".." / "runs").as_uri()) == ((tmp_path / "runs").resolve(), True)
    assert listing(tmp_path) == []  # nothing made: not the database, not its folder


def test_local_store_of_a_home_relative_folder_expands_the_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert local_store("~/mlruns") == ((tmp_path / "mlruns").resolve(), True)


@pytest.mark.parametrize(
    "uri", ["sqlite://", "sqlite:///:memory:", "http://127.0.0.1:5000", "https://mlflow.example.org",
            "postgresql://user@host/db", "mysql://user@host/db"]
)
def test_servers_and_in_memory_databases_have_no_local_store(uri: str) -> None:
    assert local_store(uri) is None


@pytest.mark.parametrize("uri, scheme", [("foo://x", "foo"), ("mlflow+nope://host/db", "mlflow+nope")])
def test_a_tracking_uri_mlflow_cannot_open_is_refused_naming_the_setting(
    uri: str, scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        local_store(uri)
    message = str(excinfo.value)
    assert message.startswith(f"tracking.uri='{uri}' is not a store MLflow can open (scheme '{scheme}').")
    assert "sqlite:///path/to/mlflow.db" in message and "leave tracking.uri unset" in message
    with pytest.raises(MlflowException):  # MLflow itself refuses it too
        MlflowClient(uri)
    assert listing(tmp_path) == []


def test_local_artifacts_is_the_folder_mlflow_writes_a_run_s_artifacts_to(
    store: tuple[Path, MlflowClient], tmp_path: Path
) -> None:
    _, client = store
    location = str(tmp_path / "x" / ".." / "artifacts")
    assert local_artifacts(location) == (tmp_path / "artifacts").resolve()
    experiment = client.create_experiment("artifacts_here", artifact_location=location)
    run = client.create_run(experiment)
    (tmp_path / "note.txt").write_text("written by the test")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    written = [p for p in local_artifacts(location).rglob("note.txt")]
    assert [p.read_text() for p in written] == ["written by the test"]


def test_local_artifacts_of_file_uris_home_and_remote_locations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert local_artifacts((tmp_path / "arts").as_uri()) == (tmp_path / "arts").resolve()
    assert local_artifacts("~/arts") == (tmp_path / "arts").resolve()
    remote = ["s3://bucket/prefix", "gs://bucket", "mlflow-artifacts:/exp", "http://host/artifacts"]
    assert {loc: local_artifacts(loc) for loc in remote} == dict.fromkeys(remote)
    assert listing(tmp_path) == []


def test_an_artifact_location_mlflow_cannot_store_to_is_refused_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        local_artifacts("bogus://bucket/x")
    message = str(excinfo.value)
    assert message.startswith("tracking.artifact_location='bogus://bucket/x': MLflow cannot store artifacts at "
                              "'bogus://' locations.")
    assert "Use a folder path" in message
    assert listing(tmp_path) == []


def test_experiment_names_mlflow_refuses_are_named_with_mlflow_s_reason(store: tuple[Path, MlflowClient]) -> None:
    _, client = store
    assert experiment_name_problem("") == "Invalid experiment name: ''"
    assert experiment_name_problem("x" * 501) == "'name' exceeds the maximum length of 500 characters"
    assert experiment_name_problem("x" * 500) is None
    assert experiment_name_problem("mouse v1 / cortex") is None
    # The real store agrees: what passes is created, what is refused is refused.
    client.create_experiment("mouse v1 / cortex")
    with pytest.raises(MlflowException, match="exceeds the maximum length"):
        client.create_experiment("x" * 501)


@pytest.mark.parametrize(
    "name, problem",
    [
        ("", "Missing value for required parameter 'name'"),
        ("mouse/v1", "Invalid model name 'mouse/v1'. Names cannot contain '/' or ':'"),
        ("mouse:v1", "Invalid model name 'mouse:v1'. Names cannot contain '/' or ':'"),
        ("..", "Invalid value \"..\" for parameter 'name' supplied: Names may be treated as files in certain cases, "
               "and must not resolve to other names when treated as such. This name would resolve to '..'"),
        ("mouse%v1", None),
        ("mouse_v1", None),
    ],
)
def test_model_names_a_sqlite_registry_refuses_are_the_ones_it_really_refuses(
    store: tuple[Path, MlflowClient], name: str, problem: str | None
) -> None:
    root, client = store
    uri = f"sqlite:///{root / 'rel' / 'store.db'}"
    found = model_name_problem(name, uri)
    assert found == problem
    if found is None:
        assert client.create_registered_model(name).name == name
    else:
        with pytest.raises(MlflowException):
            client.create_registered_model(name)


def test_a_folder_store_s_registry_also_refuses_percent_and_path_separators(tmp_path: Path) -> None:
    folder = str(tmp_path / "mlruns")
    percent = "Invalid name: 'mouse%v1'. Registered model name cannot contain '%' character"
    assert model_name_problem("mouse%v1", folder) == percent
    assert model_name_problem("mouse%v1", f"sqlite:///{tmp_path / 'm.db'}") is None
    assert model_name_problem("mouse_v1", folder) is None
    # A URI MLflow cannot open is local_store's to report: the name alone is checked.
    assert model_name_problem("mouse%v1", "foo://x") is None
    assert model_name_problem("mouse/v1", "foo://x") == "Invalid model name 'mouse/v1'. Names cannot contain '/' or ':'"
    assert listing(tmp_path) == []
