"""Tests for :mod:`unitrefine.data.recordings`: one recording's metrics joined with its labels.

The file-format errors of whole datasets are tested in ``test_dataset.py`` (through ``load_dataset``); here
:func:`prepare_recording` and :func:`load_recording` themselves, on in-memory tables and tiny files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import snapshot

from unitrefine.config import DatasetConfig, RecordingConfig, TaskConfig
from unitrefine.data.recordings import load_recording, prepare_recording
from unitrefine.errors import UnitRefineError

TASK = TaskConfig(name="sua_vs_all", classes=["other", "good"],
                  mapping={"good": "good", "mua": "other", "noise": "other", "unsorted": None})
DATASET = DatasetConfig(name="ds")
METRICS_PATH = Path("data") / "r1" / "metrics.csv"
SOURCE = "data/r1/cluster_group.tsv"


def _rest(**columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns, dtype=object)


def _prepare(ids: list[str], rest: pd.DataFrame, labels: pd.Series, dataset: DatasetConfig = DATASET,
             filter_labels: bool = True) -> pd.DataFrame:
    return prepare_recording("r1", pd.Series(ids, dtype=object), rest, labels, SOURCE, METRICS_PATH, dataset, TASK,
                             filter_labels=filter_labels)


# ----------------------------------------------------------------------------------------------- prepare_recording
def test_labels_are_matched_to_units_by_id_not_by_position(caplog: pytest.LogCaptureFixture) -> None:
    rest = _rest(snr=["5.0", "3.0", "1.5", "2.0"], firing_rate=["1", "2", "3", "4"])
    labels = pd.Series(["noise", "unsorted", "good"], index=["7", "9", "3"])  # other order; '8' has no label
    before = rest.copy()
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        out = _prepare(["3", "7", "8", "9"], rest, labels)
    assert list(out.columns) == ["snr", "firing_rate", "__label", "__class", "__unit_id"]
    assert out["__unit_id"].tolist() == ["3", "7"]  # '8' unlabelled, '9' dropped by the task
    assert out["__label"].tolist() == ["good", "noise"]
    assert out["__class"].tolist() == ["good", "other"]
    np.testing.assert_array_equal(out["snr"].to_numpy(), [5.0, 3.0])
    assert out["firing_rate"].dtype == np.float64 and out.index.tolist() == [0, 1]
    pd.testing.assert_frame_equal(rest, before)  # the caller's table is not changed
    messages = [r.getMessage() for r in caplog.records]
    assert f"r1: 1 of 4 units have no label in {SOURCE} and are dropped (e.g. '8')." in messages
    assert "r1: 1 units whose label the task drops are left out." in messages


def test_labels_for_units_the_metrics_lack_are_all_named_with_both_files() -> None:
    rest = _rest(snr=["1", "2"])
    labels = pd.Series(["good"] * 9, index=["1", "2", "30", "31", "32", "33", "34", "35", "36"])
    with pytest.raises(UnitRefineError) as raised:
        _prepare(["1", "2"], rest, labels)
    assert str(raised.value) == (
        f"{SOURCE}: labels for units '30', '31', '32', '33', '34' (and 2 more) that are not in {METRICS_PATH}. "
        "Are the labels and metrics from the same sorting?"
    )


def test_every_unknown_label_is_named_with_a_case_hint_for_each_near_miss() -> None:
    rest = _rest(snr=["1", "2", "3", "4"])
    labels = pd.Series(["good", "MUA", "great", "Noise"], index=["1", "2", "3", "4"])
    with pytest.raises(UnitRefineError) as raised:
        _prepare(["1", "2", "3", "4"], rest, labels)
    message = str(raised.value)
    assert message.startswith(f"{SOURCE}: label 'MUA', 'Noise', 'great' (first at unit 2) is not known to task "
                              "'sua_vs_all', which maps ['good', 'mua', 'noise', 'unsorted'].")
    assert "did you mean 'MUA' -> 'mua', 'Noise' -> 'noise'?" in message
    assert "'great' ->" not in message and message.endswith("choose another task (task=...).")


def test_labels_of_a_label_column_are_taken_in_row_order_and_may_not_be_empty() -> None:
    rest = _rest(snr=["1", "2", "3"])
    labels = pd.Series(["mua", "good", "noise"], index=["5", "6", "7"])  # unchecked: one per row
    out = _prepare(["5", "6", "7"], rest, labels, filter_labels=False)
    assert out["__unit_id"].tolist() == ["5", "6", "7"]
    assert out["__class"].tolist() == ["other", "good", "other"]
    with pytest.raises(UnitRefineError) as raised:
        _prepare(["5", "6", "7"], rest, pd.Series(["mua", None, None], index=["5", "6", "7"]), filter_labels=False)
    assert str(raised.value) == (f"{SOURCE}: units '6', '7' have no label. "
                                 "Label them, or remove them from the labels file.")


def test_metric_selection_accepts_old_names_and_drops_the_label_column() -> None:
    rest = _rest(snr=["5", "3"], peak_trough_ratio=["-0.5", "0.25"], drift=["1", "2"], quality=["x", "y"])
    labels = pd.Series(["good", "mua"], index=["1", "2"])
    chosen = DatasetConfig(name="ds", metric_names=["peak_after_to_trough_ratio", "snr"], label_column="quality")
    out = _prepare(["1", "2"], rest, labels, dataset=chosen)
    assert [c for c in out.columns if not c.startswith("__")] == ["snr", "peak_after_to_trough_ratio"]
    np.testing.assert_array_equal(out["peak_after_to_trough_ratio"].to_numpy(), [0.5, -0.25])  # sign flipped
    excluded = DatasetConfig(name="ds", exclude_metrics=["peak_after_to_trough_ratio"], label_column="quality")
    out = _prepare(["1", "2"], rest, labels, dataset=excluded)
    assert [c for c in out.columns if not c.startswith("__")] == ["snr", "drift"]


# ----------------------------------------------------------------------------------------------- load_recording
def test_a_labels_file_wins_over_the_label_column_which_is_never_a_feature(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("cluster_id,snr,quality\n0,5.0,mua\n1,3.0,mua\n")
    (tmp_path / "l.tsv").write_text("cluster_id\tgroup\n0\tgood\n1\tnoise\n")
    out = load_recording(RecordingConfig(id="r1", metrics="m.csv", labels="l.tsv"),
                         DatasetConfig(name="ds", label_column="quality"), TASK, tmp_path)
    assert out["__label"].tolist() == ["good", "noise"]
    assert [c for c in out.columns if not c.startswith("__")] == ["snr"]


def test_paths_are_relative_to_root_and_may_start_with_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / "rec").mkdir(parents=True)
    (home / "rec" / "m.csv").write_text("unit_id,snr\na,1.5\nb,2.5\n")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "l.csv").write_text("unit_id,label\na,good\nb,mua\n")
    monkeypatch.setenv("HOME", str(home))
    out = load_recording(RecordingConfig(id="r1", metrics="~/rec/m.csv", labels="l.csv"), DATASET, TASK,
                         tmp_path / "root")
    assert out["__unit_id"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(out["snr"].to_numpy(), [1.5, 2.5])


def test_a_folder_of_other_tables_names_the_recording_folder_and_mode(tmp_path: Path) -> None:
    """An analyzer folder given as CSV-mode metrics: the message points at ``dataset.mode=analyzers``."""
    analyzer = tmp_path / "r1" / "analyzer"
    analyzer.mkdir(parents=True)
    (analyzer / "spikeinterface_info.json").write_text('{"object": "SortingAnalyzer"}')
    (tmp_path / "r1" / "l.tsv").write_text("cluster_id\tgroup\n0\tgood\n")
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as raised:
        load_recording(RecordingConfig(id="r1", metrics="r1/analyzer", labels="r1/l.tsv"), DATASET, TASK, tmp_path)
    message = str(raised.value)
    assert f"The metrics of recording 'r1', {analyzer}, is a folder without" in message
    assert "dataset.mode=analyzers" in message
    assert snapshot(tmp_path) == before
