"""Tiny real models for the review-queue and merge tests: scikit-learn pipelines fitted on seeded metrics tables
(:func:`conftest.write_recording`), saved as model folders exactly as ``unitrefine.predict`` loads them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from conftest import write_recording
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from unitrefine.export.folder import INFO_FILE, dump_model, write_json
from unitrefine.model.threshold import with_threshold

#: Model classes (in class-code order) and how each maps a curator's Phy group to its class (as conf/task/*.yaml).
TASKS = {
    "three_class": (["good", "mua", "noise"], {"good": "good", "mua": "mua", "noise": "noise"}),
    "sua_vs_all": (["other", "good"], {"good": "good", "mua": "other", "noise": "other"}),
    "noise_vs_neural": (["neural", "noise"], {"good": "neural", "mua": "neural", "noise": "noise"}),
    "sua_vs_mua": (["mua", "sua"], {"good": "sua", "mua": "mua"}),
}


def metrics_frame(csv: str) -> pd.DataFrame:
    """A seeded metrics table with current SpikeInterface names."""
    return pd.read_csv(csv).rename(columns={"peak_to_valley": "peak_to_trough_duration"})


def fit_model(folder: Path, task: str, threshold: float | None = None, seed: int = 5) -> Path:
    """Fit a logistic regression on a seeded recording with overlapping classes (probabilities vary) and save it.

    Parameters
    ----------
    folder : Path
        The model folder to write (``best_model.skops``, ``model_info.json``).
    task : str
        A key of :data:`TASKS`.
    threshold : float, optional
        Binary tasks: wrap the model in a ``FixedThresholdClassifier`` deciding at this P(positive).
    seed : int
        Seed of the training recording.
    """
    classes, mapping = TASKS[task]
    files = write_recording(folder.parent / f"{folder.name}_train", n_units=150, seed=seed, spread=2.5)
    X = metrics_frame(files["metrics"]).drop(columns="cluster_id").astype("float32")
    groups = pd.read_csv(files["labels"], sep="\t")["group"].map(mapping)
    keep = groups.notna().to_numpy()
    y = groups[keep].map({c: i for i, c in enumerate(classes)}).to_numpy()
    model = Pipeline([("imputer", SimpleImputer(strategy="median")), ("scaler", StandardScaler()),
                      ("classifier", LogisticRegression(max_iter=2000))]).fit(X[keep], y)
    if threshold is not None:
        model = with_threshold(model, threshold, X[keep], y)
    folder.mkdir(parents=True)
    dump_model(model, folder)
    write_json(folder / INFO_FILE, {"label_conversion": {str(i): c for i, c in enumerate(classes)},
                                    "requirements": {"spikeinterface": "0.105.3"}, "metric_params": {}})
    return folder


def write_unlabelled(folder: Path, recordings: dict[str, tuple[int, int]]) -> Path:
    """A folder of metrics tables ``<name>.csv`` (``{name: (n_units, seed)}``), overlapping classes, no labels.

    The curators' labels of each recording are kept beside, in ``<folder>_truth/<name>/cluster_group.tsv``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, (n, seed) in recordings.items():
        files = write_recording(folder.parent / f"{folder.name}_truth" / name, n_units=n, seed=seed, spread=2.5)
        pd.read_csv(files["metrics"]).to_csv(folder / f"{name}.csv", index=False)
    return folder


def truth(folder: Path, name: str) -> pd.Series:
    """The curators' labels of a recording written by :func:`write_unlabelled`, by unit id (strings)."""
    path = folder.parent / f"{folder.name}_truth" / name / "cluster_group.tsv"
    return pd.read_csv(path, sep="\t", dtype=str).set_index("cluster_id")["group"]
