"""The comparisons of a re-creation, on inputs built directly: unit tables, leaderboards, ``model_info.json``
entries, tiny fitted scikit-learn models and a composed (not trained) configuration."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy
import numpy as np
import pandas as pd
import pytest
import sklearn
import xgboost
from conftest import make_config, write_recording
from sklearn.linear_model import LogisticRegression

from unitrefine.config import TrainConfig
from unitrefine.data.dataset import UnitTable
from unitrefine.export.folder import package_versions
from unitrefine.run.recreation_checks import (
    current_units,
    data_differences,
    export_differences,
    holdout_difference,
    prediction_difference,
    read_units,
    reproducibility_warnings,
    trial_differences,
)
from unitrefine.run.recreation_record import Recorded

# ------------------------------------------------------------------------------------------------------------
# Units: read back from a model folder, loaded now, and compared
# ------------------------------------------------------------------------------------------------------------


def _table(units: list[tuple[str, object, str]], X: dict[str, list[float]]) -> UnitTable:
    """A UnitTable of ``(recording, unit_id, label)`` rows with the features ``X``."""
    frame = pd.DataFrame(units, columns=["recording", "unit_id", "label"])
    classes = tuple(sorted(set(frame["label"])))
    return UnitTable(X=pd.DataFrame(X).astype(np.float32), y=frame["label"].map(classes.index).to_numpy(),
                     classes=classes, units=frame.assign(subject="s0")[["recording", "subject", "unit_id", "label"]])


def _write_record(folder: Path, table: UnitTable) -> None:
    """``training_data.csv`` and ``labels.csv`` laid out as :func:`unitrefine.export.report.write_folder` does."""
    folder.mkdir(parents=True, exist_ok=True)
    data = table.X.copy()
    data.insert(0, "unit_id", table.units["unit_id"].to_numpy())
    data.insert(0, "recording", table.units["recording"].to_numpy())
    data.to_csv(folder / "training_data.csv", index=False)
    table.units[["recording", "unit_id", "label"]].assign(
        **{"class": [table.classes[i] for i in table.y], "class_code": table.y}
    ).to_csv(folder / "labels.csv", index=False)


def test_read_units_of_a_written_record_equals_the_table_it_was_written_from(tmp_path: Path) -> None:
    table = _table([("rec0", "007", "good"), ("rec0", "12", "noise"), ("rec1", "3", "mua")],
                   {"snr": [4.5, 1.25, np.nan], "firing_rate": [0.1, 2.0, 3.5]})
    _write_record(tmp_path, table)
    recorded = read_units(tmp_path)
    assert list(recorded.columns) == ["recording", "unit_id", "label", "snr", "firing_rate"]
    assert recorded["unit_id"].tolist() == ["007", "12", "3"]  # kept as text: "007" is not unit 7
    assert recorded["snr"].dtype == np.float32 and recorded["firing_rate"].dtype == np.float32
    pd.testing.assert_frame_equal(recorded, current_units(table))
    assert data_differences(recorded, current_units(table), {}) == []


def test_read_units_follows_the_labels_file_and_holdout_keeps_identities_only(tmp_path: Path) -> None:
    pd.DataFrame({"recording": ["r", "r"], "unit_id": ["1", "2"], "snr": [1.0, 2.0]}).to_csv(
        tmp_path / "training_data.csv", index=False)
    pd.DataFrame({"recording": ["r", "r"], "unit_id": ["2", "1"], "label": ["mua", "good"], "class": ["mua", "good"],
                  "class_code": [1, 0]}).to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame({"recording": ["h"], "unit_id": ["05"], "label": ["noise"], "predicted_class": ["noise"],
                  "probability_noise": [0.9]}).to_csv(tmp_path / "holdout_predictions.csv", index=False)
    units = read_units(tmp_path)
    assert units[["unit_id", "label"]].values.tolist() == [["2", "mua"], ["1", "good"]]
    assert units["snr"].tolist() == [2.0, 1.0]
    held = read_units(tmp_path, features=False)
    assert held.values.tolist() == [["h", "05", "noise"]]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, dict[str, str]]:
    return {
        "rec0": {"metrics": str(tmp_path / "rec0" / "quality_metrics.csv"),
                 "labels": str(tmp_path / "rec0" / "cluster_group.tsv")},
        "rec1": {"analyzer": str(tmp_path / "rec1" / "analyzer")},
    }


def _units(rows: list[tuple[str, str, str, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["recording", "unit_id", "label", "snr", "firing_rate"])
    return frame.astype({"snr": np.float32, "firing_rate": np.float32})


RECORDED = [("rec0", "1", "good", 4.5, 1.0), ("rec0", "3", "mua", 2.0, np.nan), ("rec0", "5", "noise", 0.5, 3.0),
            ("rec1", "2", "good", 6.0, 2.5)]


def test_values_equal_in_float32_are_no_difference_and_nan_equals_nan(files: dict) -> None:
    now = _units(RECORDED)
    now["snr"] = now["snr"].astype(np.float64) + 1e-9  # lost when loaded as float32
    now.loc[0, "snr"] = np.float64(4.5) + 1e-12
    assert data_differences(_units(RECORDED), now, files) == []


def test_a_changed_value_names_the_unit_metric_values_and_metrics_file(files: dict) -> None:
    now = _units(RECORDED)
    now.loc[0, "snr"], now.loc[1, "firing_rate"] = 99.5, 2.0  # firing_rate was NaN
    metrics = files["rec0"]["metrics"]
    assert data_differences(_units(RECORDED), now, files) == [
        f"recording 'rec0', metrics file {metrics}: 2 value(s) changed in 2 unit(s) "
        "(unit 1 snr 4.5 -> 99.5, unit 3 firing_rate NaN -> 2)"
    ]


def test_relabelled_gone_and_new_units_name_the_labels_file_and_the_units(files: dict) -> None:
    now = _units([("rec0", "1", "noise", 4.5, 1.0), ("rec0", "3", "mua", 2.0, np.nan), ("rec0", "9", "good", 1., 1.),
                  ("rec1", "2", "good", 6.0, 2.5)])
    m, lab = files["rec0"]["metrics"], files["rec0"]["labels"]
    assert data_differences(_units(RECORDED), now, files) == [
        f"recording 'rec0' (metrics file {m}, labels file {lab}): 1 unit(s) gone (5), 1 new (9)",
        f"recording 'rec0', labels file {lab}: 1 unit(s) relabelled (unit 1 'good' -> 'noise')",
    ]


def test_an_analyzer_recording_without_labels_file_is_named_by_its_analyzer(files: dict) -> None:
    now = _units(RECORDED)
    now.loc[3, "label"] = "mua"
    analyzer = files["rec1"]["analyzer"]
    assert data_differences(_units(RECORDED), now, files) == [
        "recording 'rec1', labels (from the analyzer): 1 unit(s) relabelled (unit 2 'good' -> 'mua')"
    ]
    assert data_differences(_units(RECORDED), now.iloc[:3], files) == [
        f"recording 'rec1' (analyzer {analyzer}, labels (from the analyzer)): gives no units now; the recorded run "
        "trained on 1 of its units"
    ]


def test_more_than_three_changes_are_counted_not_all_listed(files: dict) -> None:
    now = _units(RECORDED)
    now[["snr", "firing_rate"]] = 7.0
    [sentence] = data_differences(_units(RECORDED), now, files)[:1]
    assert sentence.endswith("6 value(s) changed in 3 unit(s) (unit 1 snr 4.5 -> 7, unit 3 snr 2 -> 7, "
                             "unit 5 snr 0.5 -> 7 and 3 more)")


def test_reordered_units_a_new_recording_and_changed_features_are_named(files: dict) -> None:
    recorded = _units(RECORDED)
    assert data_differences(recorded, recorded.iloc[[1, 0, 2, 3]], files) == [
        f"recording 'rec0' (metrics file {files['rec0']['metrics']}, labels file {files['rec0']['labels']}): the "
        "same units in another order"
    ]
    extra = pd.concat([recorded, _units([("rec7", "1", "good", 1.0, 1.0)])], ignore_index=True)
    assert data_differences(recorded, extra, files) == [
        "recording 'rec7' (metrics file ?) is not in the recorded data"
    ]
    renamed = recorded.rename(columns={"firing_rate": "amplitude_median"})
    assert data_differences(recorded, renamed, files) == [
        "the features differ: ['firing_rate'] no longer loaded, ['amplitude_median'] new"
    ]
    assert data_differences(recorded, recorded[["recording", "unit_id", "label", "firing_rate", "snr"]], files) == [
        "the features are the same but in another order"
    ]


def test_held_out_units_compare_identities_and_labels_only(files: dict) -> None:
    held = _units(RECORDED)[["recording", "unit_id", "label"]]
    now = _units(RECORDED)
    now["snr"] = 0.0  # not recorded for held-out units: not compared
    assert data_differences(held, now, files, features=False) == []
    now.loc[2, "label"] = "good"
    assert data_differences(held, now, files, features=False) == [
        f"recording 'rec0', labels file {files['rec0']['labels']}: 1 unit(s) relabelled (unit 5 'noise' -> 'good')"
    ]


# ------------------------------------------------------------------------------------------------------------
# Trials, the export and the predictions
# ------------------------------------------------------------------------------------------------------------


def _board(rows: list[tuple[int, str, float | None, str, dict]]) -> pd.DataFrame:
    """A ``model_accuracies.csv`` (read back as the comparison reads it): trial, state, score, classifier, params."""
    return pd.DataFrame(
        [{"trial": n, "state": state, "cv_score": score, "cv_score_std": 0.01, "n_folds": 3,
          "fold_scores": "[0.8, 0.8, 0.8]", "duration_s": 1.5, "imputer": "median", "classifier": clf,
          "params": json.dumps(params), "error": None} for n, state, score, clf, params in rows]
    )


def _csv(board: pd.DataFrame, path: Path) -> pd.DataFrame:
    board.to_csv(path, index=False)
    return pd.read_csv(path)


BOARD = [(0, "COMPLETE", 0.8, "random_forest", {"random_forest.max_depth": 3}),
         (1, "COMPLETE", 0.75, "logistic_regression", {"logistic_regression.C": 0.5}),
         (2, "FAIL", None, "mlp", {})]


def test_scores_within_tolerance_are_identical_and_the_largest_difference_is_reported(tmp_path: Path) -> None:
    recorded = _csv(_board(BOARD), tmp_path / "a.csv")
    again = [(0, "COMPLETE", 0.8 + 4e-7, *BOARD[0][3:]), (1, "COMPLETE", 0.75 - 2e-7, *BOARD[1][3:]), BOARD[2]]
    differences, worst = trial_differences(recorded, _csv(_board(again), tmp_path / "b.csv"), tolerance=1e-6)
    assert differences == []
    assert worst == pytest.approx(4e-7, rel=1e-6)
    differences, worst = trial_differences(recorded, recorded, tolerance=0.0)
    assert (differences, worst) == ([], 0.0)


def test_each_kind_of_trial_difference_names_the_recorded_and_the_new_value(tmp_path: Path) -> None:
    recorded = _csv(_board([*BOARD, (3, "PRUNED", None, "mlp", {})]), tmp_path / "a.csv")
    again = _csv(_board([
        (0, "COMPLETE", 0.7, "random_forest", {"random_forest.max_depth": 3}),  # same configuration, other score
        (1, "COMPLETE", 0.6, "xgboost", {"xgboost.max_depth": 2}),  # another configuration
        (2, "COMPLETE", 0.5, "mlp", {}),  # failed before, completes now
        (3, "PRUNED", 0.4, "mlp", {}),
        (4, "COMPLETE", 0.9, "mlp", {}),  # only in the re-created run
    ]), tmp_path / "b.csv")
    differences, worst = trial_differences(recorded, again, tolerance=0.05)
    assert differences == [
        "the recorded run has 4 trials, the re-created one 5 (only recorded: -, only re-created: [4])",
        "trial 0: same parameters, CV score 0.8 -> 0.7",
        "trial 1: parameters differ (classifier logistic_regression -> xgboost, logistic_regression.C 0.5 -> -, "
        "xgboost.max_depth - -> 2)",
        "trial 2: FAIL -> COMPLETE",
        "trial 3: CV score None -> 0.4",
    ]
    assert worst == pytest.approx(0.15)  # trial 1 (another configuration) counts too: |0.75 - 0.6|


def test_export_differences_compare_only_what_describes_the_export() -> None:
    info = {"best_configuration": {"classifier": "random_forest", "random_forest.max_depth": 3},
            "threshold": {"value": 0.5, "positive": "good"}, "ensemble": None, "calibration": None,
            "label_conversion": {"0": "good", "1": "noise"}, "features": ["snr", "firing_rate"],
            "stage_seconds": {"search": 10.0}, "mlflow": {"run_id": "a" * 32}}
    same = json.loads(json.dumps(info))
    same["threshold"] = {"positive": "good", "value": 0.5}  # another key order
    same["stage_seconds"], same["mlflow"] = {"search": 12.5}, {"run_id": None}  # timings and tracking: not compared
    assert export_differences(info, same) == []
    other = {**same, "threshold": {"value": 0.55, "positive": "good"}, "features": ["snr"]}
    del other["calibration"]  # None either way
    assert export_differences(info, other) == [
        "model_info.json 'threshold' differs: {\"value\": 0.5, \"positive\": \"good\"} -> "
        "{\"value\": 0.55, \"positive\": \"good\"}",
        "model_info.json 'features' differs: [\"snr\", \"firing_rate\"] -> [\"snr\"]",
    ]


def _fitted(X: pd.DataFrame, y: np.ndarray, C: float = 1.0) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=500).fit(X, y)


@pytest.fixture(scope="module")
def units() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"snr": rng.normal(0, 1, 40), "firing_rate": rng.normal(0, 1, 40)}).astype(np.float32)
    y = np.array(["good", "noise"])[(X["snr"] + rng.normal(0, 0.7, 40) > 0).to_numpy().astype(int)]
    return X, y


def test_prediction_difference_of_two_models_on_the_recorded_units(units: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = units
    a, b = _fitted(X, y), _fitted(X, y, C=0.01)
    shuffled = X[["firing_rate", "snr"]].assign(extra=1.0)  # the models' own columns are picked, in their order
    assert prediction_difference(a, _fitted(X, y), shuffled) == (0.0, 0)
    expected = np.abs(a.predict_proba(X) - b.predict_proba(X)).max()
    labels = int((a.predict(X) != b.predict(X)).sum())
    assert expected > 0.05
    assert prediction_difference(a, b, shuffled) == (pytest.approx(float(expected)), labels)


def test_models_with_other_features_or_classes_cannot_be_compared(units: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = units
    with pytest.raises(ValueError, match="the two models take different features"):
        prediction_difference(_fitted(X, y), _fitted(X[["snr"]], y), X)
    with pytest.raises(ValueError, match="the two models predict different classes"):
        prediction_difference(_fitted(X, y), _fitted(X, np.where(y == "good", "mua", y)), X)


def _holdout(folder: Path, ids: list[str], good: list[float]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"recording": "rec3", "unit_id": ids, "label": "good", "probability_good": good,
                  "probability_noise": [1 - p for p in good]}).to_csv(folder / "holdout_predictions.csv", index=False)
    return folder


def test_holdout_difference(tmp_path: Path) -> None:
    a = _holdout(tmp_path / "a", ["1", "3"], [0.9, 0.2])
    assert holdout_difference(a, _holdout(tmp_path / "same", ["1", "3"], [0.9, 0.2])) == 0.0
    assert holdout_difference(a, _holdout(tmp_path / "b", ["1", "3"], [0.9, 0.5])) == pytest.approx(0.3)
    assert holdout_difference(a, _holdout(tmp_path / "c", ["1", "5"], [0.9, 0.2])) == float("inf")
    assert holdout_difference(a, tmp_path / "none") is None and holdout_difference(tmp_path / "none", a) is None


# ------------------------------------------------------------------------------------------------------------
# What makes a recorded run not exactly re-creatable
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    """The smoke configuration on one tiny recording (composed, nothing trained), budget 4 trials, seed 42."""
    root = tmp_path_factory.mktemp("composed")
    return make_config(root, [{"id": "rec0", **write_recording(root / "rec0", 20, seed=1)}], ["search.n_trials=4"])


def _recorded(folder: Path, n_trials: int, workers: tuple[str, ...] = ("host-1-a",), **info: object) -> Recorded:
    """A record whose leaderboard has ``n_trials`` rows and whose ``model_info.json`` holds ``info``."""
    folder.mkdir(parents=True, exist_ok=True)
    _board([(n, "COMPLETE", 0.8, "mlp", {}) for n in range(n_trials)]).to_csv(folder / "model_accuracies.csv",
                                                                               index=False)
    full = {"requirements": package_versions(), "seed": 42, **info}
    return Recorded(str(folder), folder, full, workers=workers)


def test_a_run_as_recorded_gives_no_warning(composed: TrainConfig, tmp_path: Path) -> None:
    assert composed.seed == 42 and composed.search.timeout_s is None and not composed.search.warm_start
    assert reproducibility_warnings(composed, _recorded(tmp_path, 4)) == []


def test_a_time_cap_says_whether_it_stopped_the_search(composed: TrainConfig, tmp_path: Path) -> None:
    cfg = copy.deepcopy(composed)
    cfg.search.timeout_s = 2.5
    [stopped] = reproducibility_warnings(cfg, _recorded(tmp_path / "a", 3))
    assert stopped.startswith("the recorded run had a time cap (search.timeout_s=2.5) and stopped on it after 3 of 4 "
                              "trials: how many trials fit under a time cap depends on the machine")
    [finished] = reproducibility_warnings(cfg, _recorded(tmp_path / "b", 4))
    assert "(search.timeout_s=2.5) and finished its budget: " in finished


def test_several_workers_on_one_host_are_warned_about(composed: TrainConfig, tmp_path: Path) -> None:
    [warning] = reproducibility_warnings(composed, _recorded(tmp_path, 4, workers=("lab-pc-17-a1", "lab-pc-18-b2")))
    assert warning.startswith("the recorded trials were run by 2 worker processes on 1 host(s) (or the study was "
                              "interrupted and resumed)")


def test_other_model_package_versions_and_a_warm_start_are_warned_about(composed: TrainConfig, tmp_path: Path) -> None:
    cfg = copy.deepcopy(composed)
    cfg.search.warm_start = "models:/smoke@champion"
    requirements = {**package_versions(), "scikit-learn": "0.20.0", "numpy": "1.0.0", "spikeinterface": "0.90.0",
                    "xgboost": "0.1"}
    warnings = reproducibility_warnings(cfg, _recorded(tmp_path, 4, requirements=requirements))
    assert warnings == [
        "search.warm_start=models:/smoke@champion: its configurations are read again now (an alias may point to "
        "another model version since)",
        # spikeinterface does not change a fitted model: not compared.
        f"package versions differ from the recorded run's (scikit-learn 0.20.0 -> {sklearn.__version__}, "
        f"numpy 1.0.0 -> {numpy.__version__}, xgboost 0.1 -> {xgboost.__version__}): results may differ",
    ]


def test_a_recorded_seed_other_than_config_yaml_s_is_warned_about(composed: TrainConfig, tmp_path: Path) -> None:
    from_info = _recorded(tmp_path, 4, seed=7)
    assert reproducibility_warnings(composed, from_info) == [
        "the recorded seed 7 is not the seed of its config.yaml (42); using config.yaml's"
    ]
    from_tags = Recorded(from_info.source, from_info.folder, {**from_info.info, "seed": 42},
                         tags={"unitrefine.seed": "13"}, workers=("host-1-a",))
    assert reproducibility_warnings(composed, from_tags) == [
        "the recorded seed 13 is not the seed of its config.yaml (42); using config.yaml's"
    ]
