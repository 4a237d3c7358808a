"""A model's input frame (:func:`unitrefine.apply.model_inputs.feature_frame`), called directly on tiny tables:
its features in its order and naming, extra columns ignored, missing ones named. End-to-end cases (an analyzer,
SpikeInterface's own metric names, ``impute_missing=`` of SpikeInterface metrics) are in
tests/apply/test_prediction.py."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unitrefine.apply.model_inputs import feature_frame
from unitrefine.apply.models import LoadedModel, load_model
from unitrefine.errors import UnitRefineError


def tiny_model(features: list[str]) -> LoadedModel:
    """What feature_frame reads of a loaded model: its source and features (no pipeline needed)."""
    return LoadedModel(source="models/tiny", pipeline=None, info={}, features=features, classes=["other", "good"])


def test_features_come_in_the_models_order_under_its_names(caplog: pytest.LogCaptureFixture) -> None:
    """Columns in another order, text and unused columns beside them; a model trained with old names gets the
    renamed columns, ``peak_trough_ratio`` with its sign flipped (as SpikeInterface maps it)."""
    model = tiny_model(["snr", "peak_to_valley", "peak_trough_ratio", "firing_rate"])
    metrics = pd.DataFrame(
        {"notes": ["ok", "bad"], "firing_rate": [2.5, 0.25], "peak_after_to_trough_ratio": [0.5, -1.5],
         "amplitude_median": [80.0, 20.0], "snr": ["7.5", "1"], "peak_to_trough_duration": [4e-4, 6e-4]},
        index=pd.Index(["3", "5"], name="unit_id"),
    )
    with caplog.at_level(logging.WARNING):
        X = feature_frame(metrics, model, "recA.csv")
    assert caplog.text == ""
    assert list(X.columns) == ["snr", "peak_to_valley", "peak_trough_ratio", "firing_rate"]
    assert (X.dtypes == np.float32).all() and X.index.tolist() == ["3", "5"]
    expected = np.array([[7.5, 4e-4, -0.5, 2.5], [1.0, 6e-4, 1.5, 0.25]], dtype=np.float32)
    np.testing.assert_array_equal(X.to_numpy(), expected)


def test_values_the_model_cannot_use_become_nan_naming_metric_recording_and_units(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """±inf and numbers beyond float32 are NaN (SpikeInterface's treatment), with a warning naming the units."""
    model = tiny_model(["snr", "firing_rate"])
    metrics = pd.DataFrame({"snr": [np.inf, 3.0, 1e39, -np.inf], "firing_rate": [1.0, 2.0, 3.0, np.nan]},
                           index=pd.Index(["11", "12", "13", "14"], name="unit_id"))
    with caplog.at_level(logging.WARNING):
        X = feature_frame(metrics, model, "recA.csv")
    np.testing.assert_array_equal(X["snr"].to_numpy(), np.array([np.nan, 3.0, np.nan, np.nan], dtype=np.float32))
    np.testing.assert_array_equal(X["firing_rate"].to_numpy(), np.array([1, 2, 3, np.nan], dtype=np.float32))
    assert ("recA.csv (model models/tiny): metric 'snr' has 3 values that are infinite or beyond float32's range "
            "(±3.4e38), at units '11', '13', '14'") in caplog.text
    assert "firing_rate" not in caplog.text  # a NaN is simply missing


def test_a_metric_with_no_usable_value_is_named(caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_model(["snr", "firing_rate"])
    metrics = pd.DataFrame({"snr": [np.nan, np.inf], "firing_rate": [1.0, 2.0]})  # a RangeIndex: rows
    with caplog.at_level(logging.WARNING):
        X = feature_frame(metrics, model, "recB")
    assert X["snr"].isna().all() and X["firing_rate"].tolist() == [1.0, 2.0]
    assert "recB (model models/tiny): metric 'snr' has no usable value for any of its 2 units" in caplog.text


def test_missing_metrics_are_named_with_how_to_get_them(tmp_path: Path) -> None:
    """An old-name feature is asked for by its current name; a column no SpikeInterface metric makes is said to
    be custom; nothing is written."""
    model = tiny_model(["snr", "peak_to_valley", "my_burst_index"])
    metrics = pd.DataFrame({"snr": [5.0], "extra": [1.0]})
    with pytest.raises(UnitRefineError) as excinfo:
        feature_frame(metrics, model, "recA.csv")
    message = str(excinfo.value)
    assert message.startswith("recA.csv lacks metrics ['peak_to_trough_duration', 'my_burst_index'] that model "
                              "models/tiny needs.")
    assert "analyzer.compute('template_metrics', metric_names=['peak_to_trough_duration'])" in message
    assert "['my_burst_index'] are not SpikeInterface metrics" in message
    assert "impute_missing=[peak_to_trough_duration,my_burst_index]" in message
    assert "snr" not in message.split("needs.")[0] and "extra" not in message
    assert list(tmp_path.iterdir()) == []


def test_metrics_allowed_to_be_imputed_are_nan_under_the_models_name(caplog: pytest.LogCaptureFixture) -> None:
    """``impute`` may name a metric by its old name; only the metrics left out of it stay errors."""
    model = tiny_model(["peak_to_valley", "snr", "my_burst_index"])
    metrics = pd.DataFrame({"snr": [5.0, 6.0]}, index=pd.Index(["1", "2"], name="unit_id"))
    with pytest.raises(UnitRefineError, match=r"lacks metrics \['my_burst_index'\] that model models/tiny needs"):
        feature_frame(metrics, model, "recA.csv", impute=["peak_to_valley"])
    with caplog.at_level(logging.WARNING):
        X = feature_frame(metrics, model, "recA.csv", impute=["peak_to_valley", "my_burst_index"])
    assert list(X.columns) == ["peak_to_valley", "snr", "my_burst_index"]
    assert X["peak_to_valley"].isna().all() and X["my_burst_index"].isna().all() and X["snr"].tolist() == [5.0, 6.0]
    assert ("recA.csv lacks metrics ['peak_to_trough_duration', 'my_burst_index']: they are imputed by model "
            "models/tiny (impute_missing)") in caplog.text


def test_a_trained_model_gets_exactly_the_columns_it_was_fitted_on(
    tmp_path: Path, synthetic_models: dict[str, Path]
) -> None:
    """The real pipeline predicts from the frame without a feature-name warning (warnings are errors here), and
    the same as from the columns put in its order by hand."""
    folder = shutil.copytree(synthetic_models["three_class"], tmp_path / "model")
    model = load_model(str(folder), [], None, tmp_path / "unused")
    rng = np.random.default_rng(0)
    needed = model.required_metrics()
    metrics = pd.DataFrame(rng.uniform(0.1, 5.0, (6, len(needed))), columns=needed[::-1]).assign(extra=1.0)
    X = feature_frame(metrics, model, "recA")
    assert list(X.columns) == list(model.pipeline.feature_names_in_)
    by_hand = metrics[list(model.pipeline.feature_names_in_)].astype("float32")
    np.testing.assert_array_equal(model.pipeline.predict_proba(X), model.pipeline.predict_proba(by_hand))
