"""SpikeInterface's export layout (:mod:`unitrefine.data.si_export`): a folder with ``quality_metrics.csv``,
``template_metrics.csv`` and ``cluster_group.tsv`` is one recording for training, ``predict`` and ``suggest``."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny_models import fit_model, write_unlabelled
from conftest import read_predictions, run_predict, snapshot

from unitrefine.apply.active import parse_suggest_config, suggest
from unitrefine.config import DatasetConfig, RecordingConfig, TaskConfig
from unitrefine.data.dataset import UnitTable
from unitrefine.data.loading import load_dataset
from unitrefine.errors import UnitRefineError

TASK = TaskConfig(name="three_class", classes=["good", "mua", "noise"],
                  mapping={"good": "good", "mua": "mua", "noise": "noise", "unsorted": None})
TEMPLATE = ["peak_to_valley"]  # the rest are quality metrics


def export(folder: Path, table: pd.DataFrame, labels: dict[str, str] | None = None) -> Path:
    """Write ``table`` (``cluster_id`` + metrics) as SpikeInterface exports it: quality and template metrics
    indexed by unit id (empty header), the template table in reverse unit order, Phy's ``cluster_group.tsv`` and
    one of Phy's ``cluster_<metric>.tsv`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    metrics = table.set_index(table["cluster_id"].astype(str).rename(None)).drop(columns="cluster_id")
    metrics.drop(columns=TEMPLATE).to_csv(folder / "quality_metrics.csv")
    metrics[TEMPLATE].iloc[::-1].to_csv(folder / "template_metrics.csv")
    metrics[["snr"]].rename_axis("cluster_id").to_csv(folder / "cluster_snr.tsv", sep="\t")
    if labels is not None:
        pd.DataFrame({"cluster_id": list(labels), "group": list(labels.values())}).to_csv(
            folder / "cluster_group.tsv", sep="\t", index=False)
    return folder


def unlabelled(root: Path, name: str, n: int, seed: int) -> tuple[Path, pd.DataFrame]:
    """A recording's metrics as one CSV (``root/flat/<name>.csv``) and the table itself."""
    path = write_unlabelled(root / "flat", {name: (n, seed)}) / f"{name}.csv"
    return path, pd.read_csv(path)


def train_on(root: Path, folder: str, rec_id: str = "r1") -> UnitTable:
    """Load the one recording whose ``metrics`` is the folder ``root/folder``, without a labels file."""
    return load_dataset(DatasetConfig(name="ds", recordings=[RecordingConfig(id=rec_id, metrics=folder)]), TASK, root)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_model(tmp_path_factory.mktemp("si_export_model") / "model", "three_class")


def test_export_folder_is_one_recording_for_training(tmp_path: Path) -> None:
    table = pd.DataFrame({"cluster_id": [3, 8, 5, 12], "snr": [5.0, 3.0, 1.0, 4.0], "firing_rate": [1.0, 2.0, 0.5, 3.0],
                          "peak_to_valley": [0.1, 0.2, 0.3, 0.4]})
    export(tmp_path / "rec1", table, {"3": "good", "8": "mua", "5": "noise", "12": "unsorted"})
    before = snapshot(tmp_path)
    t = train_on(tmp_path, "rec1")
    assert snapshot(tmp_path) == before
    assert t.units["unit_id"].tolist() == ["3", "8", "5"]  # 12 is unsorted: dropped by the task
    assert t.units["label"].tolist() == ["good", "mua", "noise"]
    assert list(t.X.columns) == ["snr", "firing_rate", "peak_to_trough_duration"]  # cluster_snr.tsv is not read
    np.testing.assert_array_equal(t.X["peak_to_trough_duration"].to_numpy(), np.float32([0.1, 0.2, 0.3]))


def test_export_folder_predicts_and_suggests_as_its_single_table(tmp_path: Path, model: Path) -> None:
    flat, table = unlabelled(tmp_path, "rec1", n=20, seed=4)
    folder = export(tmp_path / "exports" / "rec1", table, {str(table["cluster_id"][0]): "good"})
    by_table = run_predict(model=model, data=flat, output=tmp_path / "flat.csv").predictions
    by_folder = run_predict(model=model, data=folder, output=tmp_path / "folder.csv").predictions
    pd.testing.assert_frame_equal(by_folder, by_table)  # joined on unit id despite the reversed template table
    assert set(read_predictions(tmp_path / "folder.csv")["recording"]) == {"rec1"}
    # A folder of export folders: one recording each.
    export(tmp_path / "exports" / "rec2", unlabelled(tmp_path, "rec2", n=10, seed=6)[1])
    both = run_predict(model=model, data=tmp_path / "exports", output=tmp_path / "both.csv").predictions
    assert both["recording"].value_counts().to_dict() == {"rec1": 20, "rec2": 10}
    # suggest: the export folder as data, its cluster_group.tsv as the labels already given.
    cfg = parse_suggest_config({"model": str(model), "data": str(folder), "labels": str(folder), "n": 5,
                                "output": str(tmp_path / "s.csv")})
    result = suggest(cfg)
    assert result.n_labelled == 1 and len(result.suggestions) == 5
    assert str(table["cluster_id"][0]) not in set(result.suggestions["unit_id"])


def test_metrics_tables_with_different_units_are_refused(tmp_path: Path, model: Path) -> None:
    _, table = unlabelled(tmp_path, "rec1", n=8, seed=4)
    folder = export(tmp_path / "rec1", table, {str(u): "good" for u in table["cluster_id"]})
    template = pd.read_csv(folder / "template_metrics.csv", index_col=0)
    template.rename(index={int(table["cluster_id"][0]): 999}).to_csv(folder / "template_metrics.csv")
    first = str(table["cluster_id"][0])
    expected = (f"{folder}: quality_metrics.csv and template_metrics.csv hold different units (units '{first}' are "
                "only in quality_metrics.csv; units '999' are only in template_metrics.csv)")
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError, match="^" + re.escape(expected)):
        train_on(tmp_path, "rec1")
    with pytest.raises(UnitRefineError, match="^" + re.escape(expected)):
        run_predict(model=model, data=folder, output=tmp_path / "p.csv")
    assert snapshot(tmp_path) == before


def test_labels_for_units_the_metrics_lack_are_refused(tmp_path: Path) -> None:
    table = pd.DataFrame({"cluster_id": [1, 2, 3], "snr": [5.0, 3.0, 1.0], "peak_to_valley": [0.1, 0.2, 0.3]})
    folder = export(tmp_path / "rec1", table, {"1": "good", "2": "mua", "3": "noise", "4": "good"})
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError, match=f"^{folder / 'cluster_group.tsv'}: labels for units '4' that are not in "
                                              f"{folder}"):
        train_on(tmp_path, "rec1")
    assert snapshot(tmp_path) == before


def test_phy_cluster_ids_are_mapped_to_spikeinterface_unit_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # export_to_phy numbers clusters 0..n-1 in the sorting's unit order and writes the map beside cluster_group.tsv.
    table = pd.DataFrame({"cluster_id": [7, 3, 5], "snr": [5.0, 3.0, 1.0], "peak_to_valley": [0.1, 0.2, 0.3]})
    folder = export(tmp_path / "rec1", table, {"0": "good", "1": "mua", "2": "noise"})
    pd.DataFrame({"cluster_id": [0, 1, 2], "si_unit_id": [7, 3, 5]}).to_csv(folder / "cluster_si_unit_ids.tsv",
                                                                            sep="\t", index=False)
    with caplog.at_level(logging.WARNING):
        t = train_on(tmp_path, "rec1")
    assert dict(zip(t.units["unit_id"], t.units["label"])) == {"7": "good", "3": "mua", "5": "noise"}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the map and cluster_*.tsv are not tables
    (folder / "cluster_group.tsv").write_text("cluster_id\tgroup\n0\tgood\n1\tmua\n2\tnoise\n3\tgood\n")
    with pytest.raises(UnitRefineError, match=r"cluster_group.tsv: clusters '3' are not in .*cluster_si_unit_ids.tsv"):
        train_on(tmp_path, "rec1")


def test_a_folder_that_is_not_an_export_and_an_export_without_labels(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "metrics.csv").write_text("cluster_id,snr\n0,1.0\n")
    table = pd.DataFrame({"cluster_id": [1, 2], "snr": [5.0, 3.0], "peak_to_valley": [0.1, 0.2]})
    export(tmp_path / "rec1", table)
    before = snapshot(tmp_path)
    not_export = f"The metrics of recording 'p', {tmp_path / 'plain'}, is a folder without SpikeInterface's quality"
    with pytest.raises(UnitRefineError, match=not_export):
        train_on(tmp_path, "plain", "p")
    with pytest.raises(UnitRefineError, match=f"Recording 'r1' has no labels: {tmp_path / 'rec1'} holds no "
                                              "cluster_group.tsv"):
        train_on(tmp_path, "rec1")
    assert snapshot(tmp_path) == before
