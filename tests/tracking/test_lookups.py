"""Read-only lookups in an MLflow store (:mod:`unitrefine.tracking.lookups`): runs, a study's workers and a run's
model folder found or missed in a real SQLite store; a store that does not exist is never created."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from unitrefine.errors import UnitRefineError
from unitrefine.tracking.lookups import (
    MODEL_FOLDER,
    RunSummary,
    StoreMissing,
    check_store,
    download_run_folder,
    has_model_folder,
    read_run,
    reader,
    study_workers,
)
from unitrefine.tracking.trial_runs import WORKER_TAG

#: The model folder the fixture uploads, by relative path.
FOLDER = {"best_model.skops": b"skops bytes " * 100, "model_info.json": b'{"label_conversion": {"0": "good"}}',
          "plots/scores.csv": b"trial,score\n0,0.5\n"}


@dataclass(frozen=True)
class Store:
    uri: str
    client: MlflowClient
    experiment_id: str
    study: str  # a study run with four trial runs (workers w2, w1, w1 and one untagged)
    other_study: str  # a study run with one trial run (worker w9)
    lone_study: str  # a study run without trials
    trained: str  # a finished run holding FOLDER in its model folder


def listing(root: Path) -> list[str]:
    """Every path under ``root``, relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("lookups")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("lookups", artifact_location=(root / "artifacts").as_uri())

    def run(name: str, **tags: str) -> str:
        return client.create_run(exp, run_name=name, tags=tags).info.run_id

    study = run("study", kind="study")
    for i, worker in enumerate(["w2", "w1", "w1", None]):
        run(f"trial-{i}", **{MLFLOW_PARENT_RUN_ID: study, **({WORKER_TAG: worker} if worker else {})})
    other = run("other-study")
    run("trial-0", **{MLFLOW_PARENT_RUN_ID: other, WORKER_TAG: "w9"})
    lone = run("lone-study")
    trained = run("trained", model="forest")
    folder = root / "folder"
    for name, data in FOLDER.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    client.log_artifacts(trained, str(folder), MODEL_FOLDER)
    client.set_terminated(trained, "FINISHED")
    return Store(uri, client, exp, study, other, lone, trained)


def test_a_missing_sqlite_store_is_named_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "mlflow.db"
    uri = f"sqlite:///{db}"
    for lookup in (check_store, reader, lambda u: read_run(u, "0" * 32), lambda u: has_model_folder(u, "0" * 32),
                   lambda u: download_run_folder(u, "0" * 32, tmp_path / "download")):
        with pytest.raises(StoreMissing) as excinfo:
            lookup(uri)
        assert (str(excinfo.value), excinfo.value.path) == (f"No MLflow store at {db}.", db)
        assert isinstance(excinfo.value, UnitRefineError)
    assert listing(tmp_path) == []  # no database, no download folder


def test_an_existing_store_and_stores_that_are_not_files_pass_the_check(store: Store) -> None:
    check_store(store.uri)
    check_store("http://127.0.0.1:5000")
    check_store("postgresql://user@host/db")
    assert reader(store.uri).get_experiment(store.experiment_id).name == "lookups"


def test_read_run_tells_the_name_status_experiment_and_tags(store: Store) -> None:
    summary = read_run(store.uri, store.trained)
    tags = store.client.get_run(store.trained).data.tags
    assert summary == RunSummary(store.trained, "trained", "FINISHED", store.experiment_id, tags)
    assert tags["model"] == "forest"
    study = read_run(store.uri, store.study)
    assert (study.name, study.status, study.tags["kind"]) == ("study", "RUNNING", "study")


def test_read_run_of_a_run_the_store_does_not_hold_is_none(store: Store) -> None:
    assert read_run(store.uri, "0123456789abcdef0123456789abcdef") is None
    assert read_run(store.uri, "not-a-run-id") is None


def test_study_workers_are_the_sorted_distinct_workers_of_that_study_s_trials(store: Store) -> None:
    assert study_workers(store.uri, read_run(store.uri, store.study)) == ("w1", "w2")
    assert study_workers(store.uri, read_run(store.uri, store.other_study)) == ("w9",)
    assert study_workers(store.uri, read_run(store.uri, store.lone_study)) == ()


def test_has_model_folder_only_for_a_run_that_uploaded_one(store: Store) -> None:
    assert has_model_folder(store.uri, store.trained) is True
    assert has_model_folder(store.uri, store.study) is False


def test_download_run_folder_gives_back_the_uploaded_folder(store: Store, tmp_path: Path) -> None:
    path = download_run_folder(store.uri, store.trained, tmp_path / "a" / "b")
    assert path == tmp_path / "a" / "b" / MODEL_FOLDER
    assert {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()} == FOLDER


def test_download_of_a_run_without_a_model_folder_names_the_run_and_downloads_nothing(
    store: Store, tmp_path: Path
) -> None:
    with pytest.raises(UnitRefineError) as excinfo:
        download_run_folder(store.uri, store.study, tmp_path / "download")
    message = str(excinfo.value)
    assert message.startswith(f"Could not download the model folder of MLflow run {store.study} (")
    assert "'model_folder'" in message
    assert listing(tmp_path) == ["download"]  # the destination made for the download, left empty
