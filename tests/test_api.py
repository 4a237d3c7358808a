"""The Python API accepts SpikeInterface's train_model arguments and runs the same engine."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from unitrefine import UnitRefineError, train_model


def test_train_model_with_spikeinterface_style_arguments(tmp_path: Path, tiny_recordings) -> None:
    metrics = [r["metrics"] for r in tiny_recordings]
    labels = [pd.read_csv(r["labels"], sep="\t")["group"].tolist() for r in tiny_recordings]
    result = train_model(
        mode="csv",
        labels=labels,
        metrics_paths=metrics,
        folder=tmp_path / "model",
        classifiers=["RandomForestClassifier", "LogisticRegression"],
        imputation_strategies=["median"],
        scaling_techniques=["standard_scaler"],
        metric_names=["snr", "isi_violations_ratio", "peak_to_valley"],
        seed=1,
        overrides=["search.n_trials=3", "search.n_jobs=1", "tracking.enabled=false", "cv.n_splits=3"],
    )
    info = json.loads((tmp_path / "model" / "model_info.json").read_text())
    assert info["label_conversion"] == {"0": "good", "1": "mua", "2": "noise"}
    assert info["features"] == ["snr", "isi_violations_ratio", "peak_to_trough_duration"]
    board = pd.read_csv(tmp_path / "model" / "model_accuracies.csv")
    assert set(board["classifier"]) <= {"random_forest", "logistic_regression"}
    assert set(board["imputer"]) == {"median"} and set(board["scaler"]) == {"standard"}
    assert result.best_spec["classifier"].name in {"random_forest", "logistic_regression"}
    assert result.model_folder == tmp_path / "model"
    with pytest.raises(UnitRefineError, match="already exists"):
        train_model(labels=labels, metrics_paths=metrics, folder=tmp_path / "model",
                    overrides=["tracking.enabled=false"])


def test_label_files_with_a_named_task(tmp_path: Path, tiny_recordings) -> None:
    result = train_model(
        labels=[r["labels"] for r in tiny_recordings],
        metrics_paths=[r["metrics"] for r in tiny_recordings],
        folder=tmp_path / "m",
        task="noise_vs_neural",
        classifiers=["logistic_regression"],
        overrides=["search.n_trials=2", "tracking.enabled=false", "cv.n_splits=3"],
    )
    info = json.loads((result.model_folder / "model_info.json").read_text())
    assert info["label_conversion"] == {"0": "neural", "1": "noise"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"classifiers": ["RandomForest"]}, "Unknown classifier"),
        ({"mode": "analyzers"}, "mode='analyzers'"),
        ({"labels": [["good"]]}, "one labels entry per metrics file"),
    ],
)
def test_bad_api_arguments(tmp_path: Path, tiny_recordings, kwargs: dict, match: str) -> None:
    args = {
        "labels": [r["labels"] for r in tiny_recordings],
        "metrics_paths": [r["metrics"] for r in tiny_recordings],
        "task": "sua_vs_all",
        "folder": tmp_path / "m",
        "overrides": ["tracking.enabled=false"],
        **kwargs,
    }
    with pytest.raises(UnitRefineError, match=match):
        train_model(**args)
    assert not (tmp_path / "m").exists()


def test_label_lists_must_align_with_metrics_rows(tmp_path: Path, tiny_recordings) -> None:
    labels = [pd.read_csv(r["labels"], sep="\t")["group"].tolist() for r in tiny_recordings]
    labels[1] = labels[1][:-1]
    with pytest.raises(UnitRefineError, match=r"labels\[1\] has 59 labels but .* has 60 units"):
        train_model(labels=labels, metrics_paths=[r["metrics"] for r in tiny_recordings], folder=tmp_path / "m",
                    overrides=["tracking.enabled=false"])
