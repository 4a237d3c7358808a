"""Finding the record of a run to re-create: a model folder as it is, or a run / registered model read from a real
MLflow SQLite store under tmp (runs made with MLflow's client, nothing trained by unitrefine)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import snapshot, write_recording
from mlflow.tracking import MlflowClient

from unitrefine.errors import UnitRefineError
from unitrefine.run.recreation_record import RECORD_FILES, find_record

FINGERPRINT = "c0ffee" * 10 + "abcd"
WORKERS = ("hostA-101-a1b2c3", "hostB-7-d4e5f6")


def _write_record(folder: Path, run_id: str | None, uri: str | None, fingerprint: str | None = FINGERPRINT) -> Path:
    """A model folder's record files as ``unitrefine.train`` names them (contents cut down to what is read)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 42\nsearch:\n  n_trials: 2\n", encoding="utf-8")
    trained_on = {"recordings": ["rec0"], "class_counts": {"good": 1, "noise": 1}}
    if fingerprint is not None:
        trained_on["dataset_fingerprint"] = fingerprint
    (folder / "model_info.json").write_text(json.dumps(
        {"label_conversion": {"0": "good", "1": "noise"}, "seed": 42, "trained_on": trained_on,
         "mlflow": {"run_id": run_id, "tracking_uri": uri}}), encoding="utf-8")
    pd.DataFrame({"trial": [0, 1], "state": "COMPLETE", "cv_score": [0.8, 0.7], "classifier": "mlp",
                  "params": "{}"}).to_csv(folder / "model_accuracies.csv", index=False)
    pd.DataFrame({"recording": "rec0", "unit_id": ["1", "3"], "snr": [4.0, 1.0]}).to_csv(
        folder / "training_data.csv", index=False)
    pd.DataFrame({"recording": "rec0", "unit_id": ["1", "3"], "label": ["good", "noise"], "class": ["good", "noise"],
                  "class_code": [0, 1]}).to_csv(folder / "labels.csv", index=False)
    return folder


@dataclass(frozen=True)
class Store:
    """A SQLite store: a finished study run holding ``record`` as its model folder (registered as tiny@champion),
    four trial runs (two workers; one trial untagged) and a failed run without artifacts."""

    root: Path
    uri: str
    record: Path
    study: str
    trial: str
    failed: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("tiny", artifact_location=(root / "artifacts").as_uri())
    study = client.create_run(experiment, run_name="study",
                              tags={"unitrefine.dataset_fingerprint": "feed" * 16, "unitrefine.seed": "42"})
    sid = study.info.run_id
    record = _write_record(root / "record", sid, uri)
    client.log_artifacts(sid, str(record), "model_folder")
    trials = []
    for n, worker in enumerate([WORKERS[0], WORKERS[1], WORKERS[0], None]):
        tags = {"mlflow.parentRunId": sid, **({"unitrefine.worker": worker} if worker else {})}
        trials.append(client.create_run(experiment, run_name=f"trial-{n:04d}", tags=tags).info.run_id)
        client.set_terminated(trials[-1])
    client.set_terminated(sid)
    failed = client.create_run(experiment, run_name="interrupted").info.run_id
    client.set_terminated(failed, "FAILED")
    client.create_registered_model("tiny")
    client.create_model_version("tiny", f"{study.info.artifact_uri}/model_folder", run_id=sid)
    client.set_registered_model_alias("tiny", "champion", "1")
    return Store(root, uri, record, sid, trials[1], failed)


# ------------------------------------------------------------------------------------------------------------
# A model folder
# ------------------------------------------------------------------------------------------------------------


def test_a_folder_is_read_as_it_is_with_the_tags_and_workers_of_its_run(store: Store, tmp_path: Path) -> None:
    before = snapshot(store.record)
    # The folder names its own store (model_info.json's mlflow.tracking_uri); the tracking_uri given is for run ids.
    recorded = find_record(str(store.record), f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "work")
    assert recorded.folder == store.record.resolve() and recorded.source == str(store.record)
    assert recorded.info == json.loads((store.record / "model_info.json").read_text(encoding="utf-8"))
    assert recorded.run_id == store.study
    assert recorded.tags["unitrefine.dataset_fingerprint"] == "feed" * 16 and recorded.tags["unitrefine.seed"] == "42"
    assert recorded.workers == WORKERS  # three tagged trials, two distinct workers, sorted
    assert snapshot(store.record) == before and sorted(tmp_path.iterdir()) == []


def test_a_folder_whose_run_cannot_be_reached_is_checked_on_its_own(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = tmp_path / "lost" / "mlflow.db"
    cases = {"gone": (store.study, f"sqlite:///{gone}"),
             "server": (store.study, "postgresql://nobody@localhost:1/none"),  # not looked up: only local stores
             "unknown": ("0" * 32, store.uri)}
    for name, (run_id, uri) in cases.items():
        folder = _write_record(tmp_path / name, run_id, uri)
        with caplog.at_level(logging.INFO, logger="unitrefine.run.recreation_record"):
            recorded = find_record(str(folder), store.uri, tmp_path / "work")
        assert (recorded.run_id, recorded.tags, recorded.workers) == (run_id, {}, ()), name
    assert not gone.parent.exists()  # a missing store is not created (nor its folder)
    assert f"The folder's MLflow run {'0' * 32} is not in {store.uri}" in caplog.text
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("remove", [["config.yaml"], ["training_data.csv", "labels.csv"], list(RECORD_FILES)])
def test_missing_record_files_are_named(store: Store, tmp_path: Path, remove: list[str]) -> None:
    folder = shutil.copytree(store.record, tmp_path / "model")
    for name in remove:
        (folder / name).unlink()
    before = snapshot(folder)
    with pytest.raises(UnitRefineError) as err:
        find_record(str(folder), store.uri, tmp_path / "work")
    missing = [name for name in RECORD_FILES if name in remove]
    assert str(err.value).startswith(f"{folder} lacks {missing}: it is not a model folder written by unitrefine.train")
    assert snapshot(folder) == before and not (tmp_path / "work").exists()


def test_a_spikeinterface_train_model_folder_is_refused_saying_it_records_no_configuration(tmp_path: Path) -> None:
    from spikeinterface.curation import train_model

    files = write_recording(tmp_path / "rec0", 60, seed=1)
    labels = pd.read_csv(files["labels"], sep="\t")["group"].tolist()
    si_folder = tmp_path / "si_model"
    train_model(mode="csv", metrics_paths=[files["metrics"]], labels=[labels], folder=si_folder,
                metric_names=["snr", "isi_violations_ratio", "firing_rate"], imputation_strategies=["median"],
                scaling_techniques=["standard_scaler"],
                classifiers={"RandomForestClassifier": {"n_estimators": [10], "max_depth": [3]}},
                search_kwargs={"n_iter": 1, "cv": 2}, seed=0, verbose=False)
    before = snapshot(si_folder)
    assert {"model_info.json", "model_accuracies.csv", "training_data.csv", "labels.csv"} <= set(before)
    with pytest.raises(UnitRefineError) as err:
        find_record(str(si_folder), f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "work")
    assert str(err.value) == (
        f"{si_folder} lacks ['config.yaml']: it is not a model folder written by unitrefine.train (a SpikeInterface "
        "train_model folder, or a folder from an older version, records no configuration to re-create)."
    )
    assert snapshot(si_folder) == before and not (tmp_path / "work").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_a_folder_from_an_older_version_without_a_data_fingerprint_is_refused(store: Store, tmp_path: Path) -> None:
    folder = _write_record(tmp_path / "old", store.study, store.uri, fingerprint=None)
    before = snapshot(folder)
    with pytest.raises(UnitRefineError) as err:
        find_record(str(folder), store.uri, tmp_path / "work")
    assert str(err.value) == (
        f"{folder / 'model_info.json'} records no trained_on.dataset_fingerprint to check the data against: the "
        "folder was written by an older unitrefine. Train it again with this version (python -m unitrefine.train "
        "with the folder's config.yaml) to get a model that can be re-created.")
    assert snapshot(folder) == before and not (tmp_path / "work").exists()


# ------------------------------------------------------------------------------------------------------------
# A run id or a registered model
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["{id}", "runs:/{id}/", "models:/tiny@champion", "models:/tiny/1"])
def test_a_run_or_registered_model_is_downloaded_with_its_tags_and_workers(
    store: Store, tmp_path: Path, source: str
) -> None:
    source = source.format(id=store.study)
    recorded = find_record(source, store.uri, tmp_path / "work")
    assert recorded.source == source and recorded.run_id == store.study
    assert recorded.folder == tmp_path / "work" / "model_folder"
    assert snapshot(recorded.folder) == snapshot(store.record)
    assert recorded.info["trained_on"]["dataset_fingerprint"] == FINGERPRINT
    assert recorded.tags["unitrefine.dataset_fingerprint"] == "feed" * 16 and recorded.workers == WORKERS


def test_a_trial_run_is_refused_naming_its_study_run(store: Store, tmp_path: Path) -> None:
    db = store.root / "mlflow.db"
    before = db.read_bytes()
    with pytest.raises(UnitRefineError) as err:
        find_record(store.trial, store.uri, tmp_path / "work")
    assert str(err.value) == (f"MLflow run {store.trial} is a trial (trial-0001) of the study run {store.study}: "
                              f"re-create source={store.study}.")
    assert db.read_bytes() == before and not (tmp_path / "work").exists()


def test_a_run_without_a_model_folder_is_refused(store: Store, tmp_path: Path) -> None:
    with pytest.raises(UnitRefineError) as err:
        find_record(store.failed, store.uri, tmp_path / "work")
    assert str(err.value) == (
        f"MLflow run {store.failed} (interrupted, FAILED) has no model_folder artifacts: it is not a finished "
        "unitrefine.train run (an interrupted or failed study exports nothing)."
    )
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("source", ["models:/tiny@champion", "0123456789abcdef0123456789abcdef"])
def test_a_missing_store_is_named_and_not_created(tmp_path: Path, source: str) -> None:
    db = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(UnitRefineError) as err:
        find_record(source, f"sqlite:///{db}", tmp_path / "work")
    assert str(err.value).startswith(f"No MLflow store at {db}. Pass tracking_uri=<the store the run was tracked in>")
    assert sorted(tmp_path.iterdir()) == []


def test_something_else_is_neither_a_folder_nor_a_run_id(store: Store, tmp_path: Path) -> None:
    short = store.study[:-1]  # 31 hexadecimal digits
    with pytest.raises(UnitRefineError) as err:
        find_record(short, store.uri, tmp_path / "work")
    assert str(err.value).startswith(f"source={short}: there is no such folder, and it is not an MLflow run id (32 "
                                     "hexadecimal digits) or a registered model")
    assert sorted(tmp_path.iterdir()) == []


def test_a_relative_folder_is_found_from_the_working_directory_else_from_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As predict, suggest and merge_review find their inputs (the project is the folder holding conf/)."""
    import unitrefine.run.recreation_record as record

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    _write_record(project / "experiments" / "smoke" / "models" / "m1", None, None)
    elsewhere.mkdir()
    monkeypatch.setattr(record, "PROJECT_ROOT", project)
    monkeypatch.chdir(elsewhere)
    with caplog.at_level(logging.INFO, logger="unitrefine.run.recreation_record"):
        found = find_record("experiments/smoke/models/m1", "sqlite:///unused.db", tmp_path / "work")
    assert found.folder == (project / "experiments" / "smoke" / "models" / "m1").resolve()
    assert "source=experiments/smoke/models/m1 is not in the working directory: using the project's" in caplog.text
    _write_record(elsewhere / "experiments" / "smoke" / "models" / "m1", None, None)  # the working directory wins
    assert find_record("experiments/smoke/models/m1", "sqlite:///unused.db", tmp_path / "work").folder == (
        elsewhere / "experiments" / "smoke" / "models" / "m1").resolve()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["experiments"] and not (tmp_path / "work").exists()
