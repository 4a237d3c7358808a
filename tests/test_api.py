"""The Python API accepts SpikeInterface's train_model arguments and runs the same engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from spikeinterface.core import SortingAnalyzer, load_sorting_analyzer
from spikeinterface.curation import load_model, model_based_label_units

from unitrefine import UnitRefineError, train_model
from unitrefine.search.estimators import TRUSTED_TYPES


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
        ({"mode": "analyzers"}, r"mode='analyzers' needs analyzers=\[\.\.\.\]"),
        ({"mode": "cvs"}, r"mode='cvs' is not a train_model mode.*Did you mean 'csv'\?"),
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
    before = listing(tmp_path)
    with pytest.raises(UnitRefineError, match=match):
        train_model(**args)
    assert listing(tmp_path) == before  # no model folder, no tracking store


def test_label_lists_must_align_with_metrics_rows(tmp_path: Path, tiny_recordings) -> None:
    labels = [pd.read_csv(r["labels"], sep="\t")["group"].tolist() for r in tiny_recordings]
    labels[1] = labels[1][:-1]
    with pytest.raises(UnitRefineError, match=r"labels\[1\] has 59 labels but .* has 60 units"):
        train_model(labels=labels, metrics_paths=[r["metrics"] for r in tiny_recordings], folder=tmp_path / "m",
                    overrides=["tracking.enabled=false"])


# --------------------------------------------------------------------------------------------------
# mode="analyzers": SortingAnalyzer objects in memory, labels as lists (SpikeInterface's train_model)
# --------------------------------------------------------------------------------------------------


def in_memory(bank: Path, indices: list[int]) -> tuple[list[SortingAnalyzer], list[list[str]]]:
    """In-memory copies of bank recordings (nothing they compute is written) and their labels, in unit order."""
    analyzers, labels = [], []
    for i in indices:
        analyzer = load_sorting_analyzer(bank / f"r{i}" / "analyzer").save_as(format="memory")
        truth = pd.read_csv(bank / f"r{i}" / "cluster_group.tsv", sep="\t", dtype=str).set_index("cluster_id")["group"]
        analyzers.append(analyzer)
        labels.append([truth[str(u)] for u in analyzer.unit_ids])
    return analyzers, labels


def listing(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_model_on_analyzers_computes_missing_metrics_as_stored(tmp_path: Path, synthetic_bank: Path) -> None:
    before = listing(synthetic_bank)
    analyzers, labels = in_memory(synthetic_bank, [0, 1, 2])
    # Each analyzer holds some metrics; the others compute them with the parameters stored here.
    analyzers[0].compute("quality_metrics", metric_names=["snr", "presence_ratio"],
                         metric_params={"presence_ratio": {"bin_duration_s": 10}})
    analyzers[1].compute("template_metrics", metric_names=["peak_to_trough_duration"])
    labels[2] = np.array(labels[2], dtype=object)  # arrays are lists of labels too
    labels[2][0] = None  # an unlabelled unit is left out
    result = train_model(
        mode="analyzers", analyzers=analyzers, labels=labels, folder=tmp_path / "model",
        classifiers=["LogisticRegression"], scaling_techniques=["standard_scaler"], imputation_strategies=["median"],
        search_kwargs={"n_iter": 2, "cv": 3}, seed=3, overrides=[f"root={tmp_path}", "search.n_jobs=1"],
    )
    info = json.loads((tmp_path / "model" / "model_info.json").read_text())
    assert info["features"] == ["snr", "presence_ratio", "peak_to_trough_duration"]
    assert info["label_conversion"] == {"0": "good", "1": "mua", "2": "noise"}
    quality = info["metric_params"]["quality_metric_params"]
    assert quality["metric_params"]["presence_ratio"] == {"bin_duration_s": 10, "mean_fr_ratio_thresh": 0.0}
    for analyzer in analyzers:  # computed where missing, with analyzers[0]'s parameters
        ext = analyzer.get_extension("quality_metrics")
        assert {"snr", "presence_ratio"} <= set(ext.get_computed_metric_names())
        assert ext.params["metric_params"]["presence_ratio"]["bin_duration_s"] == 10
        template = analyzer.get_extension("template_metrics").get_data()
        assert len(template) == analyzer.get_num_units() and template["peak_to_trough_duration"].notna().all()
    # Tracked and registered: the run finished, and the version returned is the one registered from it.
    client = MlflowClient(result.tracking_uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    registered = client.search_model_versions(f"run_id='{result.run_id}'")
    assert [str(v.version) for v in registered] == [result.model_version]
    # SpikeInterface applies the model, refusing metrics computed with other parameters than the model's.
    model, _ = load_model(model_folder=tmp_path / "model", trusted=list(TRUSTED_TYPES))
    assert list(model.feature_names_in_) == info["features"]
    fresh, truth = in_memory(synthetic_bank, [3])
    fresh[0].compute("quality_metrics", metric_names=["snr", "presence_ratio"],
                     metric_params={"presence_ratio": {"bin_duration_s": 10}})
    fresh[0].compute("template_metrics", metric_names=["peak_to_trough_duration"])
    si = model_based_label_units(fresh[0], model_folder=tmp_path / "model", trusted=list(TRUSTED_TYPES),
                                 enforce_metric_params=True, set_predictions_as_properties=False)
    assert len(si) == len(truth[0]) and set(si["prediction"]) <= {"good", "mua", "noise"}
    assert listing(synthetic_bank) == before  # the analyzers were in memory: nothing written to their folders


def _analyzer_args(tmp_path: Path, bank: Path) -> dict[str, Any]:
    analyzers, labels = in_memory(bank, [0, 1, 2])
    return {"mode": "analyzers", "analyzers": analyzers, "labels": labels, "folder": tmp_path / "out" / "model",
            "overrides": [f"root={tmp_path}", "tracking.enabled=false"]}


def _drop_last_label(args: dict[str, Any]) -> None:
    args["labels"][1] = args["labels"][1][:-1]


def _misspell_a_label(args: dict[str, Any]) -> None:
    args["labels"][2][3] = "goood"
    args["task"] = "three_class"


def _model_folder_exists(args: dict[str, Any]) -> None:
    args["folder"].mkdir(parents=True)
    (args["folder"] / "notes.txt").write_text("mine")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a.update(labels=a["labels"][:2]), r"labels has 2 entries but there are 3 analyzers"),
        (_drop_last_label, r"labels\[1\] has 9 labels but analyzers\[1\] has 10 units.*analyzers\[1\]\.unit_ids"),
        (_misspell_a_label,
         r"labels\[2\] \(for analyzers\[2\]\) holds labels \['goood'\] that task 'three_class'.*'goood' -> 'good'"),
        (lambda a: a.update(mode="analyser"), r"mode='analyser' is not a train_model mode.*Did you mean 'analyzers'"),
        (lambda a: a.update(analyzers=None), r"mode='analyzers' needs analyzers=\[\.\.\.\]"),
        (lambda a: a.update(labels=None), r"mode='analyzers' needs labels=\[\[\.\.\.\], \.\.\.\]"),
        (lambda a: a["analyzers"].__setitem__(1, "r1/analyzer"),
         r"analyzers\[1\] is a str, not a SortingAnalyzer\. Load it with .*load_sorting_analyzer"),
        (lambda a: a.update(metrics_paths=["m.csv"] * 3), r"metrics_paths= is for mode='csv'"),
        (lambda a: a.update(mode=None, analyzers=None), r"Give either analyzers=\[\.\.\.\].*or metrics_paths"),
        (lambda a: a.update(search_kwargs={"n_jobs": 2}), r"search_kwargs \['n_jobs'\] have no counterpart"),
        (_model_folder_exists, r"Output folder .*model already exists"),
    ],
    ids=["labels_count", "unit_count", "unknown_label", "mode_typo", "no_analyzers", "no_labels", "not_an_analyzer",
         "metrics_paths_too", "neither", "search_kwargs", "folder_exists"],
)
def test_bad_analyzer_arguments_fail_before_any_work(tmp_path: Path, synthetic_bank: Path, change, match: str) -> None:
    args = _analyzer_args(tmp_path, synthetic_bank)
    analyzers = list(args["analyzers"])
    change(args)
    before = listing(tmp_path)
    with pytest.raises(UnitRefineError, match=match):
        train_model(**args)
    assert listing(tmp_path) == before  # nothing written (no model folder, no tracking store)
    assert all(a.get_extension("quality_metrics") is None for a in analyzers)  # no metric computed


def test_enforce_metric_params_refuses_analyzers_computed_differently(tmp_path: Path, synthetic_bank: Path) -> None:
    args = _analyzer_args(tmp_path, synthetic_bank)
    for analyzer, method in zip(args["analyzers"], ["extremum", "peak_to_peak", "extremum"]):
        analyzer.compute("quality_metrics", metric_names=["snr"], metric_params={"snr": {"method": method}})
    before = listing(tmp_path)
    with pytest.raises(UnitRefineError, match=r"different parameters: quality_metrics 'snr'.*recording_1.*strict"):
        train_model(**args, enforce_metric_params=True)
    assert listing(tmp_path) == before
