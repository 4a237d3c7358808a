"""The MLflow UI's server sees what a real run stored: checked through its REST API on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config

from unitrefine.promote import promote
from unitrefine.run.training import train
from unitrefine.search.outcomes import outcome


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, endpoint: str, **params: str) -> dict[str, Any]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    with urllib.request.urlopen(f"{base}{endpoint}?{query}", timeout=30) as r:
        return json.load(r)


def post(base: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(f"{base}{endpoint}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


@pytest.fixture
def server(tmp_path: Path, tiny_recordings):
    """A smoke study with a champion, and an MLflow server on its store (stopped by its process id)."""
    cfg = make_config(tmp_path, tiny_recordings, ["search.n_trials=3", "cv.n_splits=3", "cv.holdout_recordings=[rec3]"])
    result = train(cfg)
    promote(cfg)
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", result.tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"mlflow server exited: {proc.stderr.read().decode()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail("mlflow server did not answer within 120 s")
                time.sleep(0.5)
        yield base, result
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        proc.stderr.close()


def test_rest_api_shows_runs_metrics_plots_and_aliases(server) -> None:
    base, result = server
    exp = get(base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="smoke")["experiment"]
    search = {"experiment_ids": [exp["experiment_id"]], "max_results": 100}
    runs = post(base, "/api/2.0/mlflow/runs/search", search)["runs"]
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs}
    nested = [rid for rid, t in tags.items() if t.get("mlflow.parentRunId") == result.run_id]
    assert len(nested) == 3
    parent = next(r for r in runs if r["info"]["run_id"] == result.run_id)
    metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    assert metrics["holdout_balanced_accuracy"] == pytest.approx(result.holdout["balanced_accuracy"])
    info = json.loads((result.model_folder / "model_info.json").read_text())
    assert [metrics[f"expected_balanced_accuracy_new_recordings_{end}"] for end in ("low", "high")] == pytest.approx(
        info["estimate_new_recordings"]["interval"])
    trial_metric_names = {m["key"] for r in runs if r["info"]["run_id"] in nested for m in r["data"].get("metrics", [])}
    assert {"cv_score", "cv_score_std"} <= trial_metric_names & set(metrics)  # the same names line up in Compare
    files = get(base, "/api/2.0/mlflow/artifacts/list", run_id=result.run_id, path="model_folder")["files"]
    names = {f["path"].split("/")[-1] for f in files}
    assert {"optimization_history.png", "confusion_matrix.png", "model_accuracies.csv", "README.md"} <= names
    model = get(base, "/api/2.0/mlflow/registered-models/get", name="smoke")["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
    assert aliases == {"challenger": result.model_version, "champion": result.model_version}


def finished_trials(n: int) -> Any:
    import optuna

    study = optuna.create_study(study_name="s", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("fold_scores", [0.5, 0.7])
        trial.set_user_attr("cv_std", 0.1)
        return trial.suggest_float("C", 0.1, 10.0)

    study.optimize(objective, n_trials=n)
    return study


@pytest.mark.parametrize(("during_ctrl_c", "status"), [(True, "KILLED"), (False, "FAILED")])
def test_parent_run_ends_killed_on_an_error_raised_while_handling_ctrl_c(
    tmp_path: Path, during_ctrl_c: bool, status: str
) -> None:
    from mlflow.tracking import MlflowClient

    from unitrefine.tracking.tracker import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", (tmp_path / "artifacts").as_uri())
    with pytest.raises(FileNotFoundError), tracker.parent_run("study", {}) as run_id:
        if during_ctrl_c:  # what Optuna's journal lock raises when a Ctrl-C lands while it releases the lock
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise FileNotFoundError("the journal lock file")  # noqa: B904 (as Optuna raises it)
        raise FileNotFoundError("a real missing file")
    assert MlflowClient(uri).get_run(run_id).info.status == status


def test_trial_runs_written_in_the_background_are_all_there_in_order_before_anything_reads_them(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from unitrefine.tracking.tracker import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", (tmp_path / "artifacts").as_uri())
    parent = tracker.create_parent("study", {"unitrefine.search.study": "s"}, {"seed": 1})
    study = finished_trials(12)
    for t in study.trials:
        tracker.log_trial(outcome("s", t), {"C": t.params["C"], "classifier": "svc"})
    # Reading what was logged waits for the writer: nothing queued is missed.
    assert tracker.logged_trials("s") == set(range(12))
    tracker.end_parent("FINISHED")
    client = MlflowClient(uri)
    runs = client.search_runs([tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=100)
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    assert sorted(by_number) == list(range(12))
    for t in study.trials:
        run = by_number[t.number]
        assert run.info.status == "FINISHED" and run.info.run_name == f"trial-{t.number:04d}"
        assert run.data.params == {"C": str(t.params["C"]), "classifier": "svc"}
        assert run.data.metrics["cv_score"] == pytest.approx(t.value)
        assert [m.value for m in client.get_metric_history(run.info.run_id, "cv_fold_score")] == [0.5, 0.7]
    # Written in the order they finished: creation times follow the trial numbers.
    created = [by_number[n].info.start_time for n in range(12)]
    assert created == sorted(created)
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_trial_run_holds_the_fold_scores_the_worker_the_origin_and_why_the_trial_failed() -> None:
    """The nested run of a finished trial as it is queued for the writer (no store needed)."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from unitrefine.search.trial_attrs import ERROR_ATTR, FOLD_SCORES_ATTR, WARM_START_ATTR, WORKER_ATTR
    from unitrefine.tracking.trial_runs import MAX_PARAM, trial_run

    study = optuna.create_study(study_name="s")
    study.add_trial(create_trial(
        state=TrialState.FAIL, params={"C": 0.5}, distributions={"C": FloatDistribution(0.1, 1.0)},
        user_attrs={FOLD_SCORES_ATTR: [0.5, 0.7], WORKER_ATTR: "host:12", WARM_START_ATTR: "models:/m@champion best",
                    ERROR_ATTR: "fold 2: ValueError: k > n"},
    ))
    trial = study.trials[0]
    run = trial_run("parent", outcome("s", trial), {"C": 0.5, "long": "x" * (MAX_PARAM + 10)})
    assert (run.name, run.status) == ("trial-0000", "FAILED")
    assert run.tags == {"mlflow.parentRunId": "parent", "optuna.study": "s", "optuna.trial_number": "0",
                        "optuna.state": "fail", "unitrefine.worker": "host:12",
                        "unitrefine.run.warm_start": "models:/m@champion best", "error": "fold 2: ValueError: k > n"}
    assert [(m.key, m.value, m.step) for m in run.metrics if m.key != "duration_s"] == [
        ("cv_fold_score", 0.5, 0), ("cv_fold_score", 0.7, 1)]
    assert [(p.key, len(p.value)) for p in run.params] == [("C", 3), ("long", MAX_PARAM)]
    # A trial stopped with its worker: the status and the reason given win over the trial's own.
    stopped = trial_run("parent", outcome("s", trial), {}, status="KILLED", error="interrupted; run again on resume")
    assert (stopped.status, stopped.tags["error"]) == ("KILLED", "interrupted; run again on resume")


def test_a_failed_background_write_is_raised_to_the_search_and_stops_later_writes() -> None:
    from unitrefine.tracking.trial_runs import RunWriter, TrialRun

    written: list[str] = []

    def write(run: TrialRun) -> None:
        if run.name == "trial-0001":
            raise RuntimeError("store unreachable")
        written.append(run.name)

    writer = RunWriter(write)

    def run(i: int) -> TrialRun:
        return TrialRun(f"trial-{i:04d}", None, 0, "FINISHED", {}, [], [])

    writer.put(run(0))
    writer.put(run(1))
    writer.put(run(2))
    with pytest.raises(RuntimeError, match="store unreachable"):
        writer.flush()
    with pytest.raises(RuntimeError, match="store unreachable"):
        writer.put(run(3))
    assert written == ["trial-0000"]


FOREST_SPACE = {"imputer": {"median": {}}, "scaler": {"none": {}}, "resampler": {"none": {}},
                "classifier": {"random_forest": {"n_estimators": 60, "max_depth": 12}}}


def tree_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_a_run_stores_its_model_once_compressed_and_the_registered_version_loads_everywhere(
    tmp_path: Path, tiny_recordings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The registered version is the run's uploaded model folder (an MLmodel beside the compressed .skops)."""
    import logging

    import mlflow
    import numpy as np
    import yaml
    from conftest import features_for
    from mlflow.tracking import MlflowClient
    from spikeinterface.curation import load_model as si_load_model

    from unitrefine.apply.prediction import load_model
    from unitrefine.export.folder import load_model_folder
    from unitrefine.search.estimators import TRUSTED_TYPES
    from unitrefine.tracking.runs_view import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    cfg = make_config(tmp_path, tiny_recordings, ["search.n_trials=1", "search.n_jobs=1", "cv.n_splits=3",
                                                  "cv.holdout_recordings=[rec3]", "search.enqueue_defaults=false"],
                      search_space=FOREST_SPACE)
    with caplog.at_level(logging.INFO, logger="unitrefine.tracking.uploads"):
        result = train(cfg)
    folder = result.model_folder
    n_files = sum(1 for f in folder.rglob("*") if f.is_file())
    assert f"Uploading {n_files} files" in caplog.text and f"Uploaded {n_files} files" in caplog.text

    # Stored once: everything the experiment keeps is the model folder plus MLflow's few small model files.
    root = tmp_path / "mlruns" / "artifacts" / "smoke"
    stored, own = tree_bytes(root), tree_bytes(folder)
    assert stored <= 1.2 * own, (stored, own)
    assert [p.name for p in root.rglob("*.skops")] == ["best_model.skops"]
    run_folder = next(root.rglob("model_folder"))
    assert (run_folder / "best_model.skops").read_bytes() == (folder / "best_model.skops").read_bytes()

    client = MlflowClient(result.tracking_uri)
    assert client.get_experiment_by_name("smoke").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    version = client.get_model_version_by_alias("smoke", "challenger")
    assert str(version.version) == result.model_version and version.run_id == result.run_id
    assert version.source == run_folder.as_uri()
    mlmodel = yaml.safe_load((run_folder / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["sklearn"]
    assert (flavor["pickled_model"], flavor["serialization_format"]) == ("best_model.skops", "skops")
    assert flavor["skops_trusted_types"] == list(TRUSTED_TYPES)
    assert mlmodel["flavors"]["python_function"]["predict_fn"] == "predict_proba"
    assert "signature" in mlmodel and "saved_input_example_info" in mlmodel
    assert any(r.startswith("scikit-learn==") for r in (run_folder / "requirements.txt").read_text().split())

    exported, _ = load_model_folder(folder)
    X = features_for(exported, tiny_recordings[3]["metrics"])
    expected = exported.predict_proba(X)
    for spec in ("models:/smoke@challenger", f"models:/smoke/{result.model_version}"):
        loaded = load_model(spec, [], result.tracking_uri, tmp_path / "download" / spec.split("/")[-1])
        np.testing.assert_array_equal(loaded.pipeline.predict_proba(X), expected)
    # SpikeInterface's own loader takes the downloaded folder: the MLmodel beside the one .skops is fine.
    si_model, _ = si_load_model(model_folder=tmp_path / "download" / "smoke@challenger" / "model_folder",
                                trusted=list(TRUSTED_TYPES))
    np.testing.assert_array_equal(si_model.predict_proba(X), expected)
    # MLflow's loaders read the same file (they refuse any model file unless this is set).
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    mlflow.set_tracking_uri(result.tracking_uri)
    np.testing.assert_array_equal(mlflow.sklearn.load_model("models:/smoke@challenger").predict_proba(X), expected)
    pyfunc = mlflow.pyfunc.load_model(f"models:/smoke/{result.model_version}")
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(X)), expected)


def test_an_existing_experiment_without_a_kind_gets_the_model_training_kind(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from unitrefine.tracking.runs_view import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
    from unitrefine.tracking.tracker import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.create_experiment("old", artifact_location=(tmp_path / "artifacts").as_uri())
    client.create_experiment("genai", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    Tracker(uri, "old", None)
    Tracker(uri, "genai", None)
    Tracker(uri, "new", (tmp_path / "new").as_uri())
    kinds = {n: client.get_experiment_by_name(n).tags.get(EXPERIMENT_KIND_TAG) for n in ("old", "genai", "new")}
    assert kinds == {"old": EXPERIMENT_KIND, "genai": "genai_development", "new": EXPERIMENT_KIND}


def test_log_artifacts_keeps_subfolders_and_logs_the_upload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from mlflow.tracking import MlflowClient

    from unitrefine.tracking.tracker import Tracker

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.bin").write_bytes(bytes(2_000_000))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", (tmp_path / "artifacts").as_uri())
    run_id = tracker.create_parent("study", {}, {})
    with caplog.at_level(logging.INFO, logger="unitrefine.tracking.uploads"):
        tracker.log_artifacts(folder, "model_folder")
    client = MlflowClient(uri)
    assert {f.path for f in client.list_artifacts(run_id, "model_folder")} == {"model_folder/a.txt", "model_folder/sub"}
    assert [f.file_size for f in client.list_artifacts(run_id, "model_folder/sub")] == [2_000_000]
    assert "Uploading 2 files (2.0 MB)" in caplog.text and "Uploaded 2 files (2.0 MB) in" in caplog.text
