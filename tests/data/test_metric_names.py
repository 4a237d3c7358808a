"""Tests for :mod:`unitrefine.data.metric_names`: old SpikeInterface template-metric names and their current ones.

Loading tables with old names end to end is tested in ``test_dataset.py``; here the functions themselves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from spikeinterface.curation.model_based_curation import (
    _BACKWARD_COMPATIBILITY_MAP,
    _handle_backwards_compatibility_in_metric_names,
)

from unitrefine.data.metric_names import RENAMED_METRICS, current_metric_name, rename_old_metrics, with_old_names

SOURCE = Path("rec1") / "quality_metrics.csv"


def test_renames_and_sign_flips_agree_with_spikeinterface() -> None:
    expected = {old: (new["name"], -1.0 if new.get("flip_sign") else 1.0)
                for old, new in _BACKWARD_COMPATIBILITY_MAP.items()}
    assert RENAMED_METRICS == expected
    names = ["snr", "peak_to_valley", "half_width", "peak_trough_ratio", "peak_to_trough_duration"]
    assert [current_metric_name(n) for n in names] == _handle_backwards_compatibility_in_metric_names(names)


@pytest.mark.parametrize(
    ("name", "current"),
    [("peak_to_valley", "peak_to_trough_duration"), ("half_width", "trough_half_width"),
     ("peak_trough_ratio", "peak_after_to_trough_ratio"), ("peak_to_trough_duration", "peak_to_trough_duration"),
     ("snr", "snr"), ("Peak_To_Valley", "Peak_To_Valley"), ("", "")],
)
def test_current_metric_name_maps_only_the_exact_old_names(name: str, current: str) -> None:
    assert current_metric_name(name) == current


def test_with_old_names_adds_the_old_name_of_each_renamed_metric_only() -> None:
    assert with_old_names(["snr", "peak_after_to_trough_ratio"]) == {"snr", "peak_after_to_trough_ratio",
                                                                     "peak_trough_ratio"}
    assert with_old_names(["trough_half_width", "peak_to_trough_duration"]) == {
        "trough_half_width", "half_width", "peak_to_trough_duration", "peak_to_valley"}
    assert with_old_names(("snr", "firing_rate")) == {"snr", "firing_rate"}
    assert with_old_names([]) == set()
    assert with_old_names(["peak_to_valley"]) == {"peak_to_valley"}  # an old name has no older one


def test_rename_keeps_column_order_and_values_and_leaves_the_input_alone() -> None:
    df = pd.DataFrame({"snr": [5.0, 3.0], "peak_trough_ratio": [-0.25, 0.5], "half_width": [0.2, 0.3]})
    before = df.copy()
    out = rename_old_metrics(df, SOURCE)
    assert list(out.columns) == ["snr", "peak_after_to_trough_ratio", "trough_half_width"]
    np.testing.assert_array_equal(out["peak_after_to_trough_ratio"].to_numpy(), [0.25, -0.5])
    np.testing.assert_array_equal(out["trough_half_width"].to_numpy(), [0.2, 0.3])
    np.testing.assert_array_equal(out["snr"].to_numpy(), [5.0, 3.0])
    pd.testing.assert_frame_equal(df, before)  # the caller's table is not changed


def test_a_table_with_current_names_only_is_returned_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    df = pd.DataFrame({"snr": [1.0], "peak_after_to_trough_ratio": [-2.0]})
    with caplog.at_level(logging.WARNING, logger="unitrefine"):
        out = rename_old_metrics(df, SOURCE)
    pd.testing.assert_frame_equal(out, df)
    assert caplog.records == []


def test_old_and_new_ratio_both_present_keeps_the_new_one_unflipped(caplog: pytest.LogCaptureFixture) -> None:
    df = pd.DataFrame({"peak_trough_ratio": [9.0, 9.0], "peak_after_to_trough_ratio": [-0.5, 0.75]})
    with caplog.at_level(logging.WARNING, logger="unitrefine"):
        out = rename_old_metrics(df, SOURCE)
    assert list(out.columns) == ["peak_after_to_trough_ratio"]
    np.testing.assert_array_equal(out["peak_after_to_trough_ratio"].to_numpy(), [-0.5, 0.75])
    assert [r.getMessage() for r in caplog.records] == [
        f"{SOURCE}: has both 'peak_trough_ratio' and 'peak_after_to_trough_ratio'; using 'peak_after_to_trough_ratio'."
    ]
