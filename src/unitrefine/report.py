"""What a run reports: the leaderboard, the held-out evaluation, the model folder's contents, the summary."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits

from unitrefine import plots
from unitrefine.card import write_model_card
from unitrefine.data import UnitTable
from unitrefine.estimate import describe
from unitrefine.evaluation import Plan, balanced_accuracy, holdout_report
from unitrefine.export import INFO_FILE, dump_model, write_json, write_tables
from unitrefine.search_space import PipelineSpec, SearchSpace

log = logging.getLogger(__name__)


def spec_params(spec: PipelineSpec) -> dict[str, Any]:
    """A pipeline as flat parameters with the names Optuna uses (``classifier``, ``random_forest.max_depth``)."""
    out: dict[str, Any] = {}
    for slot, choice in spec.items():
        out[slot] = choice.name
        out.update({f"{choice.name}.{p}": v for p, v in choice.params.items()})
    return out


def leaderboard(study: optuna.Study, space: SearchSpace) -> pd.DataFrame:
    """Every trial, best first: state, CV score (mean, std, per fold), duration and configuration."""
    rows = []
    for t in study.trials:
        folds = t.user_attrs.get("fold_scores", [])
        spec = space.spec_from_params(t.params) if set(space.slots) <= set(t.params) else {}
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "cv_score": t.value,
                "cv_score_std": t.user_attrs.get("cv_std"),
                "n_folds": len(folds),
                "fold_scores": json.dumps([round(s, 4) for s in folds]),
                "duration_s": None if t.duration is None else round(t.duration.total_seconds(), 2),
                **{slot: c.name for slot, c in spec.items()},
                "params": json.dumps({k: v for k, v in spec_params(spec).items() if "." in k}, default=str),
                "error": t.user_attrs.get("error"),
            }
        )
    df = pd.DataFrame(rows)
    return df.sort_values(["cv_score", "trial"], ascending=[False, True], na_position="last").reset_index(drop=True)


class Progress:
    """A progress bar over trials showing the best score so far (an Optuna callback)."""

    def __init__(self, total: int, done: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=done, desc="trials", unit="trial", dynamic_ncols=True)
        self._lock = threading.Lock()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Advance the bar by one finished trial."""
        with self._lock:
            self.bar.update(1)
            try:
                self.bar.set_postfix(best=f"{study.best_value:.4f}", trial=study.best_trial.number)
            except ValueError:  # no completed trial yet
                pass

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()


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
    """Drop in ``scoring`` when each metric is shuffled (5 repeats), most important first."""
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    with threadpool_limits(limits=1):
        result = sk_permutation_importance(
            model, table.X, table.y, scoring=scoring, n_repeats=5, random_state=seed, n_jobs=n_jobs
        )
    return pd.DataFrame(
        {"feature": table.X.columns, "importance_mean": result.importances_mean, "importance_std": result.importances_std}
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


def write_folder(
    folder: Path, *, model: Any, info: dict[str, Any], config: dict[str, Any], fitted_on: UnitTable,
    table: UnitTable, plan: Plan, board: pd.DataFrame, study: optuna.Study, held: HeldOut | None,
    metadata: dict[str, Any],
) -> None:
    """Write a model folder's contents: model, model_info.json, tables, figures and model card."""
    dump_model(model, folder)
    write_json(folder / INFO_FILE, info)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(config), encoding="utf-8")
    training_data = fitted_on.X.copy()
    training_data.insert(0, "unit_id", fitted_on.units["unit_id"].to_numpy())
    training_data.insert(0, "recording", fitted_on.units["recording"].to_numpy())
    labels = fitted_on.units[["recording", "unit_id", "label"]].assign(
        **{"class": [table.classes[i] for i in fitted_on.y], "class_code": fitted_on.y}
    )
    tables = {
        "model_accuracies.csv": board,
        "training_data.csv": training_data,
        "labels.csv": labels,
        "splits.csv": plan.assignment(table),
    }
    if held is not None:
        tables["holdout_predictions.csv"] = held.predictions
        tables["feature_importance.csv"] = held.importances
        tables["holdout_per_recording.csv"] = pd.DataFrame(
            [{"recording": r, **m} for r, m in held.report["per_recording"].items()]
        )
        plots.feature_importances(held.importances, folder / "feature_importance.png")
        plots.confusion(held.report["confusion_matrix"], table.classes, folder / "confusion_matrix.png", "Held-out recordings")
        plots.per_recording(held.report["per_recording"], folder / "per_recording.png")
        if len(table.classes) == 2:
            positive = table.classes[1]
            plots.roc_pr(held.part.y, held.predictions[f"probability_{positive}"].to_numpy(), positive,
                         folder / "roc_curve.png", folder / "pr_curve.png")
    write_tables(folder, tables)
    plots.optimization_history(study, folder / "optimization_history.png")
    plots.param_importances(study, folder / "param_importance.png")
    write_model_card(folder, model, info, metadata)


def summary(
    experiment: str, scoring: str, counts: dict[str, int], wall_time_s: float, board: pd.DataFrame,
    exported: str, holdout: dict[str, Any] | None, estimate: dict[str, Any], folder: Path, run_id: str | None,
    version: str | None, tracking_uri: str | None,
) -> str:
    """The end-of-run summary: top trials, held-out scores, the estimate for new recordings, where to look."""
    top = board[board["state"] == "complete"].head(5)
    cols = ["trial", "cv_score", "cv_score_std", "imputer", "scaler", "resampler", "classifier"]
    lines = [
        "",
        f"Study '{experiment}': {counts} trials in {wall_time_s:.0f} s",
        f"Top trials (CV {scoring}):",
        top[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"),
        f"Exported model: {exported}",
    ]
    if holdout:
        per_rec = ", ".join(f"{r} {m['balanced_accuracy']:.3f}" for r, m in holdout["per_recording"].items())
        lines.append(f"Held-out recordings: balanced accuracy {holdout['balanced_accuracy']:.4f} ({per_rec})")
    else:
        lines.append("No held-out recordings (cv.holdout_recordings is empty).")
    lines.append(describe(estimate))
    lines.append(f"Model folder: {folder}")
    if run_id:
        lines.append(f"MLflow run: {run_id} (model version {version})")
        lines.append(
            "Open the UI: MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui "
            f"--backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000 --workers 1"
        )
    return "\n".join(lines)
