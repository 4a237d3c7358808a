"""The model folder's path, its ``model_info.json`` record and the MLflow parent run of one tiny real run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import make_config, overlapping_recordings
from mlflow.tracking import MlflowClient
from sklearn.metrics import balanced_accuracy_score

from unitrefine.config import TrainConfig
from unitrefine.config_schema import OutputConfig
from unitrefine.export.report import TrainResult
from unitrefine.run.outputs import _estimate_metrics, model_folder_path
from unitrefine.run.training import train
from unitrefine.search.estimators import TRUSTED_TYPES

STAMP = "%Y%m%d-%H%M%S"
SEARCHED = ["rec0", "rec1", "rec2"]
SLOTS = ["imputer", "scaler", "resampler", "classifier"]
#: sua_vs_all: good against the rest.
CLASS_OF = {"good": "good", "mua": "other", "noise": "other"}


@dataclasses.dataclass(frozen=True)
class Run:
    """The tiny run every test of the model folder reads, with the wall-clock window it ran in."""

    cfg: TrainConfig
    result: TrainResult
    recordings: list[dict[str, str]]
    started: dt.datetime
    ended: dt.datetime

    @property
    def info(self) -> dict[str, Any]:
        return json.loads((self.result.model_folder / "model_info.json").read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Two trials on overlapping classes (no perfect score), grouped by recording, rec3 held out, not refit,
    tracked in a real SQLite store (no registration)."""
    root = tmp_path_factory.mktemp("outputs")
    recordings = overlapping_recordings(root / "data", 4, seed=7, spread=3.0, n_units=60)
    cfg = make_config(
        root, recordings,
        ["search.n_trials=2", "search.n_jobs=1", "cv.n_splits=3", "cv.group_by=recording",
         "cv.holdout_recordings=[rec3]", "cv.refit_on_all=false", "tracking.register=false"],
    )
    started = dt.datetime.now().replace(microsecond=0)
    result = train(cfg)
    assert result is not None
    return Run(cfg, result, recordings, started, dt.datetime.now())


@pytest.fixture(scope="module")
def path_cfg(tmp_path_factory: pytest.TempPathFactory) -> TrainConfig:
    """A configuration for path checks only (its recordings need not exist: nothing is read)."""
    root = tmp_path_factory.mktemp("paths")
    return make_config(root, [{"id": "a", "metrics": "a.csv", "labels": "a.tsv"}], ["tracking.enabled=false"])


def with_output(cfg: TrainConfig, folder: str | None, overwrite: bool) -> TrainConfig:
    return dataclasses.replace(cfg, output=OutputConfig(folder=folder, overwrite=overwrite))


def stamp_of(name: str) -> dt.datetime:
    return dt.datetime.strptime(name[: len("20260101-000000")], STAMP)


# ------------------------------------------------------------------------------------------------
# model_folder_path: no run needed
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("run_id", "suffix"), [("0123456789abcdef", "-01234567"), (None, ""), ("", "")])
@pytest.mark.parametrize("overwrite", [False, True])
def test_default_folder_is_the_experiments_models_folder_named_by_time_and_run(
    path_cfg: TrainConfig, run_id: str | None, suffix: str, overwrite: bool
) -> None:
    root = Path(path_cfg.root).resolve()
    before = sorted(p.name for p in root.iterdir())
    start = dt.datetime.now().replace(microsecond=0)
    folder = model_folder_path(with_output(path_cfg, None, overwrite), run_id)
    end = dt.datetime.now()
    assert folder.parent == root / "experiments" / "smoke" / "models"
    assert folder.name == stamp_of(folder.name).strftime(STAMP) + suffix
    assert start <= stamp_of(folder.name) <= end
    assert sorted(p.name for p in root.iterdir()) == before  # a path only: nothing is made


def test_a_default_folder_taken_in_the_same_second_gets_a_number(tmp_path: Path) -> None:
    """Without tracking there is no run id: two runs finishing in one second must not share a folder."""
    cfg = make_config(tmp_path, [{"id": "a", "metrics": "a.csv", "labels": "a.tsv"}], ["tracking.enabled=false"])
    first = model_folder_path(cfg, None)
    first.mkdir(parents=True)
    (first / "best_model.skops").write_bytes(b"the first run's model")
    second = model_folder_path(cfg, None)
    if stamp_of(second.name) == stamp_of(first.name):  # the same second (the usual case: microseconds apart)
        assert second == first.with_name(f"{first.name}-2")
    assert second != first and not second.exists()
    assert (first / "best_model.skops").read_bytes() == b"the first run's model"


def test_a_configured_folder_is_used_as_given_whatever_the_run_and_overwrite(
    path_cfg: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(path_cfg.root).resolve()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cases = {
        "models/mine": root / "models" / "mine",
        str(tmp_path / "elsewhere" / "m"): tmp_path / "elsewhere" / "m",
        "~/unitrefine/m": tmp_path / "home" / "unitrefine" / "m",
    }
    for given, expected in cases.items():
        paths = {model_folder_path(with_output(path_cfg, given, overwrite), run_id)
                 for overwrite in (False, True) for run_id in (None, "0123456789abcdef")}
        assert paths == {expected}, given
    assert not (root / "models").exists() and not (tmp_path / "elsewhere").exists()


# ------------------------------------------------------------------------------------------------
# One tiny run: its folder and model_info.json
# ------------------------------------------------------------------------------------------------


def test_the_run_folder_is_named_by_when_it_was_written_and_its_parent_run(run: Run) -> None:
    folder, run_id = run.result.model_folder, run.result.run_id
    assert run_id is not None and len(run_id) == 32
    assert folder.parent == Path(run.cfg.root).resolve() / "experiments" / "smoke" / "models"
    assert folder.name == f"{stamp_of(folder.name).strftime(STAMP)}-{run_id[:8]}"
    assert run.started <= stamp_of(folder.name) <= run.ended
    db = Path(run.cfg.root).resolve() / "mlruns" / "mlflow.db"
    assert run.info["mlflow"] == {"tracking_uri": f"sqlite:///{db}", "run_id": run_id}


def test_trained_on_is_the_searched_recordings_and_their_units(run: Run) -> None:
    trained_on = run.info["trained_on"]
    assert trained_on["recordings"] == SEARCHED
    labels = pd.concat([pd.read_csv(r["labels"], sep="\t") for r in run.recordings if r["id"] in SEARCHED])
    expected = labels["group"].map(CLASS_OF).value_counts().to_dict()
    assert trained_on["class_counts"] == expected
    assert sum(trained_on["class_counts"].values()) == 180
    training = pd.read_csv(run.result.model_folder / "training_data.csv")
    assert len(training) == 180 and sorted(set(training["recording"])) == SEARCHED
    assert len(trained_on["dataset_fingerprint"]) == 64
    # The exported model's own data, not the whole dataset (rec3 is held out and not refit on).
    tags = MlflowClient(run.result.tracking_uri).get_run(run.result.run_id).data.tags
    assert trained_on["dataset_fingerprint"] != tags["unitrefine.dataset_fingerprint"]


def test_task_labels_and_features_are_those_of_the_data(run: Run) -> None:
    info = run.info
    assert info["label_conversion"] == {"0": "other", "1": "good"}
    assert info["task"] == {"name": "sua_vs_all", "classes": ["other", "good"],
                            "mapping": {"good": "good", "mua": "other", "noise": "other", "unsorted": None}}
    header = pd.read_csv(run.recordings[0]["metrics"], nrows=0).columns
    # The CSV's old SpikeInterface name is read as the current one.
    expected = [{"peak_to_valley": "peak_to_trough_duration"}.get(c, c) for c in header if c != "cluster_id"]
    assert info["features"] == expected
    assert info["metric_params"]["template_metric_params"]["metric_names"] == ["peak_to_trough_duration"]
    assert info["metric_params"]["quality_metric_params"]["metric_names"] == expected[:-1]


def test_best_configuration_and_cv_score_are_the_leaderboards_top_complete_trial(run: Run) -> None:
    info = run.info
    board = pd.read_csv(run.result.model_folder / "model_accuracies.csv")
    complete = board[board["state"] == "complete"]
    top = complete.iloc[0]
    assert top["cv_score"] == complete["cv_score"].max() < 1.0  # overlapping classes: a real score
    assert info["best_configuration"] == {**{s: top[s] for s in SLOTS}, **json.loads(top["params"])}
    assert info["cv"]["best_score"] == pytest.approx(top["cv_score"], rel=1e-12)
    # The same trial as Optuna's own best trial of the study.
    study = run.result.study
    assert int(top["trial"]) == study.best_trial.number and info["cv"]["best_score"] == study.best_value
    splits = pd.read_csv(run.result.model_folder / "splits.csv")
    train = splits[splits["split"] == "train"]
    assert info["cv"] == {"scoring": "balanced_accuracy", "best_score": study.best_value, "n_folds": 3,
                          "grouped_by": "recording"}
    # Grouped by recording: each fold is one recording.
    assert train.groupby("fold")["recording"].nunique().tolist() == [1, 1, 1]


def test_holdout_search_and_run_sections(run: Run) -> None:
    info, result = run.info, run.result
    held = pd.read_csv(result.model_folder / "holdout_predictions.csv")
    assert set(held["recording"]) == {"rec3"} and len(held) == 60
    expected = balanced_accuracy_score(held["true_class"], held["predicted_class"])
    assert info["holdout"]["balanced_accuracy"] == pytest.approx(expected)
    assert info["holdout"]["per_recording"] == {"rec3": {"balanced_accuracy": pytest.approx(expected), "n_units": 60}}
    states = [t.state.name.lower() for t in result.study.trials]
    assert info["search"] == {
        "n_trials": 2, "n_jobs": 1, "timeout_s": None, "stopped_by_timeout": False,
        "trial_counts": {"complete": states.count("complete"), "pruned": states.count("pruned"),
                         "fail": states.count("fail"), "interrupted": 0, "duplicate": 0},
    }
    assert sum(info["search"]["trial_counts"].values()) == 2
    # Written before the folder is: the stages up to the estimate are timed, and as the result reports them.
    stages = ["load", "split", "search", "choose", "refit", "evaluate", "estimate"]
    assert info["stage_seconds"] == {k: result.stage_seconds[k] for k in stages}
    assert (info["seed"], info["unit_limits"], info["ensemble"], info["threshold"]) == (42, {}, None, None)
    assert info["trusted_types"] == list(TRUSTED_TYPES)
    assert info["requirements"]["scikit-learn"] == version("scikit-learn")
    assert info["requirements"]["skops"] == version("skops")


# ------------------------------------------------------------------------------------------------
# track: the parent run in the real SQLite store
# ------------------------------------------------------------------------------------------------


def test_track_logs_the_best_configuration_scores_and_folder_to_the_parent_run(run: Run) -> None:
    info, result = run.info, run.result
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.run_id)
    params, metrics, tags = parent.data.params, parent.data.metrics, parent.data.tags
    best_configuration = info["best_configuration"]
    assert {k: params[k] for k in best_configuration} == {k: str(v) for k, v in best_configuration.items()}
    best = result.study.best_trial
    assert metrics["cv_score"] == pytest.approx(best.value)
    assert metrics["cv_score_std"] == pytest.approx(best.user_attrs["cv_std"])
    assert {k: metrics[f"n_trials_{k}"] for k in result.trial_counts} == result.trial_counts
    assert {k: metrics[f"stage_seconds_{k}"] for k in result.stage_seconds} == pytest.approx(result.stage_seconds)
    assert metrics["holdout_balanced_accuracy"] == pytest.approx(info["holdout"]["balanced_accuracy"])
    for c, m in info["holdout"]["per_class"].items():
        assert {k: metrics[f"holdout_{c}_{k}"] for k in ("precision", "recall", "f1")} == pytest.approx(
            {k: m[k] for k in ("precision", "recall", "f1")})
        assert f"holdout_{c}_support" not in metrics
    assert metrics["expected_balanced_accuracy_new_recordings"] == pytest.approx(
        info["estimate_new_recordings"]["balanced_accuracy"])
    assert tags["unitrefine.model_folder"] == str(result.model_folder)
    assert (tags["unitrefine.model_version"], tags["unitrefine.stopped_by_timeout"]) == ("none", "false")
    assert parent.info.status == "FINISHED"
    # The folder uploaded is the folder written; nothing was registered (tracking.register=false).
    uploaded = {a.path.removeprefix("model_folder/") for a in client.list_artifacts(result.run_id, "model_folder")}
    assert uploaded == {p.name for p in result.model_folder.iterdir()}
    assert client.search_registered_models() == []
    assert result.model_version is None


def test_the_estimate_becomes_metrics_with_its_interval_and_review_budget() -> None:
    assert _estimate_metrics({"balanced_accuracy": 0.8}) == {"expected_balanced_accuracy_new_recordings": 0.8}
    estimate = {
        "balanced_accuracy": 0.8, "interval": [0.7, 0.9],
        "review_budget": [{"review_fraction": 0.0, "balanced_accuracy": 0.8, "interval": [0.7, 0.9]},
                          {"review_fraction": 0.125, "balanced_accuracy": 0.85, "interval": [0.75, 0.95]}],
    }
    name = "expected_curated_balanced_accuracy_review"
    assert _estimate_metrics(estimate) == {
        "expected_balanced_accuracy_new_recordings": 0.8,
        "expected_balanced_accuracy_new_recordings_low": 0.7,
        "expected_balanced_accuracy_new_recordings_high": 0.9,
        f"{name}_0pct": 0.8, f"{name}_0pct_low": 0.7, f"{name}_0pct_high": 0.9,
        f"{name}_12pct": 0.85, f"{name}_12pct_low": 0.75, f"{name}_12pct_high": 0.95,
    }
