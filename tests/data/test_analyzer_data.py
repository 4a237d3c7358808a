"""Tests for :mod:`unitrefine.data.analyzer_data`: which metrics analyzer mode wants, which parameters it reports,
and how it reads labels, on tiny in-memory analyzers (whole-dataset loading is tested in ``test_analyzers.py``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import copy_recordings, snapshot
from omegaconf import OmegaConf
from spikeinterface.core import load_sorting_analyzer

from unitrefine.config import ComputeConfig, DatasetConfig, MetricsConfig, RecordingConfig, TaskConfig
from unitrefine.data.analyzer_data import (
    GivenAnalyzer,
    consistent_params,
    given_analyzers,
    load_analyzer_dataset,
    requested_params,
    wanted_metrics,
)
from unitrefine.errors import UnitRefineError

TASK = TaskConfig(name="three_class", classes=["good", "mua", "noise"],
                  mapping={"good": "good", "mua": "mua", "noise": "noise"})
#: Cheap quality metrics (no extension needed) and no template metrics; nothing saved on an analyzer.
CHEAP = ComputeConfig(quality_metrics=MetricsConfig(metric_names=["num_spikes", "firing_rate"]),
                      template_metrics=MetricsConfig(metric_names=[]), save=False)
QUALITY, TEMPLATE = "quality_metrics", "template_metrics"


def in_memory(bank: Path, i: int) -> tuple[Any, pd.Series]:
    """Recording ``r{i}`` of the bank as an in-memory analyzer (changes stay off the bank) and its labels."""
    analyzer = load_sorting_analyzer(bank / f"r{i}" / "analyzer").save_as(format="memory")
    labels = pd.read_csv(bank / f"r{i}" / "cluster_group.tsv", sep="\t", dtype=str).set_index("cluster_id")["group"]
    return analyzer, labels


def given_dataset(compute: ComputeConfig = CHEAP, **changes: Any) -> DatasetConfig:
    """One recording 'mine' whose analyzer and labels are handed over in memory as ``analyzers[0]``/``labels[0]``."""
    rec = RecordingConfig(id="mine", analyzer="analyzers[0]", labels="labels[0]")
    return DatasetConfig(name="ds", mode="analyzers", recordings=[rec], compute=compute, **changes)


# ----------------------------------------------------------------------------------------------- wanted metrics
def test_chosen_columns_want_the_metrics_computing_them_and_pca_ones_are_opt_in() -> None:
    columns = ["isi_violations_ratio", "snr", "isi_violations_count", "peak_to_trough_duration", "isolation_distance"]
    wanted, skipped = wanted_metrics(DatasetConfig(name="ds", mode="analyzers", metric_names=columns))
    assert wanted == {QUALITY: ["isi_violation", "snr"], TEMPLATE: ["peak_to_trough_duration"]}
    assert skipped == ["isolation_distance"]
    opted_in = DatasetConfig(name="ds", mode="analyzers", metric_names=columns, compute=ComputeConfig(pca_metrics=True))
    assert wanted_metrics(opted_in) == (
        {QUALITY: ["isi_violation", "snr", "mahalanobis"], TEMPLATE: ["peak_to_trough_duration"]}, [])


def test_without_chosen_columns_the_configured_lists_are_wanted_as_given() -> None:
    compute = ComputeConfig(quality_metrics=MetricsConfig(metric_names=["snr", "firing_rate"]),
                            template_metrics=MetricsConfig(metric_names=[]))
    assert wanted_metrics(DatasetConfig(name="ds", compute=compute)) == (
        {QUALITY: ["snr", "firing_rate"], TEMPLATE: []}, [])


def test_requested_params_are_plain_dicts_from_a_composed_config() -> None:
    composed = OmegaConf.merge(OmegaConf.structured(DatasetConfig), {
        "name": "ds", "compute": {"quality_metrics": {"metric_params": {"presence_ratio": {"bin_duration_s": 10}}},
                                  "template_metrics": {"params": {"upsampling_factor": 5}}}})
    requested = requested_params(composed)  # type: ignore[arg-type]  # a DictConfig, as Hydra hands it over
    assert requested == {QUALITY: {"metric_params": {"presence_ratio": {"bin_duration_s": 10}}, "params": {}},
                         TEMPLATE: {"metric_params": {}, "params": {"upsampling_factor": 5}}}
    assert type(requested[QUALITY]["metric_params"]) is dict
    assert type(requested[QUALITY]["metric_params"]["presence_ratio"]) is dict


# ----------------------------------------------------------------------------------------------- consistent_params
def _quality(snr_sign: str, **extra: Any) -> dict[str, Any]:
    return {"metric_names": ["snr", "firing_rate", "num_spikes"],
            "metric_params": {"snr": {"peak_sign": snr_sign}, "firing_rate": {}, "num_spikes": {}}, **extra}


def _template(upsampling: int) -> dict[str, Any]:
    return {"metric_names": ["peak_to_trough_duration"], "metric_params": {"peak_to_trough_duration": {}},
            "upsampling_factor": upsampling}


def test_parameters_all_analyzers_agree_on_are_reported_for_the_features_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    per_recording = {"r0": {QUALITY: _quality("neg", skip_pc_metrics=True), TEMPLATE: None},
                     "r1": {QUALITY: _quality("neg", skip_pc_metrics=True), TEMPLATE: _template(10)}}
    with caplog.at_level(logging.WARNING, logger="unitrefine"):
        out = consistent_params(per_recording, ["snr", "firing_rate", "peak_to_trough_duration"], strict=True)
    assert out == {
        "quality_metric_params": {"metric_names": ["snr", "firing_rate"], "skip_pc_metrics": True,
                                  "metric_params": {"snr": {"peak_sign": "neg"}, "firing_rate": {}}},
        # r0 has no template metrics: r1's parameters are the ones every analyzer holding them used.
        "template_metric_params": {"metric_names": ["peak_to_trough_duration"], "upsampling_factor": 10,
                                   "metric_params": {"peak_to_trough_duration": {}}},
    }
    assert caplog.records == []
    # No template feature: no template metrics and none of their extension-level parameters.
    only_quality = consistent_params(per_recording, ["firing_rate"], strict=True)
    assert only_quality["template_metric_params"] == {"metric_names": [], "metric_params": {}}


def test_parameters_that_differ_are_named_per_recording_and_left_out(caplog: pytest.LogCaptureFixture) -> None:
    per_recording = {"r0": {QUALITY: _quality("neg"), TEMPLATE: _template(10)},
                     "r1": {QUALITY: _quality("pos"), TEMPLATE: _template(5)}}
    features = ["snr", "num_spikes", "peak_to_trough_duration"]
    problems = ("Analyzers computed metrics with different parameters: quality_metrics 'snr': "
                'r0 {"peak_sign": "neg"}; r1 {"peak_sign": "pos"} | template_metrics parameter \'upsampling_factor\': '
                "r0 10; r1 5. Their parameters are left out of model_info.json")
    with caplog.at_level(logging.WARNING, logger="unitrefine"):
        out = consistent_params(per_recording, features, strict=False)
    assert [r.getMessage()[:len(problems)] for r in caplog.records] == [problems]
    assert out["quality_metric_params"] == {"metric_names": ["snr", "num_spikes"], "metric_params": {"num_spikes": {}}}
    assert out["template_metric_params"] == {"metric_names": ["peak_to_trough_duration"],
                                             "metric_params": {"peak_to_trough_duration": {}}}
    with pytest.raises(UnitRefineError) as raised:
        consistent_params(per_recording, features, strict=True)
    assert str(raised.value).startswith(problems) and str(raised.value).endswith(" (dataset.strict is set)")


# ----------------------------------------------------------------------------------------------- reading analyzers
def test_labels_for_units_an_analyzer_lacks_are_named(tmp_path: Path, synthetic_bank: Path) -> None:
    analyzer, labels = in_memory(synthetic_bank, 0)
    extra = pd.concat([labels, pd.Series(["good", "noise"], index=["9999", "1000"])])
    with given_analyzers({"analyzers[0]": GivenAnalyzer(analyzer, extra)}):
        with pytest.raises(UnitRefineError) as raised:
            load_analyzer_dataset(given_dataset(), TASK, tmp_path)
    assert str(raised.value) == ("labels[0]: labels for units '1000', '9999' that are not in analyzers[0]. "
                                 "Are the labels and metrics from the same sorting?")
    assert snapshot(tmp_path) == {}


def test_units_without_a_label_are_dropped_naming_them(tmp_path: Path, synthetic_bank: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    analyzer, labels = in_memory(synthetic_bank, 0)
    unit_ids = [str(u) for u in analyzer.unit_ids]
    dropped = [u for u in unit_ids if labels[u] == "good"][:2]  # every class keeps units
    kept = [u for u in unit_ids if u not in dropped]
    with given_analyzers({"analyzers[0]": GivenAnalyzer(analyzer, labels.drop(dropped))}):
        with caplog.at_level(logging.WARNING, logger="unitrefine"):
            table = load_analyzer_dataset(given_dataset(), TASK, tmp_path)
    assert table.units["unit_id"].tolist() == kept
    assert table.units["label"].tolist() == labels[kept].tolist()
    messages = [r.getMessage() for r in caplog.records]
    assert (f"mine: 2 of {len(unit_ids)} units have no label in labels[0] and are dropped "
            f"(e.g. '{dropped[0]}', '{dropped[1]}').") in messages


def test_strict_refuses_metrics_held_with_other_than_the_configured_parameters(tmp_path: Path,
                                                                             synthetic_bank: Path) -> None:
    analyzer, labels = in_memory(synthetic_bank, 0)
    analyzer.compute(QUALITY, metric_names=["presence_ratio"], metric_params={"presence_ratio": {"bin_duration_s": 10}})
    compute = ComputeConfig(quality_metrics=MetricsConfig(metric_names=["presence_ratio"],
                                                          metric_params={"presence_ratio": {"bin_duration_s": 20}}),
                            template_metrics=MetricsConfig(metric_names=[]), save=False)
    with given_analyzers({"analyzers[0]": GivenAnalyzer(analyzer, labels)}):
        with pytest.raises(UnitRefineError) as raised:
            load_analyzer_dataset(given_dataset(compute, strict=True), TASK, tmp_path)
    message = str(raised.value)
    assert message.startswith(
        "Recording 'mine' (analyzers[0]) already holds metrics computed with other parameters than configured: "
        'presence_ratio (analyzer {"bin_duration_s": 10, "mean_fr_ratio_thresh": 0.0}, '
        'config {"bin_duration_s": 20, "mean_fr_ratio_thresh": 0.0}).')
    assert message.endswith("recompute=true to recompute them. (dataset.strict is set)")
    kept = analyzer.get_extension(QUALITY).params["metric_params"]["presence_ratio"]
    assert kept["bin_duration_s"] == 10  # not recomputed
    assert snapshot(tmp_path) == {}


def test_a_label_property_is_named_as_the_source_of_a_bad_label(tmp_path: Path, synthetic_bank: Path) -> None:
    folder = copy_recordings(synthetic_bank, tmp_path, [0])[0]
    labels = pd.read_csv(folder / "cluster_group.tsv", sep="\t", dtype=str).set_index("cluster_id")["group"]
    analyzer = load_sorting_analyzer(folder / "analyzer")
    values = [labels[str(u)] for u in analyzer.unit_ids]
    first_good = values.index("good")
    values[first_good] = "Good"
    analyzer.set_sorting_property("quality", values)
    rec = RecordingConfig(id="r0", analyzer="r0/analyzer")
    dataset = DatasetConfig(name="ds", mode="analyzers", recordings=[rec], label_property="quality", compute=CHEAP)
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as raised:
        load_analyzer_dataset(dataset, TASK, tmp_path)
    assert str(raised.value).startswith(
        f"Recording 'r0' ({folder / 'analyzer'}) sorting property 'quality': label 'Good' "
        f"(first at unit {analyzer.unit_ids[first_good]}) is not known to task 'three_class'")
    assert "did you mean 'Good' -> 'good'?" in str(raised.value)
    assert snapshot(tmp_path) == before


def test_labels_for_unknown_units_leave_the_analyzer_folder_as_it_was(tmp_path: Path, synthetic_bank: Path) -> None:
    folder = copy_recordings(synthetic_bank, tmp_path, [0])[0]
    with (folder / "cluster_group.tsv").open("a") as f:
        f.write("999\tgood\n")
    rec = RecordingConfig(id="r0", analyzer="r0/analyzer", labels="r0/cluster_group.tsv")
    dataset = DatasetConfig(name="ds", mode="analyzers", recordings=[rec],
                            compute=ComputeConfig(quality_metrics=MetricsConfig(metric_names=["num_spikes"]),
                                                  template_metrics=MetricsConfig(metric_names=[])))
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError, match=r"labels for units '999'"):
        load_analyzer_dataset(dataset, TASK, tmp_path)
    assert snapshot(tmp_path) == before
