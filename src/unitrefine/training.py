"""One training run: load, split, search, evaluate on held-out recordings, refit, export, track, register."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits

from unitrefine import plots
from unitrefine.card import write_model_card
from unitrefine.config import TrainConfig
from unitrefine.data import UnitTable, load_dataset
from unitrefine.ensemble import Selection, select_ensemble
from unitrefine.errors import UnitRefineError
from unitrefine.estimators import TRUSTED_TYPES
from unitrefine.evaluation import balanced_accuracy, holdout_report, make_folds, make_plan, scorer
from unitrefine.export import (
    INFO_FILE,
    check_output_folder,
    dump_model,
    metric_params_for,
    package_versions,
    write_json,
    write_model_folder,
    write_tables,
)
from unitrefine.objective import Objective
from unitrefine.pipeline import build_pipeline, export_pipeline, soft_vote
from unitrefine.search_space import PipelineSpec, SearchSpace, parse_search_space
from unitrefine.study import budget, study_identity, trial_counts
from unitrefine.threshold import Threshold, tune_threshold, with_threshold
from unitrefine.tracking import NullTracker, Tracker, default_tracking_uri
from unitrefine.session import Session, join_study
from unitrefine.workers import Finalizer, Worker

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    model_folder: Path
    run_id: str | None
    tracking_uri: str | None
    model_version: str | None
    best_trial: int
    best_cv_score: float
    best_spec: PipelineSpec
    ensemble: dict[int, int] | None
    holdout: dict[str, Any] | None
    trial_counts: dict[str, int]
    wall_time_s: float
    study: optuna.Study


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


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _make_tracker(cfg: TrainConfig) -> Tracker | NullTracker:
    if not cfg.tracking.enabled:
        return NullTracker()
    root = cfg.root_dir
    uri = cfg.tracking.uri or default_tracking_uri(root)
    artifacts = cfg.tracking.artifact_location or (root / "mlruns" / "artifacts" / cfg.experiment_name).resolve().as_uri()
    return Tracker(uri, cfg.experiment_name, artifacts)


def _permutation_importance(model: Any, table: UnitTable, scoring: str, seed: int, n_jobs: int) -> pd.DataFrame:
    from sklearn.inspection import permutation_importance

    with threadpool_limits(limits=1):
        result = permutation_importance(
            model, table.X, table.y, scoring=scoring, n_repeats=5, random_state=seed, n_jobs=n_jobs
        )
    return pd.DataFrame(
        {"feature": table.X.columns, "importance_mean": result.importances_mean, "importance_std": result.importances_std}
    ).sort_values("importance_mean", ascending=False, ignore_index=True)


def _fit(spec: PipelineSpec, table: UnitTable, seed: int) -> Any:
    with threadpool_limits(limits=1):
        return build_pipeline(spec, seed).fit(table.X, table.y)


def _predictions(model: Any, table: UnitTable) -> pd.DataFrame:
    proba = model.predict_proba(table.X)
    pred = model.predict(table.X)
    out = table.units[["recording", "unit_id", "label"]].copy()
    out["true_class"] = [table.classes[i] for i in table.y]
    out["predicted_class"] = [table.classes[i] for i in pred]
    out["confidence"] = proba.max(axis=1)
    for i, c in enumerate(table.classes):
        out[f"probability_{c}"] = proba[:, i]
    return out


def _select_ensemble(
    cfg: TrainConfig, complete: list[optuna.trial.FrozenTrial], objective: Objective, part: UnitTable
) -> Selection | None:
    """Pick the soft-voting members from the best trials' out-of-fold predictions (None when disabled)."""
    if cfg.ensemble.rounds == 0:
        return None
    ranked = sorted((t for t in complete if t.number in objective.oof), key=lambda t: (-t.value, t.number))
    candidates = [t.number for t in ranked[: cfg.ensemble.candidates]]
    selection = select_ensemble(objective.oof, part.y, candidates, cfg.ensemble.rounds)
    if selection.is_ensemble:
        log.info(
            "Ensemble of trials %s: out-of-fold balanced accuracy %.4f (best single trial %d: %.4f).",
            selection.weights, selection.score, selection.single_trial, selection.single_score,
        )
    else:
        log.info("No ensemble beats the best single trial out of fold (%.4f): exporting one model.", selection.score)
    return selection


def _calibrated(cfg: TrainConfig, specs: dict[int, PipelineSpec], members: dict[int, int], part: UnitTable) -> Any:
    """The selected model refitted inside ``CalibratedClassifierCV`` on CV folds of ``part``.

    Each fold's model is fitted on the other folds (grouped by recording when possible) and the calibrator
    on its predictions; the model is then refitted on all of ``part``. A plain sklearn ``Pipeline`` results.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import VotingClassifier
    from sklearn.pipeline import Pipeline

    pipes = [(f"trial_{n}", build_pipeline(specs[n], cfg.seed)) for n in members]
    model = pipes[0][1] if len(pipes) == 1 else VotingClassifier(pipes, voting="soft", weights=list(members.values()))
    folds, _ = make_folds(part, cfg.cv, cfg.seed)
    calibrated = CalibratedClassifierCV(model, method=cfg.calibration.method, cv=folds, ensemble=False)
    with threadpool_limits(limits=1):
        return Pipeline([("calibrated", calibrated.fit(part.X, part.y))])


def _tune_threshold(cfg: TrainConfig, members: dict[int, int], objective: Objective, part: UnitTable) -> Threshold | None:
    """The decision threshold of the exported model, tuned on its members' out-of-fold predictions."""
    if not cfg.threshold.tune:
        return None
    proba = sum(w * objective.oof[n] for n, w in members.items()) / sum(members.values())
    threshold = tune_threshold(part.y, proba[:, 1], cfg.threshold.objective, cfg.threshold.target_precision)
    log.info(
        "Decision threshold %.3f on P(%s): out-of-fold balanced accuracy %.4f (at 0.5: %.4f), precision %.4f.",
        threshold.value, part.classes[1], threshold.oof_balanced_accuracy, threshold.oof_balanced_accuracy_at_half,
        threshold.oof_precision,
    )
    return threshold


def _model_folder(cfg: TrainConfig, run_id: str | None) -> Path:
    if cfg.output.folder:
        return cfg.resolve_path(cfg.output.folder)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = f"-{run_id[:8]}" if run_id else ""
    return cfg.root_dir / "experiments" / cfg.experiment_name / "models" / f"{stamp}{suffix}"


def _search(cfg: TrainConfig, session: Session, objective: Objective, space: SearchSpace) -> Finalizer | None:
    """This worker's share of the search; the :class:`~unitrefine.workers.Finalizer` if it is the one to export."""

    def params_of(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return spec_params(space.spec_from_params(t.params) if set(space.slots) <= set(t.params) else {})

    done = budget(session.study.get_trials(deepcopy=False), cfg.search.max_retries).counted
    progress = Progress(cfg.search.n_trials, done=min(done, cfg.search.n_trials))
    worker = Worker(
        session, objective, cfg.search.n_trials, cfg.search.n_jobs, cfg.search.max_retries, cfg.search.timeout_s,
        poll_s=1.0 if session.store.kind == "rdb" else 0.5, trial_params=params_of, callbacks=[progress],
    )
    try:
        finalizer = worker.run()
    finally:
        progress.close()
    if finalizer is not None and objective.keep_oof:
        # Trials run by other workers, or before a resume, have no out-of-fold predictions in this process.
        complete = [t for t in session.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
        ranked = sorted(complete, key=lambda t: (-t.value, t.number))[: max(cfg.ensemble.candidates, 1)]
        objective.ensure_oof(ranked)
    return finalizer


def train(cfg: TrainConfig) -> TrainResult | None:
    """Run one study end to end (or this worker's part of it).

    Parameters
    ----------
    cfg : TrainConfig
        A validated configuration (see :func:`unitrefine.config.validate_config`).

    Returns
    -------
    TrainResult or None
        None when this worker did not export: another worker of the study does, or did, or the study
        already has its trials and its export (see :mod:`unitrefine.workers`).

    Raises
    ------
    UnitRefineError
        For bad input or configuration; nothing is written in that case.
    """
    started = time.perf_counter()
    if cfg.output.folder:
        check_output_folder(cfg.resolve_path(cfg.output.folder), cfg.output.overwrite)
    table = load_dataset(cfg.dataset, cfg.task, cfg.root_dir)
    space = parse_search_space(cfg.search_space)
    plan = make_plan(table, cfg.cv, cfg.seed)
    train_part, held_part = table.subset(plan.train_index), table.subset(plan.holdout_index)
    config_dict = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(config_dict, dict)
    versions = package_versions()
    tags = {
        "unitrefine.experiment": cfg.experiment_name,
        "unitrefine.task": cfg.task.name,
        "unitrefine.dataset": cfg.dataset.name,
        "unitrefine.dataset_fingerprint": table.fingerprint(),
        "unitrefine.recordings": ",".join(dict.fromkeys(table.units["recording"])),
        "unitrefine.holdout_recordings": ",".join(dict.fromkeys(held_part.units["recording"])) or "none",
        "unitrefine.seed": str(cfg.seed),
        "mlflow.source.git.commit": _git_commit(cfg.root_dir),
        **{f"version.{k}": v for k, v in versions.items()},
    }
    run_name = f"{cfg.experiment_name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    objective = Objective(
        space, train_part.X, train_part.y, plan.folds, scorer(cfg.cv.scoring), cfg.seed,
        keep_oof=cfg.ensemble.rounds > 0 or cfg.threshold.tune,
    )
    identity = study_identity(cfg.search_space, train_part.fingerprint(), plan.folds, {"scoring": cfg.cv.scoring}, cfg.seed)
    session = join_study(cfg, identity, space.fixed_trials(), lambda: _make_tracker(cfg), run_name, tags, config_dict)
    tracker, study = session.tracker, session.study
    finalizer = _search(cfg, session, objective, space)
    if finalizer is None:
        return None
    with finalizer, tracker.parent_run(run_name, tags, run_id=session.run_id or None) as run_id:
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        counts = trial_counts(study.trials, cfg.search.max_retries)
        if not complete:
            errors = sorted({str(t.user_attrs.get("error", "?")) for t in study.trials})
            raise UnitRefineError(f"No trial completed ({counts}); errors: {errors[:3]}. Check the search space and the data.")
        best = study.best_trial
        spec = space.spec_from_params(best.params)
        log.info("Best trial %d: CV %s %.4f with %s", best.number, cfg.cv.scoring, best.value, spec_params(spec))
        selection = _select_ensemble(cfg, complete, objective, train_part)
        members = selection.weights if selection is not None and selection.is_ensemble else {best.number: 1}
        specs = {n: space.spec_from_params(study.trials[n].params) for n in members}

        threshold = _tune_threshold(cfg, members, objective, train_part)

        def fit_model(part: UnitTable) -> Any:
            if cfg.calibration.method is not None:
                return _calibrated(cfg, specs, members, part)
            fitted = [(f"trial_{n}", export_pipeline(_fit(specs[n], part, cfg.seed))) for n in members]
            model = fitted[0][1] if len(fitted) == 1 else soft_vote(fitted, list(members.values()), part.X, part.y)
            return model if threshold is None else with_threshold(model, threshold.value, part.X, part.y)

        model_on_train = fit_model(train_part)
        holdout: dict[str, Any] | None = None
        held_predictions = importances = None
        if len(held_part):
            held_predictions = _predictions(model_on_train, held_part)
            y_pred = model_on_train.predict(held_part.X)
            holdout = holdout_report(held_part.y, y_pred, table.classes, held_part.units["recording"].to_numpy())
            if threshold is not None:  # the effect of the tuned threshold, on recordings it was not tuned on
                at_half = (held_predictions[f"probability_{table.classes[1]}"].to_numpy() >= 0.5).astype(int)
                holdout["balanced_accuracy_at_threshold_0.5"] = balanced_accuracy(held_part.y, at_half)
            importances = _permutation_importance(model_on_train, held_part, cfg.cv.scoring, cfg.seed, cfg.search.n_jobs)
            if len(members) > 1:  # for the record only: the choice was made out of fold, before this
                single = _fit(spec, train_part, cfg.seed).predict(held_part.X)
                holdout["best_single_trial_balanced_accuracy"] = holdout_report(
                    held_part.y, single, table.classes, held_part.units["recording"].to_numpy()
                )["balanced_accuracy"]
        fit_table = table if cfg.cv.refit_on_all and len(held_part) else train_part
        exported = fit_model(table) if fit_table is table else model_on_train
        board = leaderboard(study, space)
        model_info = {
            "metric_params": table.metric_params if table.metric_params is not None else metric_params_for(table.X.columns),
            "requirements": versions,
            "label_conversion": {str(i): c for i, c in enumerate(table.classes)},
            "task": {"name": cfg.task.name, "classes": list(table.classes), "mapping": dict(cfg.task.mapping)},
            "features": list(table.X.columns),
            "best_configuration": spec_params(spec),
            "ensemble": None
            if len(members) == 1
            else [{"trial": n, "weight": w, "configuration": spec_params(specs[n])} for n, w in members.items()],
            "threshold": None if threshold is None else asdict(threshold),
            "cv": {"scoring": cfg.cv.scoring, "best_score": best.value, "n_folds": len(plan.folds), "grouped_by": plan.grouped_by},
            "holdout": holdout,
            "trained_on": {
                "recordings": sorted(set(fit_table.units["recording"])),
                "class_counts": fit_table.class_counts(),
                "dataset_fingerprint": fit_table.fingerprint(),
            },
            "seed": cfg.seed,
            "mlflow": {"tracking_uri": getattr(tracker, "uri", None), "run_id": run_id or None},
            "trusted_types": list(TRUSTED_TYPES),
        }

        def fill(folder: Path) -> None:
            dump_model(exported, folder)
            write_json(folder / INFO_FILE, model_info)
            (folder / "config.yaml").write_text(OmegaConf.to_yaml(config_dict), encoding="utf-8")
            training_data = fit_table.X.copy()
            training_data.insert(0, "unit_id", fit_table.units["unit_id"].to_numpy())
            training_data.insert(0, "recording", fit_table.units["recording"].to_numpy())
            labels = fit_table.units[["recording", "unit_id", "label"]].assign(
                **{"class": [table.classes[i] for i in fit_table.y], "class_code": fit_table.y}
            )
            tables = {
                "model_accuracies.csv": board,
                "training_data.csv": training_data,
                "labels.csv": labels,
                "splits.csv": plan.assignment(table),
            }
            if held_predictions is not None and importances is not None and holdout is not None:
                tables["holdout_predictions.csv"] = held_predictions
                tables["feature_importance.csv"] = importances
                tables["holdout_per_recording.csv"] = pd.DataFrame(
                    [{"recording": r, **m} for r, m in holdout["per_recording"].items()]
                )
                plots.feature_importances(importances, folder / "feature_importance.png")
                plots.confusion(holdout["confusion_matrix"], table.classes, folder / "confusion_matrix.png", "Held-out recordings")
                plots.per_recording(holdout["per_recording"], folder / "per_recording.png")
                if len(table.classes) == 2:
                    positive = table.classes[1]
                    plots.roc_pr(
                        held_part.y, held_predictions[f"probability_{positive}"].to_numpy(), positive,
                        folder / "roc_curve.png", folder / "pr_curve.png",
                    )
            write_tables(folder, tables)
            plots.optimization_history(study, folder / "optimization_history.png")
            plots.param_importances(study, folder / "param_importance.png")
            write_model_card(folder, exported, model_info, dict(cfg.dataset.metadata))

        folder = write_model_folder(_model_folder(cfg, run_id), fill, cfg.output.overwrite)
        metrics = {"wall_time_s": time.perf_counter() - started}
        if selection is not None:
            metrics.update(best_single_oof_score=selection.single_score, ensemble_oof_score=selection.score)
        if threshold is not None:
            metrics.update(threshold=threshold.value, oof_balanced_accuracy_at_threshold=threshold.oof_balanced_accuracy,
                           oof_balanced_accuracy_at_half=threshold.oof_balanced_accuracy_at_half)
        metrics.update({f"n_trials_{k}": v for k, v in counts.items()})
        if holdout is not None:
            metrics["holdout_balanced_accuracy"] = holdout["balanced_accuracy"]
            if "best_single_trial_balanced_accuracy" in holdout:
                metrics["holdout_best_single_balanced_accuracy"] = holdout["best_single_trial_balanced_accuracy"]
            for c, m in holdout["per_class"].items():
                metrics.update({f"holdout_{c}_{k}": v for k, v in m.items() if k != "support"})
        # The same names as the trial runs, so that MLflow's compare view lines studies up with trials.
        tracker.log_params(spec_params(spec))
        metrics.update(cv_score=float(best.value), cv_score_std=float(best.user_attrs.get("cv_std", 0.0)))
        tracker.log_metrics(metrics)
        tracker.log_artifacts(folder, "model_folder")
        version = None
        if cfg.tracking.register:
            version = tracker.log_model(
                exported,
                table.X.head(5),
                list(TRUSTED_TYPES),
                [f"{k}=={v}" for k, v in versions.items() if k != "unitrefine"],
                cfg.tracking.model_name or cfg.experiment_name,
            )
            if version is not None:
                gate_metric = "holdout_balanced_accuracy" if holdout is not None else f"cv_{cfg.cv.scoring}"
                gate_score = holdout["balanced_accuracy"] if holdout is not None else float(best.value)
                tracker.gate(
                    cfg.tracking.model_name or cfg.experiment_name, version, gate_score,
                    cfg.registry.gate_min_score, gate_metric,
                )
        tracker.set_tags({"unitrefine.model_folder": str(folder), "unitrefine.model_version": version or "none"})
        finalizer.exported(folder, version)
    result = TrainResult(
        model_folder=folder,
        run_id=run_id or None,
        tracking_uri=getattr(tracker, "uri", None),
        model_version=version,
        best_trial=best.number,
        best_cv_score=float(best.value),
        best_spec=spec,
        ensemble=dict(members) if len(members) > 1 else None,
        holdout=holdout,
        trial_counts=counts,
        wall_time_s=time.perf_counter() - started,
        study=study,
    )
    log_summary(result, board, cfg)
    return result


def log_summary(result: TrainResult, board: pd.DataFrame, cfg: TrainConfig) -> None:
    """The end-of-run summary: top trials, held-out scores, the model folder and how to look at the run."""
    top = board[board["state"] == "complete"].head(5)
    cols = ["trial", "cv_score", "cv_score_std", "imputer", "scaler", "resampler", "classifier"]
    lines = [
        "",
        f"Study '{cfg.experiment_name}': {result.trial_counts} trials in {result.wall_time_s:.0f} s",
        "Top trials (CV " + cfg.cv.scoring + "):",
        top[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"),
    ]
    if result.ensemble:
        lines.append(f"Exported model: soft-voting ensemble of trials {result.ensemble} (trial: weight)")
    else:
        lines.append(f"Exported model: trial {result.best_trial}")
    if result.holdout:
        per_rec = ", ".join(f"{r} {m['balanced_accuracy']:.3f}" for r, m in result.holdout["per_recording"].items())
        lines.append(
            f"Held-out recordings: balanced accuracy {result.holdout['balanced_accuracy']:.4f} ({per_rec})"
        )
    else:
        lines.append("No held-out recordings (cv.n_holdout_recordings=0): the CV score is the only estimate.")
    lines.append(f"Model folder: {result.model_folder}")
    if result.run_id:
        lines.append(f"MLflow run: {result.run_id} (model version {result.model_version})")
        lines.append(f"Open the UI: mlflow ui --backend-store-uri {result.tracking_uri} --host 127.0.0.1 --port 5000")
    log.info("\n".join(lines))
