"""What the MLflow UI shows of a unitrefine experiment: the runs, with cv_score (benchmarks/mlflow_ui.py's check).

The browser test drives a real headless Chromium against a real ``mlflow server`` on a real smoke run. It is
skipped, with the reason, where Chromium (Debian: ``apt-get install chromium``) or the ``playwright`` package is
missing; playwright drives the installed Chromium, it needs no browser download of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from unitrefine.config import PROJECT_ROOT

BENCHMARKS = PROJECT_ROOT / "benchmarks"


@pytest.fixture
def mlflow_ui(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/mlflow_ui.py as a module."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import mlflow_ui

    return mlflow_ui


def test_experiments_get_the_runs_view_and_a_users_own_is_kept(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from unitrefine.tracking.runs_view import EXPERIMENT_KIND_TAG, RUNS_VIEW_KEY, RUNS_VIEW_TAG, runs_page
    from unitrefine.tracking.tracker import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.create_experiment("old")
    client.create_experiment("mine", tags={RUNS_VIEW_TAG: '{"name": "my view"}'})
    ids = {name: Tracker(uri, name, None).experiment_id for name in ("new", "old", "mine")}
    tags = {name: client.get_experiment(i).tags for name, i in ids.items()}
    assert tags["mine"][RUNS_VIEW_TAG] == '{"name": "my view"}'
    assert tags["old"][EXPERIMENT_KIND_TAG] == "custom_model_development"
    # The envelope MLflow 3.17's UI parses (a string name, numeric times, the state as a JSON string).
    view, old = json.loads(tags["new"][RUNS_VIEW_TAG]), json.loads(tags["old"][RUNS_VIEW_TAG])
    assert (view["name"], view["state"]) == (old["name"], old["state"]) == ("unitrefine: cv_score", view["state"])
    assert isinstance(view["name"], str) and isinstance(view["createdAt"], int) and isinstance(view["state"], str)
    state = json.loads(view["state"])
    assert "metrics.`cv_score`" in state["selectedColumns"]
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`cv_score`", False)
    assert runs_page("http://127.0.0.1:5000/", ids["new"]) == (
        f"http://127.0.0.1:5000/#/experiments/{ids['new']}/runs"
        f"?workflowType=machine_learning&viewStateShareKey={RUNS_VIEW_KEY}"
    )


@pytest.mark.slow
def test_the_ui_opens_a_trained_experiment_on_its_runs_with_cv_score(tmp_path: Path, mlflow_ui: ModuleType) -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    chromium = mlflow_ui.find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set UNITREFINE_CHROMIUM)")
    uri, experiment_id = mlflow_ui.train_smoke(tmp_path / "run")
    with mlflow_ui.serve(uri) as base:
        check = mlflow_ui.check_ui(base, experiment_id, chromium, tmp_path / "ui.png")
    assert check.problems() == []
    assert {"metrics.`cv_score`", "metrics.`cv_score_std`", "params.`classifier`"} <= set(check.link.columns)
    assert check.link.landed.startswith(f"/experiments/{experiment_id}/runs")
    assert (tmp_path / "ui.png").stat().st_size > 10_000
