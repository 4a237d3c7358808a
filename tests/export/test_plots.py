"""Figures are drawn off-screen without taking over a backend the process already chose (a notebook's inline one)."""

from __future__ import annotations

import os
import subprocess
import sys

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
