"""The stages that put a trained model out: its ``model_info.json`` record, its folder and its MLflow run.

:func:`unitrefine.run.training.train` calls them after the stages of :mod:`unitrefine.run.stages`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from unitrefine.config import TrainConfig
from unitrefine.export.folder import metric_params_for
from unitrefine.export.model_info import ModelInfo, TrainedOn
from unitrefine.export.report import Export, HeldOut, spec_params, write_folder
from unitrefine.model.final_model import FinalModel
from unitrefine.run.records import Data, Refits, RunRecord, Searched
from unitrefine.run.stages import binding_limits
from unitrefine.search.estimators import TRUSTED_TYPES
from unitrefine.search.trial_attrs import CV_STD_ATTR
from unitrefine.tracking.tracker import NullTracker, Tracker


def model_info(
    cfg: TrainConfig, data: Data, searched: Searched, final: FinalModel, refits: Refits, held: HeldOut | None,
    expected: dict[str, Any], run: RunRecord, tracking: dict[str, str | None], stage_seconds: dict[str, float],
) -> ModelInfo:
    """The exported model's ``model_info.json`` record (``tracking``: the MLflow ``tracking_uri`` and ``run_id``)."""
    table, fitted_on, best = data.table, refits.fitted_on, searched.best
    components = [c.name for s in final.specs.values() for c in s.values()]
    return ModelInfo(
        metric_params=table.metric_params if table.metric_params is not None else metric_params_for(table.X.columns),
        requirements=run.versions,
        label_conversion={str(i): c for i, c in enumerate(table.classes)},
        task={"name": cfg.task.name, "classes": list(table.classes), "mapping": dict(cfg.task.mapping)},
        features=list(table.X.columns),
        best_configuration=spec_params(searched.space.spec_from_params(best.params)),
        **final.describe(spec_params),
        cv={"scoring": cfg.cv.scoring, "best_score": best.value, "n_folds": len(data.plan.folds),
            "grouped_by": data.plan.grouped_by},
        holdout=None if held is None else held.report,
        estimate_new_recordings=expected,
        trained_on=TrainedOn(sorted(set(fitted_on.units["recording"])), fitted_on.class_counts(),
                             fitted_on.fingerprint()),
        unit_limits=binding_limits(cfg.search.unit_limits, components, len(fitted_on)),
        seed=cfg.seed,
        search={"n_trials": cfg.search.n_trials, "n_jobs": cfg.search.n_jobs, "timeout_s": cfg.search.timeout_s,
                "stopped_by_timeout": searched.stopped_by_timeout, "trial_counts": searched.counts},
        mlflow=dict(tracking),
        trusted_types=list(TRUSTED_TYPES),
        stage_seconds=dict(stage_seconds),
    )


def model_folder_path(cfg: TrainConfig, run_id: str | None) -> Path:
    """``output.folder``, or ``experiments/<experiment>/models/<date>-<run id>`` under the project (``-2``, ``-3``...
    added when a run of the same second has that folder)."""
    if cfg.output.folder:
        return cfg.resolve_path(cfg.output.folder)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = f"-{run_id[:8]}" if run_id else ""
    base = cfg.root_dir / "experiments" / cfg.experiment_name / "models" / f"{stamp}{suffix}"
    folder, k = base, 1
    while folder.exists():  # another run's folder of the same second (without tracking there is no run id)
        k += 1
        folder = base.with_name(f"{base.name}-{k}")
    return folder


def write(export: Export, staging: Path, folder: Path) -> None:
    """Write the files of the model folder ``folder`` into ``staging``.

    ``staging`` is the folder :func:`unitrefine.export.folder.staged_folder` moves to ``folder`` once tracked.
    """
    write_folder(staging, export, folder.name)


def _estimate_metrics(expected: dict[str, Any]) -> dict[str, float]:
    """The estimate for new recordings as MLflow metrics: its value, interval and review-budget curve."""
    metrics = {"expected_balanced_accuracy_new_recordings": expected["balanced_accuracy"]}
    if "interval" in expected:
        low, high = expected["interval"]
        metrics.update(expected_balanced_accuracy_new_recordings_low=low,
                       expected_balanced_accuracy_new_recordings_high=high)
    for point in expected.get("review_budget") or []:
        name = f"expected_curated_balanced_accuracy_review_{round(100 * point['review_fraction'])}pct"
        metrics.update({name: point["balanced_accuracy"], f"{name}_low": point["interval"][0],
                        f"{name}_high": point["interval"][1]})
    return metrics


def _run_metrics(searched: Searched, final: FinalModel, export: Export,
                 stage_seconds: dict[str, float]) -> dict[str, float]:
    """The parent run's metrics: trial counts, stage times, the estimate, the ensemble, threshold and held-out."""
    held, best = export.held, searched.best
    metrics = {**{f"n_trials_{k}": v for k, v in searched.counts.items()},
               **{f"stage_seconds_{k}": v for k, v in stage_seconds.items()},
               **_estimate_metrics(export.info.estimate_new_recordings)}
    if final.selection is not None:
        metrics.update(best_single_oof_score=final.selection.single_score, ensemble_oof_score=final.selection.score)
    if final.threshold is not None:
        t = final.threshold
        metrics.update(threshold=t.value, oof_balanced_accuracy_at_threshold=t.oof_balanced_accuracy,
                       oof_balanced_accuracy_at_half=t.oof_balanced_accuracy_at_half)
    if held is not None:
        metrics["holdout_balanced_accuracy"] = held.report["balanced_accuracy"]
        if "best_single_trial_balanced_accuracy" in held.report:
            metrics["holdout_best_single_balanced_accuracy"] = held.report["best_single_trial_balanced_accuracy"]
        for c, m in held.report["per_class"].items():
            metrics.update({f"holdout_{c}_{k}": v for k, v in m.items() if k != "support"})
    # The same names as the trial runs, so that MLflow's compare view lines studies up with trials.
    metrics.update(cv_score=float(best.value), cv_score_std=float(best.user_attrs.get(CV_STD_ATTR, 0.0)))
    return metrics


def track(
    cfg: TrainConfig, tracker: Tracker | NullTracker, searched: Searched, final: FinalModel, export: Export,
    staging: Path, folder: Path, stage_seconds: dict[str, float],
) -> str | None:
    """Log the run's results to its MLflow parent run, register the model and apply the gate; the version or None.

    The model folder is uploaded from ``staging`` before it is moved to ``folder``, so that a run stopped here
    leaves no model folder that the study has not recorded as its export.
    """
    info, held = export.info, export.held
    best = searched.best
    tracker.log_params(info.best_configuration)
    tracker.log_metrics(_run_metrics(searched, final, export, stage_seconds))
    tracker.log_artifacts(staging, "model_folder")
    version = None
    name = cfg.tracking.model_name or cfg.experiment_name
    if cfg.tracking.register:
        version = tracker.log_model(
            staging, export.table.X.head(5), list(TRUSTED_TYPES),
            [f"{k}=={v}" for k, v in info.requirements.items() if k != "unitrefine"], name,
        )
        if version is not None:
            metric = "holdout_balanced_accuracy" if held is not None else f"cv_{cfg.cv.scoring}"
            score = held.report["balanced_accuracy"] if held is not None else float(best.value)
            tracker.gate(name, version, score, cfg.registry.gate_min_score, metric)
    tracker.set_tags({"unitrefine.model_folder": str(folder), "unitrefine.model_version": version or "none",
                      "unitrefine.stopped_by_timeout": str(searched.stopped_by_timeout).lower()})
    return version
