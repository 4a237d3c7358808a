"""The stages of a training run: each timed and recorded, every training set fitted once, Ctrl-C in any stage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import interruptible, make_config
from mlflow.tracking import MlflowClient

from unitrefine.model.final_model import FinalModel
from unitrefine.run import stages
from unitrefine.run.training import train

AFTER_SEARCH = ["choose", "refit", "evaluate", "estimate", "write", "track"]


@pytest.fixture
def counted_fits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the training set (unit ids) of every fit of the final model."""
    seen: list[tuple[int, ...]] = []
    real = FinalModel.fit

    def fit(self: FinalModel, part):  # noqa: ANN001, ANN202
        seen.append(tuple(zip(part.units["recording"], part.units["unit_id"])))
        return real(self, part)

    monkeypatch.setattr(FinalModel, "fit", fit)
    return seen


def test_every_stage_is_timed_in_model_info_mlflow_and_the_summary(
    tmp_path: Path, tiny_recordings: list[dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, tiny_recordings, ["search.n_trials=3", "cv.group_by=recording", "cv.n_splits=3",
                                                  "cv.holdout_recordings=[rec3]"])
    with caplog.at_level("INFO", logger="unitrefine"):
        result = train(cfg)
    info = json.loads((result.model_folder / "model_info.json").read_text())
    # model_info.json is written during the write stage: it has every stage before it.
    assert list(info["stage_seconds"]) == ["load", "split", "search", *AFTER_SEARCH[:-2]]
    assert list(result.stage_seconds) == ["load", "split", "search", *AFTER_SEARCH]
    assert all(v >= 0 for v in result.stage_seconds.values())
    assert result.stage_seconds["search"] > 0
    for name in AFTER_SEARCH:
        assert f"Stage {name}: " in caplog.text and f"Stage {name} done in " in caplog.text
    assert "Stage times (s): load " in caplog.text and ", track " in caplog.text
    metrics = MlflowClient(result.tracking_uri).get_run(result.run_id).data.metrics
    assert {f"stage_seconds_{k}" for k in result.stage_seconds} <= set(metrics)
    assert metrics["stage_seconds_search"] == pytest.approx(result.stage_seconds["search"])


def test_training_sets_that_coincide_are_fitted_once(
    tmp_path: Path, tiny_recordings: list[dict[str, str]], counted_fits: list[tuple[int, ...]]
) -> None:
    # rec3 is held out, and the estimate leaves each recording out in turn: leaving rec3 out is the search's set.
    cfg = make_config(tmp_path, tiny_recordings, ["search.n_trials=2", "cv.group_by=recording", "cv.n_splits=3",
                                                  "cv.holdout_recordings=[rec3]", "tracking.enabled=false"])
    result = train(cfg)
    # 4 leave-one-recording-out refits (one of them the held-out fit) and the refit on all recordings.
    assert len(counted_fits) == len(set(counted_fits)) == 5
    # The held-out recording is scored by the very model the estimate scored it with.
    assert result.estimate["per_group"]["rec3"] == pytest.approx(result.holdout["balanced_accuracy"])


def test_refit_keeps_the_models_it_needs_and_scores_the_estimate(
    tmp_path: Path, tiny_recordings: list[dict[str, str]]
) -> None:
    cfg = make_config(tmp_path, tiny_recordings, ["search.n_trials=2", "cv.group_by=recording", "cv.n_splits=3",
                                                  "cv.holdout_recordings=[rec3]", "tracking.enabled=false",
                                                  "cv.refit_on_all=false"])
    data = stages.split(cfg, stages.load(cfg))
    searched = stages.searched_study(cfg, data, _study_of(cfg, data))
    final = stages.choose(cfg, searched, data)
    refits = stages.refit(cfg, final, data)
    assert refits.exported is refits.on_train  # without refit_on_all the export is the held-out fit
    assert set(refits.fitted_on.units["recording"]) == {"rec0", "rec1", "rec2"}
    assert [len(s) for s in refits.estimate_scores] == [1, 1, 1, 1]
    curve = stages.estimate(searched, refits, None)["review_budget"]
    assert [c["review_fraction"] for c in curve] == [0.0, 0.05, 0.1, 0.2, 0.3]
    means = [c["balanced_accuracy"] for c in curve]
    assert means == sorted(means)  # a person's label only ever replaces a wrong one by the right one


def _study_of(cfg, data):  # noqa: ANN001, ANN202
    """Run a tiny study in memory with the project's own search objective."""
    from unitrefine.search.study import create_study

    study = create_study("t", cfg.search, cfg.seed)
    searched = stages.searched_study(cfg, data, study)
    study.optimize(searched.objective, n_trials=cfg.search.n_trials)
    return study


def _outputs(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return [f"tracking.uri=sqlite:///{out}/mlflow.db", f"tracking.artifact_location={out.as_uri()}/artifacts",
            f"output.folder={out}/model", "search.n_trials=2", "search.n_jobs=2"]


def _script(patch: str, tmp_path: Path) -> str:
    return f"""
import sys, time
{patch}
from unitrefine.train import main
sys.argv = ["unitrefine.train", "+experiment=smoke", *{_outputs(tmp_path)!r}]
main()
"""


def _check_interrupted(proc_returncode: int, stderr: str, tmp_path: Path) -> None:
    assert proc_returncode == 130, stderr[-3000:]
    assert "Interrupted" in stderr and "Traceback" not in stderr
    out = tmp_path / "out"
    assert not (out / "model").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".model")], "a half-written folder was left"
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "KILLED"


@pytest.mark.parametrize(
    "patch",
    [
        "import unitrefine.run.stages as s\ndef choose(*a, **k): raise KeyboardInterrupt\ns.choose = choose",
        "import unitrefine.run.stages as s\ndef estimate(*a, **k): raise KeyboardInterrupt\ns.estimate = estimate",
        # Mid-write: the model is in the staging folder, the figures are not.
        "import unitrefine.export.report as r\ndef history(*a, **k): raise KeyboardInterrupt\n"
        "r.optimization_history = history",
        "import unitrefine.tracking.tracker as t\ndef gate(*a, **k): raise KeyboardInterrupt\nt.Tracker.gate = gate",
    ],
    ids=["choose", "estimate", "write", "track"],
)
def test_ctrl_c_in_a_stage_after_the_search_exits_130_and_leaves_no_model_folder(tmp_path: Path, patch: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _script(patch, tmp_path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    _check_interrupted(proc.returncode, proc.stderr, tmp_path)


def test_a_real_ctrl_c_during_the_refits_ends_at_once(tmp_path: Path) -> None:
    """The refits run on threads: a Ctrl-C must not wait for fits still running (here: a minute long each)."""
    patch = ("from unitrefine.model.final_model import FinalModel\n"
             "def fit(self, part): time.sleep(60)\nFinalModel.fit = fit")
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", _script(patch, tmp_path)], cwd=tmp_path, stderr=err, text=True,
                                preexec_fn=interruptible)
        try:
            deadline = time.monotonic() + 240
            while "Stage refit:" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:  # never leave it running for the next tests
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "Stage refit:" in log.read_text()
    assert time.monotonic() - sent < 20
    _check_interrupted(proc.returncode, log.read_text(), tmp_path)


@pytest.mark.parametrize("timeout_s", [None, 0.5, 1e-6])  # 1e-6: over before the first trial, which still runs
def test_a_search_stopped_by_its_time_cap_says_so_in_model_info_mlflow_and_the_card(
    tmp_path: Path, tiny_recordings: list[dict[str, str]], timeout_s: float | None
) -> None:
    budget = 2 if timeout_s is None else 50
    cfg = make_config(tmp_path, tiny_recordings, [f"search.n_trials={budget}", "search.n_jobs=1",
                                                  f"search.timeout_s={'null' if timeout_s is None else timeout_s}"])
    result = train(cfg)
    capped = timeout_s is not None
    info = json.loads((result.model_folder / "model_info.json").read_text())
    assert info["search"]["stopped_by_timeout"] is capped
    assert (sum(result.trial_counts.values()) < budget) is capped
    tags = MlflowClient(result.tracking_uri).get_run(result.run_id).data.tags
    assert tags["unitrefine.stopped_by_timeout"] == str(capped).lower()
    assert ("stopped on its time cap" in (result.model_folder / "README.md").read_text()) is capped
