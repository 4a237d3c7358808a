"""Figures for people: feature importance, confusion matrix, per-recording scores, ROC and PR curves.

Optuna's figures of the search (optimisation history, hyperparameter importance) are in
:mod:`unitrefine.search.study_plots`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from unitrefine.figures import plt, save

log = logging.getLogger(__name__)


def feature_importances(importances: pd.DataFrame, path: Path, top: int = 25) -> Path:
    """Horizontal bars of permutation importance (mean ± std) for the ``top`` features."""
    df = importances.sort_values("importance_mean", ascending=True).tail(top)
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(df) + 1.2))
    ax.barh(df["feature"], df["importance_mean"], xerr=df["importance_std"], color="tab:blue")
    ax.set_xlabel("drop in score when permuted (held-out recordings)")
    ax.set_title("Permutation feature importance")
    return save(fig, path)


def confusion(matrix: list[list[int]], classes: tuple[str, ...], path: Path, title: str) -> Path:
    """Confusion matrix with counts; rows are the curators' labels."""
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.4 * len(classes) + 2, 1.2 * len(classes) + 1.6))
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("curators")
    ax.set_title(title)
    return save(fig, path)


def per_recording(per_rec: dict[str, dict[str, float]], path: Path) -> Path:
    """Held-out balanced accuracy of each recording, with the unit count on each bar."""
    names = list(per_rec)
    values = [per_rec[n]["balanced_accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.5, 3.6))
    bars = ax.bar(names, values, color="tab:blue")
    for bar, name in zip(bars, names):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"n={per_rec[name]['n_units']}",
                ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("balanced accuracy")
    ax.set_title("Held-out recordings")
    ax.tick_params(axis="x", rotation=30)
    return save(fig, path)


def roc_pr(y_true: np.ndarray, score: np.ndarray, positive: str, roc_path: Path, pr_path: Path) -> list[Path]:
    """ROC and precision-recall curves of a binary task's positive-class probability."""
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    paths = []
    for display, path in ((RocCurveDisplay, roc_path), (PrecisionRecallDisplay, pr_path)):
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        display.from_predictions(y_true, score, pos_label=1, name=f"P({positive})", ax=ax)
        ax.set_title(f"Held-out recordings ({positive} vs rest)")
        paths.append(save(fig, path))
    return paths
