"""What a run reports: the leaderboard, the held-out evaluation, the model folder's contents, the summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits

from unitrefine.data.dataset import UnitTable
from unitrefine.export import plots
from unitrefine.export.card import write_model_card
from unitrefine.export.folder import (
    CONFIG_FILE,
    HOLDOUT_PREDICTIONS_FILE,
    LABELS_FILE,
    LEADERBOARD_FILE,
    MODEL_FILE,
    TRAINING_DATA_FILE,
    dump_model,
    write_tables,
)
from unitrefine.export.model_info import ModelInfo
from unitrefine.model.estimate import describe
from unitrefine.progress import bar, ticking, working
from unitrefine.search.evaluation import Plan, balanced_accuracy, holdout_report
from unitrefine.search.outcomes import Study, TrialOutcome
from unitrefine.search.search_space import PipelineSpec, SearchSpace
from unitrefine.search.study_plots import optimization_history, param_importances
from unitrefine.search.trial_attrs import CV_STD_ATTR, DUPLICATE_ATTR, ERROR_ATTR, FOLD_SCORES_ATTR

log = logging.getLogger(__name__)

#: Shuffles per feature for the held-out feature importance (a ranking for the figure, not a test).
IMPORTANCE_REPEATS = 3


def spec_params(spec: PipelineSpec) -> dict[str, Any]:
    """A pipeline as flat parameters with the names Optuna uses (``classifier``, ``random_forest.max_depth``)."""
    out: dict[str, Any] = {}
    for slot, choice in spec.items():
        out[slot] = choice.name
        out.update({f"{choice.name}.{p}": v for p, v in choice.params.items()})
    return out


def leaderboard(trials: Sequence[TrialOutcome], space: SearchSpace) -> pd.DataFrame:
    """Every trial, best first: state, CV score (mean, std, per fold), duration and configuration."""
    rows = []
    for t in trials:
        if t.user_attrs.get(DUPLICATE_ATTR) is not None:  # never fitted: the trial it repeats has the score
            continue
        folds = t.user_attrs.get(FOLD_SCORES_ATTR, [])
        spec = space.partial_spec(t.params)
        rows.append(
            {
                "trial": t.number,
                "state": t.state,
                "cv_score": t.value,
                "cv_score_std": t.user_attrs.get(CV_STD_ATTR),
                "n_folds": len(folds),
                "fold_scores": json.dumps([round(s, 4) for s in folds]),
                "duration_s": None if t.duration_s is None else round(t.duration_s, 2),
                **{slot: c.name for slot, c in spec.items()},
                "params": json.dumps({k: v for k, v in spec_params(spec).items() if "." in k}, default=str),
                "error": t.user_attrs.get(ERROR_ATTR),
            }
        )
    df = pd.DataFrame(rows)
    return df.sort_values(["cv_score", "trial"], ascending=[False, True], na_position="last").reset_index(drop=True)


def predictions(model: Any, table: UnitTable) -> pd.DataFrame:
    """Per unit: recording, id, curators' label, true and predicted class, confidence, class probabilities."""
    proba = model.predict_proba(table.X)
    pred = model.predict(table.X)
    out = table.units[["recording", "unit_id", "label"]].copy()
    out["true_class"] = [table.classes[i] for i in table.y]
    out["predicted_class"] = [table.classes[i] for i in pred]
    out["confidence"] = proba.max(axis=1)
    for i, c in enumerate(table.classes):
        out[f"probability_{c}"] = proba[:, i]
    return out


def permutation_importance(model: Any, table: UnitTable, scoring: str, seed: int, n_jobs: int) -> pd.DataFrame:
    """Drop in ``scoring`` when each metric is shuffled (:data:`IMPORTANCE_REPEATS` repeats), most important first.

    It ranks the metrics for the feature-importance figure, so a few repeats do; each repeat is one call of
    scikit-learn's ``permutation_importance`` (progress shown per repeat). Features are shuffled on ``n_jobs``
    threads: processes would each get a copy of the model (an ensemble of forests is hundreds of MB), and the
    predictions release the GIL.
    """
    from joblib import parallel_config
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    repeats = []
    progress = bar(IMPORTANCE_REPEATS, "feature importance", "repeat")
    try:
        with threadpool_limits(limits=1), parallel_config(backend="threading"), ticking(progress):
            for r in range(IMPORTANCE_REPEATS):
                result = sk_permutation_importance(model, table.X, table.y, scoring=scoring, n_repeats=1,
                                                   random_state=seed + r, n_jobs=n_jobs)
                repeats.append(result.importances[:, 0])
                progress.update(1)
    finally:
        progress.close()
    drops = np.column_stack(repeats)
    return pd.DataFrame(
        {"feature": table.X.columns, "importance_mean": drops.mean(axis=1), "importance_std": drops.std(axis=1)}
    ).sort_values("importance_mean", ascending=False, ignore_index=True)


@dataclass(frozen=True)
class HeldOut:
    """The model fitted without the held-out recordings, scored on them."""

    report: dict[str, Any]
    predictions: pd.DataFrame
    importances: pd.DataFrame
    part: UnitTable


def evaluate_holdout(
    model: Any, part: UnitTable, scoring: str, seed: int, n_jobs: int, best_single: Any | None, thresholded: bool
) -> HeldOut:
    """Score ``model`` on the held-out ``part``.

    ``best_single`` (an ensemble's best trial) is scored too, for the record; with a tuned threshold
    (``thresholded``) so is the default threshold 0.5.
    """
    preds = predictions(model, part)
    recordings = part.units["recording"].to_numpy()
    report = holdout_report(part.y, model.predict(part.X), part.classes, recordings)
    if thresholded:
        at_half = (preds[f"probability_{part.classes[1]}"].to_numpy() >= 0.5).astype(int)
        report["balanced_accuracy_at_threshold_0.5"] = balanced_accuracy(part.y, at_half)
    if best_single is not None:  # the ensemble was chosen out of fold, before this: for the record only
        report["best_single_trial_balanced_accuracy"] = balanced_accuracy(part.y, best_single.predict(part.X))
    return HeldOut(report, preds, permutation_importance(model, part, scoring, seed, n_jobs), part)


@dataclass(frozen=True)
class Export:
    """What a model folder is written from.

    Attributes
    ----------
    model : estimator
        The exported pipeline.
    info : ModelInfo
        Its ``model_info.json``.
    config : dict
        The resolved training configuration (``config.yaml``).
    fitted_on, table : UnitTable
        The units the model was fitted on; every labelled unit.
    plan : Plan
        The held-out split and CV folds.
    board : pandas.DataFrame
        The leaderboard of every trial.
    study : Study
        The Optuna study (its plots).
    held : HeldOut or None
        The held-out evaluation.
    metadata : dict
        The dataset's metadata (species, probe, ...).
    """

    model: Any
    info: ModelInfo
    config: dict[str, Any]
    fitted_on: UnitTable
    table: UnitTable
    plan: Plan
    board: pd.DataFrame
    study: Study
    held: HeldOut | None
    metadata: dict[str, Any]


def write_folder(folder: Path, export: Export, name: str | None = None) -> None:
    """Write a model folder's contents into ``folder``: model, model_info.json, tables, figures and model card.

    ``name``: the folder's name once in place, when ``folder`` is a staging folder (the card refers to it).
    """
    with working(f"writing {MODEL_FILE}"):
        dump_model(export.model, folder)
    (folder / CONFIG_FILE).write_text(OmegaConf.to_yaml(export.config), encoding="utf-8")
    fitted_on, table, held = export.fitted_on, export.table, export.held
    training_data = fitted_on.X.copy()
    training_data.insert(0, "unit_id", fitted_on.units["unit_id"].to_numpy())
    training_data.insert(0, "recording", fitted_on.units["recording"].to_numpy())
    labels = fitted_on.units[["recording", "unit_id", "label"]].assign(
        **{"class": [table.classes[i] for i in fitted_on.y], "class_code": fitted_on.y}
    )
    tables = {
        LEADERBOARD_FILE: export.board,
        TRAINING_DATA_FILE: training_data,
        LABELS_FILE: labels,
        "splits.csv": export.plan.assignment(table),
    }
    if held is not None:
        tables[HOLDOUT_PREDICTIONS_FILE] = held.predictions
        tables["feature_importance.csv"] = held.importances
        tables["holdout_per_recording.csv"] = pd.DataFrame(
            [{"recording": r, **m} for r, m in held.report["per_recording"].items()]
        )
        plots.feature_importances(held.importances, folder / "feature_importance.png")
        plots.confusion(held.report["confusion_matrix"], table.classes, folder / "confusion_matrix.png",
                        "Held-out recordings")
        plots.per_recording(held.report["per_recording"], folder / "per_recording.png")
        if len(table.classes) == 2:
            positive = table.classes[1]
            plots.roc_pr(held.part.y, held.predictions[f"probability_{positive}"].to_numpy(), positive,
                         folder / "roc_curve.png", folder / "pr_curve.png")
    write_tables(folder, tables)
    optimization_history(export.study, folder / "optimization_history.png")
    param_importances(export.study, folder / "param_importance.png")
    info = export.info.to_dict()
    write_model_card(folder, export.model, info, export.metadata, name)
    export.info.write(folder)


UI_HOST, UI_PORT = "127.0.0.1", 5000  # where the printed `mlflow ui` command serves the UI


@dataclass
class TrainResult:
    """What a training run produced."""

    experiment: str
    model_folder: Path
    run_id: str | None
    tracking_uri: str | None
    model_version: str | None
    best_trial: int
    best_cv_score: float
    best_spec: PipelineSpec
    ensemble: dict[int, int] | None
    holdout: dict[str, Any] | None
    estimate: dict[str, Any]
    trial_counts: dict[str, int]
    wall_time_s: float
    stage_seconds: dict[str, float]
    study: Study
    leaderboard: pd.DataFrame
    runs_page: str | None = None  # the MLflow UI address of the experiment's runs (tracking.runs_page)


def summary(result: TrainResult, scoring: str) -> str:
    """The end-of-run summary: top trials, held-out scores, the estimate for new recordings, stage times, where to
    look."""
    board, holdout = result.leaderboard, result.holdout
    exported = (f"soft-voting ensemble of trials {result.ensemble} (trial: weight)" if result.ensemble
                else f"trial {result.best_trial}")
    top = board[board["state"] == "complete"].head(5)
    cols = ["trial", "cv_score", "cv_score_std", "imputer", "scaler", "resampler", "classifier"]
    lines = [
        "",
        f"Study '{result.experiment}': {result.trial_counts} trials; run took {result.wall_time_s:.0f} s",
        "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.stage_seconds.items()),
        f"Top trials (CV {scoring}):",
        top[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"),
        f"Exported model: {exported}",
    ]
    if holdout:
        per_rec = ", ".join(f"{r} {m['balanced_accuracy']:.3f}" for r, m in holdout["per_recording"].items())
        lines.append(f"Held-out recordings: balanced accuracy {holdout['balanced_accuracy']:.4f} ({per_rec})")
    else:
        lines.append("No held-out recordings (cv.holdout_recordings is empty).")
    lines.append(describe(result.estimate))
    lines.append(f"Model folder: {result.model_folder}")
    if result.run_id:
        lines.append(f"MLflow run: {result.run_id} (model version {result.model_version})")
        lines.append(
            "Open the UI: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui "
            f"--backend-store-uri {result.tracking_uri} --host {UI_HOST} --port {UI_PORT} --workers 1"
        )
        if result.runs_page:
            lines.append(f"then the runs, best cv_score first: {result.runs_page}")
    return "\n".join(lines)
