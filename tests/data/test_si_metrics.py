"""What SpikeInterface's metric extensions hold (:mod:`unitrefine.data.si_metrics`): names, columns, parameters."""

from __future__ import annotations

import numpy as np

from unitrefine.data import si_metrics as sm


def test_json_normalise_turns_tuples_into_lists_like_a_json_round_trip() -> None:
    params = {"percentiles": (5, 95), "n": np.int64(3), "x": np.float32(0.5), "nested": {"w": (0.0, 0.5)}}
    assert sm.json_normalise(params) == {"percentiles": [5, 95], "n": 3, "x": 0.5, "nested": {"w": [0.0, 0.5]}}


def test_columns_map_to_the_metrics_that_compute_them() -> None:
    wanted, unknown = sm.metrics_for_columns(
        ["isi_violations_ratio", "isi_violations_count", "snr", "trough_half_width", "d_prime", "my_metric"]
    )
    assert wanted == {"quality_metrics": ["isi_violation", "snr", "d_prime"], "template_metrics": ["half_width"]}
    assert unknown == ["my_metric"]


def test_default_lists_leave_pca_metrics_out_unless_asked() -> None:
    pca = set(sm.pca_metric_names())
    assert {"mahalanobis", "d_prime", "nearest_neighbor", "silhouette"} <= pca
    assert not pca & set(sm.default_metric_names(sm.QUALITY))
    assert {"mahalanobis", "d_prime"} <= set(sm.default_metric_names(sm.QUALITY, pca=True))
    assert "nn_advanced" not in sm.default_metric_names(sm.QUALITY, pca=True)  # too slow even for SpikeInterface
    assert "peak_to_trough_duration" in sm.default_metric_names(sm.TEMPLATE)


def test_parameters_compare_after_normalisation_and_unknown_ones_are_named() -> None:
    stored = {"metric_params": {"firing_range": {"bin_size_s": 5, "percentiles": [5, 95]},
                                "snr": {"method": "extremum"}}}
    actual = {"metric_params": {"firing_range": {"percentiles": (5, 95), "bin_size_s": 5},
                                "snr": {"method": "peak_to_peak"}, "presence_ratio": {}}}
    assert sm.compare_params(stored, actual, ["firing_range", "snr", "presence_ratio"]) == (["snr"], ["presence_ratio"])
    assert sm.info_key(sm.TEMPLATE) == "template_metric_params"
