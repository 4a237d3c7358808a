"""Warm start (:mod:`unitrefine.run.warm_start`): a previous model's best configurations are the first trials of a
new study, restricted to the current search space. Real Optuna studies, real MLflow registry."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_config
from mlflow.tracking import MlflowClient

from unitrefine.config import TrainConfig
from unitrefine.errors import UnitRefineError
from unitrefine.run.training import train
from unitrefine.run.warm_start import QueuedTrial, fit_to_space, previous_configurations, warm_start_trials
from unitrefine.search.search_space import SearchSpace, parse_search_space
from unitrefine.search.trial_attrs import WARM_START_ATTR

SPACE = {
    "imputer": {"median": {}, "mean": {}},
    "scaler": {"standard": {}, "none": {}},
    "resampler": {"none": {}},
    "classifier": {
        "logistic_regression": {"C": {"low": 1.0e-2, "high": 10.0, "log": True}},
        "random_forest": {"n_estimators": {"low": 20, "high": 60, "step": 20}, "max_depth": [4, 8],
                          "class_weight": "balanced"},
    },
}
RF = {"imputer": "median", "scaler": "none", "resampler": "none", "classifier": "random_forest",
      "random_forest.n_estimators": 40, "random_forest.max_depth": 8, "random_forest.class_weight": "balanced"}


def warm_start(cfg: TrainConfig, space: SearchSpace) -> list[QueuedTrial]:
    """``search.warm_start`` as a training run of ``cfg`` takes it (a folder: no MLflow store is looked at)."""
    return warm_start_trials(space, cfg.search, cfg.task.name, "sqlite:///not-looked-at.db", cfg.resolve_path)


def test_fit_to_space_keeps_what_is_valid_and_says_why_the_rest_is_left_out() -> None:
    space = parse_search_space(SPACE)
    params, notes = fit_to_space(RF, space)
    # class_weight is fixed in this space: not a parameter
    assert params == {k: v for k, v in RF.items() if k != "random_forest.class_weight"} and notes == []
    old = {**RF, "imputer": "knn", "random_forest.n_estimators": 300, "random_forest.max_depth": None,
           "random_forest.class_weight": None, "random_forest.min_samples_leaf": 4}
    params, notes = fit_to_space(old, space)
    assert params == {"scaler": "none", "resampler": "none", "classifier": "random_forest"}
    text = "\n".join(notes)
    for expected in ("imputer 'knn' is not in the search space (sampled)",
                     "random_forest.n_estimators=300 is outside [20, 60] step 20 (sampled)",
                     "random_forest.max_depth=None is outside the choices [4, 8] (sampled)",
                     "random_forest.class_weight=None is fixed at 'balanced' now",
                     "random_forest.min_samples_leaf=4 is not in the search space now"):
        assert expected in text
    off_step = fit_to_space({**RF, "random_forest.n_estimators": 50}, space)[0]
    assert off_step.get("random_forest.n_estimators") is None
    a_bool = fit_to_space({**RF, "random_forest.max_depth": True}, space)[0]
    assert a_bool.get("random_forest.max_depth") is None  # True is not the integer 1
    lr = {"imputer": "mean", "scaler": "standard", "resampler": "none", "classifier": "logistic_regression"}
    assert fit_to_space({**lr, "logistic_regression.C": 20.0}, space)[0] == lr
    assert fit_to_space({**lr, "logistic_regression.C": 2}, space)[0] == {**lr, "logistic_regression.C": 2.0}
    assert fit_to_space({**RF, "classifier": "svc"}, space) == (None, ["classifier 'svc' is not in the search space"])


def _previous_folder(folder: Path) -> dict[str, dict]:
    """A model folder as unitrefine writes it: best configuration, an ensemble, a leaderboard with a pruned trial."""
    a = RF
    b = {**RF, "random_forest.n_estimators": 60}
    c = {"imputer": "mean", "scaler": "standard", "resampler": "none", "classifier": "logistic_regression",
         "logistic_regression.C": 0.5}
    svc = {"imputer": "mean", "scaler": "standard", "resampler": "none", "classifier": "svc", "svc.C": 1.0}
    folder.mkdir(parents=True)
    (folder / "model_info.json").write_text(json.dumps({
        "label_conversion": {"0": "other", "1": "good"}, "task": {"name": "sua_vs_all"}, "best_configuration": a,
        "ensemble": [{"trial": 3, "weight": 1, "configuration": b}, {"trial": 5, "weight": 4, "configuration": a}],
    }))
    rows = [(7, "pruned", 0.99, svc), (5, "complete", 0.9, a), (2, "complete", 0.8, c), (3, "complete", 0.85, b),
            (8, "complete", 0.7, svc)]
    steps = ("imputer", "scaler", "resampler", "classifier")
    pd.DataFrame([{"trial": n, "state": s, "cv_score": v, **{k: p[k] for k in steps},
                   "params": json.dumps({k: x for k, x in p.items() if "." in k})} for n, s, v, p in rows]
                 ).to_csv(folder / "model_accuracies.csv", index=False)
    return {"a": a, "b": b, "c": c, "svc": svc}


def test_previous_configurations_best_then_ensemble_then_leaderboard(tmp_path: Path) -> None:
    configs = _previous_folder(tmp_path / "old")
    got = previous_configurations(tmp_path / "old")
    assert [label for label, _ in got] == ["best configuration", "ensemble member trial 3", "trial 2", "trial 8"]
    assert [p for _, p in got] == [configs["a"], configs["b"], configs["c"], configs["svc"]]  # pruned trial 7 left out
    (tmp_path / "si").mkdir()
    (tmp_path / "si" / "model_info.json").write_text(json.dumps({"label_conversion": {"0": "a", "1": "b"}}))
    with pytest.raises(UnitRefineError, match="records no search"):
        previous_configurations(tmp_path / "si")
    with pytest.raises(UnitRefineError, match="does not exist"):
        previous_configurations(tmp_path / "nope")


def test_warm_start_trials_skip_what_the_space_cannot_take_and_fail_if_nothing_fits(
    tmp_path: Path, tiny_recordings, caplog: pytest.LogCaptureFixture
) -> None:
    configs = _previous_folder(tmp_path / "old")
    cfg = make_config(tmp_path, tiny_recordings, ["search.warm_start=old", "search.warm_start_trials=10"],
                      search_space=SPACE)
    with caplog.at_level(logging.INFO):
        queued = warm_start(cfg, parse_search_space(SPACE))
    assert [q.params.get("classifier") for q in queued] == ["random_forest", "random_forest", "logistic_regression"]
    assert queued[1].params["random_forest.n_estimators"] == configs["b"]["random_forest.n_estimators"]
    assert queued[0].user_attrs[WARM_START_ATTR] == f"{tmp_path / 'old'} best configuration"
    assert "skipped trial 8: classifier 'svc' is not in the search space" in caplog.text
    assert "3 configuration(s) queued first, 1 skipped" in caplog.text
    only_svc = {**SPACE, "classifier": {"logistic_regression": {}}}
    (tmp_path / "old" / "model_info.json").unlink()
    pd.read_csv(tmp_path / "old" / "model_accuracies.csv").query("classifier == 'svc'").to_csv(
        tmp_path / "old" / "model_accuracies.csv", index=False)
    cfg = make_config(tmp_path, tiny_recordings, ["search.warm_start=old"], search_space=only_svc)
    with pytest.raises(UnitRefineError, match=r"none of the configurations of .* fits the current search space"):
        warm_start(cfg, parse_search_space(only_svc))
    with pytest.raises(UnitRefineError, match="search.warm_start_trials must be >= 1"):
        make_config(tmp_path, tiny_recordings, ["search.warm_start=old", "search.warm_start_trials=0"])


def test_retrain_with_new_labels_runs_the_previous_best_configurations_first(tmp_path: Path, tiny_recordings) -> None:
    common = ["tracking.enabled=false", "search.n_jobs=1", "cv.n_splits=3"]
    first = train(make_config(tmp_path, tiny_recordings[:3], [*common, "search.n_trials=4", "output.folder=models/v1"]))
    expected = [p for _, p in previous_configurations(first.model_folder)][:2]
    # New labels (a fourth recording), a warm start from the first model (relative to root), a fresh study.
    cfg = make_config(tmp_path, tiny_recordings, [*common, "search.n_trials=4", "output.folder=models/v2",
                                                  "search.warm_start=models/v1", "search.warm_start_trials=2"])
    second = train(cfg)
    trials = second.study.trials
    space = parse_search_space(cfg.search_space)
    labels = [label for label, _ in previous_configurations(first.model_folder)][:2]
    for trial, params, label in zip(trials[:2], expected, labels):
        assert trial.params == fit_to_space(params, space)[0]
        assert trial.user_attrs[WARM_START_ATTR] == f"{first.model_folder.resolve()} {label}"
    assert trials[0].params == fit_to_space(json.loads((first.model_folder / "model_info.json").read_text())[
        "best_configuration"], space)[0]
    # Then the classifier defaults, as in any new study; neither is a warm-start trial.
    assert [t.params for t in trials[2:4]] == space.fixed_trials()[:2]
    assert all(WARM_START_ATTR not in t.user_attrs for t in trials[2:])


def test_warm_start_from_the_registry(tmp_path: Path, tiny_recordings) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = [f"tracking.uri={uri}", "search.n_jobs=1", "cv.n_splits=3", "search.n_trials=3"]
    first = train(make_config(tmp_path, tiny_recordings[:3], [*common, "output.folder=v1"]))
    assert first.model_version == "1"
    cfg = make_config(tmp_path, tiny_recordings, [*common, "output.folder=v2",
                                                  "search.warm_start=models:/smoke@challenger",
                                                  "search.warm_start_trials=1"])
    second = train(cfg)  # the data differ from the first study's: a fresh study beside it, not a refused resume
    assert second.study.study_name == "smoke#2"
    best = json.loads((first.model_folder / "model_info.json").read_text())["best_configuration"]
    assert second.study.trials[0].params == fit_to_space(best, parse_search_space(cfg.search_space))[0]
    client = MlflowClient(uri)
    parent = client.get_run(second.run_id)
    assert parent.data.tags["unitrefine.run.warm_start"] == "models:/smoke@challenger"
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{second.run_id}'")
    tagged = {r.data.tags["optuna.trial_number"]: r.data.tags.get("unitrefine.run.warm_start") for r in runs}
    assert tagged["0"] == "models:/smoke@challenger best configuration" and "1" not in tagged
    assert second.study.trials[1].user_attrs["duplicate_of"] == 0  # the default configuration: no second fit
    cfg = make_config(tmp_path, tiny_recordings,
                      [*common, "search.warm_start=models:/smoke@champion", "search.resume=false"])
    with pytest.raises(UnitRefineError, match="search.warm_start: models:/smoke@champion is not in the registry"):
        train(cfg)
