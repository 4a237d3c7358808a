"""Analyzer mode (:mod:`unitrefine.data.analyzers`, :mod:`unitrefine.data.analyzer_data`) on tiny generated
analyzers."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import TINY_QUALITY, TINY_TEMPLATE, analyzer_dataset, copy_recordings, make_analyzer_config
from spikeinterface.core import load_sorting_analyzer

from unitrefine.config import compose_config, validate_config
from unitrefine.data import analyzers as az
from unitrefine.data.analyzer_data import GivenAnalyzer, given_analyzers, stored_compute
from unitrefine.data.loading import load_dataset
from unitrefine.errors import UnitRefineError


def load(tmp_path: Path, dataset: dict, task: str = "three_class"):
    cfg = make_analyzer_config(tmp_path, dataset, [f"task={task}"])
    return load_dataset(cfg.dataset, cfg.task, cfg.root_dir)


def test_missing_metrics_are_computed_saved_and_their_parameters_returned(tmp_path: Path, synthetic_bank: Path) -> None:
    folders = copy_recordings(synthetic_bank, tmp_path / "data", [0, 1])
    table = load(tmp_path, analyzer_dataset(folders))
    assert table.class_counts() == {"good": 10, "mua": 4, "noise": 6}
    assert set(table.units["recording"]) == {"r0", "r1"}
    expected = {"snr", "isi_violations_ratio", "peak_to_trough_duration", "waveform_baseline_flatness"}
    assert expected <= set(table.X.columns)
    quality = table.metric_params["quality_metric_params"]
    assert quality["metric_names"] == TINY_QUALITY  # metric names (as SpikeInterface stores them), not columns
    assert quality["metric_params"]["presence_ratio"] == {"bin_duration_s": 10, "mean_fr_ratio_thresh": 0.0}
    assert quality["metric_params"]["firing_range"]["percentiles"] == [5, 95]  # a list, as JSON gives it back
    template = table.metric_params["template_metric_params"]
    assert template["metric_names"] == TINY_TEMPLATE
    assert template["metric_params"]["waveform_baseline_flatness"] == {"baseline_window_ms": [0.0, 0.5]}
    assert template["upsampling_factor"] == 10  # extension-level parameters are kept too
    # Saved on the analyzers as their SpikeInterface extensions: a second load computes nothing.
    reloaded = load_sorting_analyzer(folders[0] / "analyzer")
    assert set(TINY_QUALITY) <= set(reloaded.get_extension("quality_metrics").get_computed_metric_names())
    again = load(tmp_path, analyzer_dataset(folders))
    pd.testing.assert_frame_equal(again.X, table.X)


def test_metrics_already_on_an_analyzer_are_used_and_differing_parameters_named(
    tmp_path: Path, synthetic_bank: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folders = copy_recordings(synthetic_bank, tmp_path / "data", [0, 1])
    analyzer = load_sorting_analyzer(folders[1] / "analyzer")
    analyzer.compute("quality_metrics", metric_names=["snr"], metric_params={"snr": {"method": "peak_to_peak"}})
    with caplog.at_level(logging.WARNING):
        table = load(tmp_path, analyzer_dataset(folders))
    assert "different parameters" in caplog.text and "'snr'" in caplog.text and "r1" in caplog.text
    assert "snr" not in table.metric_params["quality_metric_params"]["metric_params"]  # left out: not used throughout
    assert "snr" in table.metric_params["quality_metric_params"]["metric_names"]  # so enforce_metric_params refuses
    kept = load_sorting_analyzer(folders[1] / "analyzer").get_extension("quality_metrics")
    assert kept.params["metric_params"]["snr"] == {"method": "peak_to_peak"}  # the analyzer's own metric is kept
    with pytest.raises(UnitRefineError, match=r"different parameters.*dataset\.strict"):
        load(tmp_path, analyzer_dataset(folders, strict=True))


def test_configured_parameters_differing_from_existing_metrics_warn(tmp_path: Path, synthetic_bank: Path,
                                                                    caplog) -> None:
    folders = copy_recordings(synthetic_bank, tmp_path / "data", [0])
    load(tmp_path, analyzer_dataset(folders))  # computes presence_ratio with 10 s bins
    changed = analyzer_dataset(folders)
    changed["compute"]["quality_metrics"]["metric_params"] = {"presence_ratio": {"bin_duration_s": 20}}
    with caplog.at_level(logging.WARNING):
        load(tmp_path, changed)
    assert "presence_ratio" in caplog.text and "recompute=true" in caplog.text
    table = load(tmp_path, {**changed, "compute": {**changed["compute"], "recompute": True}})
    assert table.metric_params["quality_metric_params"]["metric_params"]["presence_ratio"]["bin_duration_s"] == 20


def test_labels_from_a_sorting_property_or_a_csv(tmp_path: Path, synthetic_bank: Path) -> None:
    folders = copy_recordings(synthetic_bank, tmp_path / "data", [0, 1])
    expected = load(tmp_path, analyzer_dataset(folders))
    for folder in folders:  # the same labels, as a sorting property and as a CSV
        labels = pd.read_csv(folder / "cluster_group.tsv", sep="\t")
        analyzer = load_sorting_analyzer(folder / "analyzer")
        by_id = dict(zip(labels["cluster_id"].astype(str), labels["group"]))
        analyzer.set_sorting_property("quality", [by_id[str(u)] for u in analyzer.unit_ids])
        labels.rename(columns={"cluster_id": "unit_id", "group": "label"}).to_csv(folder / "labels.csv", index=False)
    by_property = analyzer_dataset(folders, label_property="quality")
    for rec in by_property["recordings"]:
        rec["labels"] = None
    assert load(tmp_path, by_property).fingerprint() == expected.fingerprint()
    by_csv = analyzer_dataset(folders)
    for rec, folder in zip(by_csv["recordings"], folders):
        rec["labels"] = str(folder / "labels.csv")
    assert load(tmp_path, by_csv).fingerprint() == expected.fingerprint()
    with pytest.raises(UnitRefineError, match="no property 'curation'"):
        load(tmp_path, {**by_property, "label_property": "curation"})


def test_labels_for_unknown_units_name_them_and_the_file(tmp_path: Path, synthetic_bank: Path) -> None:
    folders = copy_recordings(synthetic_bank, tmp_path / "data", [0])
    labels_file = folders[0] / "cluster_group.tsv"
    with labels_file.open("a") as f:
        f.write("999\tgood\n")
    with pytest.raises(UnitRefineError, match=r"labels for units '999' that are not in .*analyzer"):
        load(tmp_path, analyzer_dataset(folders))


def _damage(folder: Path, how: str) -> Path:
    analyzer = folder / "analyzer"
    if how == "missing":
        shutil.rmtree(analyzer)
    elif how == "not_an_analyzer":
        shutil.rmtree(analyzer)
        analyzer.mkdir()
        (analyzer / "notes.txt").write_text("hello")
    elif how == "garbled_info":
        (analyzer / "spikeinterface_info.json").write_text("{not json")
    elif how == "no_sorting":
        shutil.rmtree(analyzer / "sorting")
    return analyzer


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing", "does not exist"),
        ("not_an_analyzer", "is not a SortingAnalyzer folder"),
        ("garbled_info", "is not a readable SortingAnalyzer folder"),
        ("no_sorting", "could not be loaded"),
    ],
)
def test_missing_or_damaged_analyzer_folders_are_clear_errors(tmp_path: Path, synthetic_bank: Path, how: str,
                                                              message: str) -> None:
    folders = copy_recordings(synthetic_bank, tmp_path / "data", [0])
    path = _damage(folders[0], how)
    with pytest.raises(UnitRefineError, match=message) as excinfo:
        load(tmp_path, analyzer_dataset(folders))
    assert str(path) in str(excinfo.value)


def test_zarr_analyzers_load_like_binary_folders(tmp_path: Path, synthetic_bank: Path) -> None:
    folders = copy_recordings(synthetic_bank, tmp_path / "data", [0])
    binary = load(tmp_path, analyzer_dataset(folders))
    zarr_folder = tmp_path / "zarr" / "r0"
    zarr_folder.mkdir(parents=True)
    load_sorting_analyzer(folders[0] / "analyzer").save_as(format="zarr", folder=zarr_folder / "analyzer.zarr")
    shutil.copy(folders[0] / "cluster_group.tsv", zarr_folder)
    dataset = analyzer_dataset([zarr_folder])
    dataset["recordings"][0]["analyzer"] = str(zarr_folder / "analyzer.zarr")
    zarr = load(tmp_path, dataset)
    pd.testing.assert_frame_equal(zarr.X, binary.X, check_like=True)  # zarr lists columns in another order


def test_an_analyzer_without_its_recording_cannot_compute_template_dependent_metrics(tmp_path: Path, caplog) -> None:
    from unitrefine.config import GenerateConfig
    from unitrefine.data.synthetic import make_units, write_recording

    recording, sorting, labels = make_units(GenerateConfig(duration_s=60.0, num_channels=4, num_units=3, n_merged=0,
                                                           n_contaminated=0, n_noise=1), [1])
    folder = write_recording(tmp_path / "bare", "analyzer", "cluster_group.tsv", recording, sorting, labels,
                             ["random_spikes"], {})
    with pytest.raises(UnitRefineError, match=r"need the recording, which this analyzer does not have"):
        load(tmp_path, analyzer_dataset([folder]), task="sua_vs_all")
    # With SpikeInterface's default lists, what cannot be computed is skipped instead, with a warning.
    dataset = analyzer_dataset([folder], compute={}, exclude_metrics=["rp_contamination"])  # NaN without numba
    with caplog.at_level(logging.WARNING):
        table = load(tmp_path, dataset, task="sua_vs_all")
    assert "skipping quality_metrics" in caplog.text and "'snr'" in caplog.text
    assert "firing_rate" in table.X.columns and "snr" not in table.X.columns
    assert "peak_to_trough_duration" not in table.X.columns  # template metrics need templates: skipped too


@pytest.mark.parametrize(
    ("compute", "metric_names", "message"),
    [
        ({"quality_metrics": {"metric_names": ["snr", "d_prime"]}}, None,
         r"PCA-based metrics \['d_prime'\].*pca_metrics=true"),
        ({"quality_metrics": {"metric_names": ["snr", "snrr"]}}, None, r"unknown metrics \['snrr'\]"),
        ({"template_metrics": {"metric_params": {"half_widht": {}}}}, None,
         r"metric_params names unknown metrics \['half_widht'\]"),
        ({}, ["snr", "isolation_distance"], r"PCA-based metrics that analyzers lack.*pca_metrics=true"),
    ],
)
def test_metric_choices_are_checked(tmp_path: Path, synthetic_bank: Path, compute: dict, metric_names,
                                    message: str) -> None:
    folders = copy_recordings(synthetic_bank, tmp_path / "data", [0])
    with pytest.raises(UnitRefineError, match=message):
        load(tmp_path, analyzer_dataset(folders, compute=compute, metric_names=metric_names))


def test_strict_refuses_analyzers_with_different_metric_sets(tmp_path: Path, synthetic_bank: Path) -> None:
    folders = copy_recordings(synthetic_bank, tmp_path / "data", [0, 1])
    analyzer = load_sorting_analyzer(folders[0] / "analyzer")
    analyzer.compute("quality_metrics", metric_names=["sliding_rp_violation"])  # only r0 gains this metric
    with pytest.raises(UnitRefineError, match=r"different metric sets.*'r1': \['sliding_rp_violation'\]"):
        load(tmp_path, analyzer_dataset(folders, strict=True))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset.mode=analyzers"], r"recordings \['tutorial_mouse4_imec0'\] have no 'analyzer' path"),
        (["dataset.mode=parquet"], r"dataset\.mode .*'parquet'"),
        (["dataset.mode=analyzers", "+dataset.recordings.0.analyzer=x", "dataset.recordings.0.labels=null"],
         r"have no labels.*label_property"),
        (["dataset.recordings.0.metrics=null"], r"mode is 'csv' but recordings .* have no 'metrics' path"),
    ],
)
def test_dataset_mode_requirements_are_validated(overrides: list[str], message: str) -> None:
    with pytest.raises(UnitRefineError, match=message):
        validate_config(compose_config(overrides))


def test_model_info_metric_params_come_from_the_analyzers(synthetic_models: dict[str, Path]) -> None:
    info = json.loads((synthetic_models["three_class"] / "model_info.json").read_text())
    params = info["metric_params"]
    assert params["quality_metric_params"]["metric_params"]["presence_ratio"]["bin_duration_s"] == 10
    flatness = params["template_metric_params"]["metric_params"]["waveform_baseline_flatness"]
    assert flatness == {"baseline_window_ms": [0.0, 0.5]}
    assert info["label_conversion"] == {"0": "good", "1": "mua", "2": "noise"}


def _in_memory(bank: Path, i: int) -> tuple[Any, pd.Series]:
    analyzer = load_sorting_analyzer(bank / f"r{i}" / "analyzer").save_as(format="memory")
    labels = pd.read_csv(bank / f"r{i}" / "cluster_group.tsv", sep="\t", dtype=str).set_index("cluster_id")["group"]
    return analyzer, labels


def test_stored_compute_wants_what_any_analyzer_holds_with_its_parameters(synthetic_bank: Path) -> None:
    (a0, _), (a1, _) = _in_memory(synthetic_bank, 0), _in_memory(synthetic_bank, 1)
    assert stored_compute([a0, a1]) == {}  # none holds metrics: SpikeInterface's default lists
    a0.compute("quality_metrics", metric_names=["snr", "firing_rate"],
               metric_params={"snr": {"method": "peak_to_peak"}})
    a1.compute("quality_metrics", metric_names=["firing_rate"])
    compute = stored_compute([a0, a1])
    assert sorted(compute["quality_metrics"]["metric_names"]) == ["firing_rate", "snr"]
    assert compute["quality_metrics"]["metric_params"] == {"snr": {"method": "peak_to_peak"}}  # what a1 lacks
    stored = az.extension_params(a0, "quality_metrics")
    assert compute["quality_metrics"]["params"] == {k: v for k, v in stored.items() if not k.startswith("metric_")}
    assert compute["template_metrics"] == {"metric_names": [], "params": {}, "metric_params": {}}
    assert compute["pca_metrics"] is True  # no PCA metric is lacked


def test_analyzers_given_in_memory_replace_folders_and_label_files(tmp_path: Path, synthetic_bank: Path) -> None:
    analyzer, labels = _in_memory(synthetic_bank, 0)
    dataset = analyzer_dataset([synthetic_bank / "r0"])
    dataset["recordings"] = [{"id": "mine", "analyzer": "analyzers[0]", "labels": "labels[0]"}]
    with given_analyzers({"analyzers[0]": GivenAnalyzer(analyzer, labels)}):
        table = load(tmp_path, dataset)
    assert table.class_counts() == labels.value_counts().to_dict()
    assert set(TINY_QUALITY) <= set(analyzer.get_extension("quality_metrics").get_computed_metric_names())
    with pytest.raises(UnitRefineError, match=r"analyzers\[0\] does not exist"):
        load(tmp_path, dataset)  # outside the block it names a folder
