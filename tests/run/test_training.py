"""End to end on tiny data: a real Optuna study, a real MLflow store in tmp_path, a SpikeInterface load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import features_for, make_config, overlapping_recordings
from mlflow.tracking import MlflowClient

from unitrefine.data.loading import load_dataset
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import load_model_folder
from unitrefine.export.report import summary
from unitrefine.model.final_model import fit_spec
from unitrefine.run.training import train
from unitrefine.search.estimators import TRUSTED_TYPES
from unitrefine.search.evaluation import balanced_accuracy

N_TRIALS = 4


@pytest.fixture
def smoke_result(tmp_path: Path, tiny_recordings: list[dict[str, str]]):
    """One smoke study: 3 recordings searched with grouped CV, rec3 held out, exported model not refit."""
    cfg = make_config(
        tmp_path,
        tiny_recordings,
        [f"search.n_trials={N_TRIALS}", "search.n_jobs=2", "cv.n_splits=3", "cv.group_by=recording",
         "cv.holdout_recordings=[rec3]", "cv.refit_on_all=false"],
    )
    return cfg, train(cfg)


def test_model_folder_has_the_spikeinterface_contract_and_the_audit_trail(smoke_result) -> None:
    cfg, result = smoke_result
    folder = result.model_folder
    assert folder.parent == Path(cfg.root) / "experiments" / "smoke" / "models"
    assert [p.name for p in folder.glob("*.skops")] == ["best_model.skops"]
    info = json.loads((folder / "model_info.json").read_text())
    assert info["label_conversion"] == {"0": "other", "1": "good"}
    # The estimate for new recordings: the exported configuration refit without each recording, scored on it
    # (two subjects only, so by recording), not the (selected, optimistic) CV score.
    estimate = info["estimate_new_recordings"]
    assert estimate["source"] == "leave-one-recording-out refits of the exported model" and not estimate["optimistic"]
    table = load_dataset(cfg.dataset, cfg.task, cfg.root_dir)
    rec0 = (table.units["recording"] == "rec0").to_numpy()
    refit = fit_spec(result.best_spec, table.subset(np.flatnonzero(~rec0)), cfg.seed)
    expected = balanced_accuracy(table.y[rec0], refit.predict(table.X[rec0]))
    assert estimate["per_group"]["rec0"] == pytest.approx(expected)
    assert sorted(estimate["per_group"]) == ["rec0", "rec1", "rec2", "rec3"]
    assert estimate["holdout_balanced_accuracy"] == result.holdout["balanced_accuracy"]
    assert estimate["interval"][0] < estimate["balanced_accuracy"] < estimate["interval"][1] or (
        len(set(estimate["per_group"].values())) == 1)
    assert info["requirements"]["spikeinterface"]
    assert "snr" in info["metric_params"]["quality_metric_params"]["metric_names"]
    assert "peak_to_trough_duration" in info["metric_params"]["template_metric_params"]["metric_names"]
    board = pd.read_csv(folder / "model_accuracies.csv")
    assert len(board) == N_TRIALS
    assert board["cv_score"].iloc[0] == pytest.approx(result.best_cv_score)
    splits = pd.read_csv(folder / "splits.csv")
    assert set(splits.loc[splits["split"] == "holdout", "recording"]) == {"rec3"}
    assert splits.loc[splits["split"] == "train", "fold"].between(0, 2).all()
    held = pd.read_csv(folder / "holdout_predictions.csv")
    assert set(held["recording"]) == {"rec3"} and len(held) == 60
    np.testing.assert_allclose(held[["probability_other", "probability_good"]].sum(axis=1), 1.0, rtol=1e-6)
    # Not refit: the exported model is trained on the three searched recordings only.
    assert set(pd.read_csv(folder / "training_data.csv")["recording"]) == {"rec0", "rec1", "rec2"}
    for png in ("optimization_history.png", "confusion_matrix.png", "feature_importance.png", "per_recording.png",
                "roc_curve.png", "pr_curve.png"):
        assert (folder / png).stat().st_size > 1000
    card = (folder / "README.md").read_text()
    assert "rec0, rec1, rec2" in card and "![Per recording](per_recording.png)" in card
    assert f"Expected balanced accuracy on new recordings: {estimate['balanced_accuracy']:.3f}" in card
    assert all(t in card for t in TRUSTED_TYPES)  # the card shows how to load the model safely
    assert json.loads((folder / "metadata.json").read_text())["species"] == "mouse"
    per_rec = pd.read_csv(folder / "holdout_per_recording.csv")
    assert per_rec["recording"].tolist() == ["rec3"] and per_rec["n_units"].tolist() == [60]
    assert not list(folder.parent.glob(".*partial*"))
    assert result.holdout is not None and set(result.holdout["per_recording"]) == {"rec3"}


def test_spikeinterface_loads_the_folder_and_predicts_like_us(smoke_result, tiny_recordings) -> None:
    from spikeinterface.curation import load_model

    _, result = smoke_result
    folder = result.model_folder
    si_model, si_info = load_model(model_folder=folder, trusted=list(TRUSTED_TYPES))
    ours, info = load_model_folder(folder)
    assert si_info["label_conversion"] == info["label_conversion"]
    held = pd.read_csv(folder / "holdout_predictions.csv")
    X = features_for(si_model, tiny_recordings[3]["metrics"])
    si_proba = si_model.predict_proba(X)
    np.testing.assert_allclose(si_proba, ours.predict_proba(X))
    np.testing.assert_allclose(si_proba[:, 1], held["probability_good"], rtol=1e-6)
    labels = [si_info["label_conversion"][str(i)] for i in si_model.predict(X)]
    assert labels == held["predicted_class"].tolist()


def test_mlflow_holds_parent_nested_trials_artifacts_and_registered_model(smoke_result) -> None:
    cfg, result = smoke_result
    client = MlflowClient(result.tracking_uri)
    assert result.tracking_uri == f"sqlite:///{Path(cfg.root) / 'mlruns' / 'mlflow.db'}"
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert [p.info.run_id for p in parent] == [result.run_id]
    assert len(nested) == N_TRIALS
    assert {r.data.tags["optuna.trial_number"] for r in nested} == {str(i) for i in range(N_TRIALS)}
    for r in nested:
        assert "classifier" in r.data.params
        if r.data.tags["optuna.state"] == "complete":
            assert r.info.status == "FINISHED" and "cv_score" in r.data.metrics
    p = parent[0]
    assert p.info.status == "FINISHED"
    assert p.data.metrics["holdout_balanced_accuracy"] == pytest.approx(result.holdout["balanced_accuracy"])
    assert p.data.tags["unitrefine.holdout_recordings"] == "rec3"
    assert len(p.data.tags["unitrefine.dataset_fingerprint"]) == 64
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "model_folder")}
    assert {"model_folder/model_accuracies.csv", "model_folder/optimization_history.png",
            "model_folder/best_model.skops"} <= artifacts
    assert Path(cfg.root, "mlruns", "artifacts", "smoke").is_dir()
    version = client.get_model_version("smoke", result.model_version)
    assert version.run_id == result.run_id
    assert result.runs_page is not None and f"/#/experiments/{exp.experiment_id}/runs?" in result.runs_page
    assert result.runs_page in summary(result, "balanced_accuracy")


def test_refit_on_all_trains_the_export_on_every_recording(tmp_path: Path, tiny_recordings) -> None:
    cfg = make_config(
        tmp_path, tiny_recordings,
        ["search.n_trials=2", "cv.n_splits=3", "cv.holdout_recordings=[rec3]", "tracking.enabled=false"],
    )
    result = train(cfg)
    assert set(pd.read_csv(result.model_folder / "training_data.csv")["recording"]) == {"rec0", "rec1", "rec2", "rec3"}
    assert result.run_id is None and result.model_version is None and result.runs_page is None
    assert not (tmp_path / "mlruns").exists()


def test_existing_output_folder_is_refused_before_any_work_and_replaced_with_overwrite(
    tmp_path: Path, tiny_recordings
) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cfg = make_config(tmp_path, tiny_recordings, ["search.n_trials=1", f"output.folder={out}"])
    with pytest.raises(UnitRefineError, match="already exists"):
        train(cfg)
    assert (out / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "mlruns").exists()  # refused before the tracking store was touched
    overwrite = ["search.n_trials=1", f"output.folder={out}", "output.overwrite=true", "tracking.enabled=false"]
    # A folder of the user's own files is not a model folder: overwrite does not replace it either.
    with pytest.raises(UnitRefineError, match="not a model folder"):
        train(make_config(tmp_path, tiny_recordings, overwrite))
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    first = train(make_config(tmp_path, tiny_recordings, overwrite)).model_folder
    (first / "stale.txt").write_text("from the first model")
    train(make_config(tmp_path, tiny_recordings, overwrite))
    assert not (out / "stale.txt").exists() and (out / "best_model.skops").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_output_folder_that_is_a_file_is_never_replaced(tmp_path: Path, tiny_recordings) -> None:
    target = tmp_path / "r.csv"
    target.write_text("a,b\n1,2\n")
    for extra in ([], ["output.overwrite=true"]):
        cfg = make_config(tmp_path, tiny_recordings, ["search.n_trials=1", f"output.folder={target}", *extra])
        with pytest.raises(UnitRefineError, match=f"{target} is an existing file"):
            train(cfg)
        assert target.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert not (tmp_path / "mlruns").exists()


def test_same_seed_gives_the_same_sequential_study(tmp_path: Path, tiny_recordings) -> None:
    def run(sub: str):
        cfg = make_config(
            tmp_path / sub, tiny_recordings,
            ["search.n_trials=5", "search.n_jobs=1", "tracking.enabled=false", "cv.n_splits=3"],
        )
        return train(cfg).study

    a, b = run("a"), run("b")
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]


def test_ensemble_export_is_one_pipeline_that_spikeinterface_loads(tmp_path: Path) -> None:
    from sklearn.pipeline import Pipeline
    from spikeinterface.curation import load_model

    recordings = overlapping_recordings(tmp_path / "hard", 4, seed=7, spread=4.0)
    cfg = make_config(
        tmp_path, recordings,
        ["search.n_trials=8", "search.n_jobs=1", "cv.n_splits=3", "cv.holdout_recordings=[rec3]",
         "cv.refit_on_all=false", "tracking.enabled=false", "ensemble.rounds=10", "ensemble.candidates=8"],
    )
    result = train(cfg)
    info = json.loads((result.model_folder / "model_info.json").read_text())
    si_model, _ = load_model(model_folder=result.model_folder, trusted=list(TRUSTED_TYPES))
    assert isinstance(si_model, Pipeline)
    X = features_for(si_model, recordings[3]["metrics"])
    held = pd.read_csv(result.model_folder / "holdout_predictions.csv")
    np.testing.assert_allclose(si_model.predict_proba(X)[:, 1], held["probability_good"], rtol=1e-6)
    # On overlapping classes the selection mixes trials; the members and weights are recorded and the
    # exported model averages exactly those.
    assert result.ensemble is not None and len(result.ensemble) > 1
    assert [m["trial"] for m in info["ensemble"]] == list(result.ensemble)
    vote = si_model.named_steps["ensemble"]
    assert list(vote.weights) == list(result.ensemble.values())
    assert [name for name, _ in vote.estimators] == [f"trial_{n}" for n in result.ensemble]
    assert "best_single_trial_balanced_accuracy" in info["holdout"]


def test_a_unit_limit_subsamples_search_and_export_and_is_part_of_the_study_identity(
    tmp_path: Path, tiny_recordings
) -> None:
    from unitrefine.search.pipeline import fit_positions

    space = {"imputer": {"median": {}}, "scaler": {"standard": {}}, "resampler": {"none": {}},
             "classifier": {"logistic_regression": {"C": 1.0}}}

    def config(limits: list[str]):
        return make_config(tmp_path, tiny_recordings, ["search.n_trials=2", "cv.n_splits=3", *limits],
                           search_space=space)

    cfg = config(["+search.unit_limits.logistic_regression=100"])
    result = train(cfg)
    info = json.loads((result.model_folder / "model_info.json").read_text())
    assert info["unit_limits"] == {"logistic_regression": 100}
    pipeline, _ = load_model_folder(result.model_folder)
    labels = pd.read_csv(result.model_folder / "labels.csv")
    assert len(labels) == 240
    expected = len(fit_positions(labels["class_code"].to_numpy(), 100, cfg.seed))
    assert pipeline.named_steps["scaler"].n_samples_seen_ == expected <= 101
    # A limit that binds is part of what the study's scores depend on; one that does not bind is not.
    limited = train(config(["+search.unit_limits.logistic_regression=150"]))  # a fresh study beside it
    assert limited is not None and limited.study.study_name == "smoke#2"
    assert train(config(["+search.unit_limits.logistic_regression=100", "search.unit_limits.svc=200"])) is None
