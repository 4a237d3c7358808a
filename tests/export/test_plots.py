"""Figures are drawn off-screen without taking over a backend the process already chose (a notebook's inline one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
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


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, from its header (no image library needed)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_each_figure_is_saved_at_its_size_and_closed(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from unitrefine.export import plots

    importances = pd.DataFrame({"feature": [f"m{i}" for i in range(40)], "importance_mean": np.linspace(0, 1, 40),
                                "importance_std": 0.01})
    assert png_size(plots.feature_importances(importances, tmp_path / "all.png", top=25)) == (770, int(
        (0.28 * 25 + 1.2) * 110))  # only the top 25 bars: the figure grows with each bar
    assert png_size(plots.feature_importances(importances.head(4), tmp_path / "four.png"))[1] == int(
        (0.28 * 4 + 1.2) * 110)
    assert png_size(plots.confusion([[5, 1, 0], [2, 7, 1], [0, 0, 9]], ("good", "mua", "noise"),
                                    tmp_path / "cm.png", "Held-out")) == (int(6.2 * 110), int(5.2 * 110))
    per = {"recA": {"balanced_accuracy": 0.8, "n_units": 40}, "recB": {"balanced_accuracy": 0.7, "n_units": 12}}
    assert png_size(plots.per_recording(per, tmp_path / "per.png")) == (int(4.7 * 110), int(3.6 * 110))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    roc, pr = plots.roc_pr(y, np.clip(y * 0.4 + rng.random(60) * 0.6, 0, 1), "good", tmp_path / "roc.png",
                           tmp_path / "pr.png")
    assert (roc, pr) == (tmp_path / "roc.png", tmp_path / "pr.png") and png_size(roc) == png_size(pr) == (506, 462)
    assert plt.get_fignums() == [], "every figure is closed once saved"
