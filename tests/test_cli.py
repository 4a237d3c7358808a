"""The command line as users run it: a real subprocess, real Hydra, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unitrefine.train", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def outputs(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return [
        f"tracking.uri=sqlite:///{out}/mlflow.db",
        f"tracking.artifact_location={out.as_uri()}/artifacts",
        f"output.folder={out}/model",
    ]


def test_smoke_experiment_runs_from_any_directory_and_reports(tmp_path: Path) -> None:
    """The shipped data is found relative to the project, not to the working directory."""
    proc = run_cli("+experiment=smoke", "search.n_trials=2", *outputs(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Loaded 1158 units from 4 recordings" in proc.stderr
    assert "Held-out recordings: balanced accuracy" in proc.stderr
    assert "Expected balanced accuracy on new recordings" in proc.stderr
    assert "Top trials" in proc.stderr and "mlflow ui --backend-store-uri" in proc.stderr
    assert (tmp_path / "out" / "model" / "best_model.skops").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # Hydra wrote nothing into the cwd


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset.recordings.0.metrics=/no/such/metrics.csv"], "The metrics file /no/such/metrics.csv does not exist"),
        (["search.n_trials=abc"], "search.n_trials"),
        (["+search_space.classifier.random_forrest={}"], "random_forrest"),
        (["task=noise_vs_neural", "~task.mapping.mua"], "'mua' (first at unit"),
    ],
)
def test_user_errors_exit_2_with_one_clear_line_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_cli("+experiment=smoke", *args, *outputs(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_experiment_fails_with_hydra_message(tmp_path: Path) -> None:
    proc = run_cli("+experiment=nope", cwd=tmp_path)
    assert proc.returncode != 0
    assert "experiment/nope" in proc.stderr


@pytest.mark.parametrize(("during_ctrl_c", "status"), [(True, 130), (False, 1)])
def test_an_error_raised_while_handling_ctrl_c_exits_as_an_interrupt_and_only_then(
    tmp_path: Path, during_ctrl_c: bool, status: int
) -> None:
    # After the search, Optuna's journal lock can turn a Ctrl-C into the FileNotFoundError of its clean-up.
    script = f"""
import sys
import unitrefine.training

def train(cfg):
    if {during_ctrl_c}:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise FileNotFoundError("the journal lock file")
    raise FileNotFoundError("the journal lock file")

unitrefine.training.train = train
from unitrefine.train import main
sys.argv = ["unitrefine.train", "+experiment=smoke"]
main()
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == status
    assert ("Run the same command again to resume" in proc.stderr) is during_ctrl_c
    assert ("Traceback" in proc.stderr) is not during_ctrl_c
