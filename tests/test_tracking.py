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
from unitrefine.training import train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, endpoint: str, **params: str) -> dict[str, Any]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    with urllib.request.urlopen(f"{base}{endpoint}?{query}", timeout=30) as r:
        return json.load(r)


def post(base: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(f"{base}{endpoint}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
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


def test_rest_api_shows_runs_metrics_plots_and_aliases(server) -> None:
    base, result = server
    exp = get(base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="smoke")["experiment"]
    runs = post(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
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

    from unitrefine.tracking import Tracker

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

    from unitrefine.tracking import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", (tmp_path / "artifacts").as_uri())
    parent = tracker.create_parent("study", {"unitrefine.study": "s"}, {"seed": 1})
    study = finished_trials(12)
    for t in study.trials:
        tracker.log_trial(study, t, {"C": t.params["C"], "classifier": "svc"})
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


def test_a_failed_background_write_is_raised_to_the_search_and_stops_later_writes() -> None:
    from unitrefine.tracking import RunWriter, TrialRun

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
