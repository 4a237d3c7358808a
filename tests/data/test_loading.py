"""Tests for :mod:`unitrefine.data.loading`: :func:`load_dataset` reads each mode's files, and only those."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import copy_recordings, snapshot
from omegaconf import OmegaConf

from unitrefine.config import (
    ComputeConfig,
    DatasetConfig,
    MetricsConfig,
    RecordingConfig,
    TaskConfig,
    compose_config,
    validate_config,
)
from unitrefine.data.loading import load_dataset
from unitrefine.errors import UnitRefineError

TASK = TaskConfig(name="three_class", classes=["good", "mua", "noise"],
                  mapping={"good": "good", "mua": "mua", "noise": "noise"})
#: Two cheap quality metrics (no extension needed), no template metrics, nothing saved on the analyzer.
CHEAP = ComputeConfig(quality_metrics=MetricsConfig(metric_names=["num_spikes", "firing_rate"]),
                      template_metrics=MetricsConfig(metric_names=[]), save=False)


@pytest.fixture
def both(tmp_path: Path, synthetic_bank: Path) -> RecordingConfig:
    """A recording with both an analyzer folder and a metrics table (``snr`` only) for the same units."""
    folder = copy_recordings(synthetic_bank, tmp_path, [0])[0]
    labels = pd.read_csv(folder / "cluster_group.tsv", sep="\t", dtype=str)
    snr = np.arange(len(labels), dtype=float) + 0.5
    pd.DataFrame({"cluster_id": labels["cluster_id"], "snr": snr}).to_csv(folder / "m.csv", index=False)
    return RecordingConfig(id="r0", metrics="r0/m.csv", analyzer="r0/analyzer", labels="r0/cluster_group.tsv")


def test_the_mode_chooses_the_metrics_table_or_the_analyzer(tmp_path: Path, both: RecordingConfig) -> None:
    labels = pd.read_csv(tmp_path / "r0" / "cluster_group.tsv", sep="\t", dtype=str)
    before = snapshot(tmp_path)

    csv = load_dataset(DatasetConfig(name="ds", recordings=[both], compute=CHEAP), TASK, tmp_path)
    assert list(csv.X.columns) == ["snr"]
    np.testing.assert_array_equal(csv.X["snr"].to_numpy(), np.float32(np.arange(len(labels)) + 0.5))
    assert csv.metric_params is None  # unknown for a table

    analyzers = load_dataset(DatasetConfig(name="ds", mode="analyzers", recordings=[both], compute=CHEAP), TASK,
                             tmp_path)
    assert list(analyzers.X.columns) == ["num_spikes", "firing_rate"]
    assert analyzers.metric_params is not None
    assert analyzers.metric_params["quality_metric_params"]["metric_names"] == ["num_spikes", "firing_rate"]
    firing_rate = analyzers.X["firing_rate"].to_numpy()
    np.testing.assert_allclose(firing_rate, analyzers.X["num_spikes"].to_numpy() / 60.0, rtol=1e-6)  # 60 s
    # Same units and labels either way: only where the metrics come from differs.
    expected = dict(zip(labels["cluster_id"], labels["group"]))
    assert len(expected) == 10
    for table in (csv, analyzers):
        assert dict(zip(table.units["unit_id"], table.units["label"])) == expected
    assert snapshot(tmp_path) == before  # compute.save=false: nothing written on the analyzer


def test_each_mode_ignores_the_other_modes_path(tmp_path: Path, both: RecordingConfig) -> None:
    """A stale path of the other mode (here: files that do not exist) is never opened."""
    before = snapshot(tmp_path)
    csv_only = RecordingConfig(id="r0", metrics=both.metrics, analyzer="r0/gone", labels=both.labels)
    csv = load_dataset(DatasetConfig(name="ds", recordings=[csv_only]), TASK, tmp_path)
    assert list(csv.X.columns) == ["snr"] and len(csv) == 10
    analyzer_only = RecordingConfig(id="r0", metrics="r0/gone.csv", analyzer=both.analyzer, labels=both.labels)
    analyzers = load_dataset(DatasetConfig(name="ds", mode="analyzers", recordings=[analyzer_only], compute=CHEAP),
                             TASK, tmp_path)
    assert list(analyzers.X.columns) == ["num_spikes", "firing_rate"] and len(analyzers) == 10
    assert snapshot(tmp_path) == before


def test_a_bad_mode_of_the_evaluation_dataset_is_named_by_its_key_before_loading() -> None:
    cfg = compose_config(["+experiment=smoke"])
    OmegaConf.update(cfg, "registry.evaluation_dataset", {
        "name": "eval", "mode": "analyzer", "recordings": [{"id": "e1", "metrics": "m.csv", "labels": "l.tsv"}],
    }, merge=False)
    with pytest.raises(UnitRefineError) as raised:
        validate_config(cfg)
    assert ("registry.evaluation_dataset.mode must be one of: csv, analyzers (got 'analyzer'; did you mean "
            "analyzers?)") in str(raised.value)


def test_load_dataset_itself_refuses_an_unknown_mode(tmp_path: Path, both: RecordingConfig) -> None:
    with pytest.raises(UnitRefineError, match=r"dataset\.mode.*'Analyzers'"):
        load_dataset(DatasetConfig(name="ds", mode="Analyzers", recordings=[both], compute=CHEAP), TASK, tmp_path)
