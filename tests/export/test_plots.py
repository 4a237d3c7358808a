"""Figures are drawn off-screen without taking over a backend the process already chose (a notebook's inline one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def backend_after_import(setup: str, mplbackend: str | None) -> str:
    """The matplotlib backend in a fresh interpreter that runs ``setup`` and then imports unitrefine.export.plots."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    if mplbackend is not None:
        env["MPLBACKEND"] = mplbackend
    code = f"{setup}\nimport matplotlib, unitrefine.export.plots\nprint(matplotlib.get_backend().lower())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("setup", "mplbackend", "expected"),
    [
        ("", None, "agg"),  # a command-line run: off-screen
        ("", "svg", "svg"),  # MPLBACKEND (ipykernel sets it to its inline backend) is respected
        ("import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot", None, "svg"),  # pyplot already in use
    ],
)
def test_importing_plots_keeps_the_backend_a_process_chose(setup: str, mplbackend: str | None, expected: str) -> None:
    assert backend_after_import(setup, mplbackend) == expected


def test_optuna_figures_leave_the_global_style_alone(tmp_path: Path) -> None:
    """Optuna's matplotlib plots switch to the ggplot style; a user's later figures must not change with it."""
    import matplotlib
    import optuna

    from unitrefine.export.plots import optimization_history, param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 3), n_trials=5)
    before = dict(matplotlib.rcParams)
    assert optimization_history(study, tmp_path / "history.png").is_file()
    assert param_importances(study, tmp_path / "importance.png") is not None
    assert dict(matplotlib.rcParams) == before
