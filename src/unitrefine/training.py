"""One training run: load, split, search, evaluate on held-out recordings, refit, export, track, register."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf

from unitrefine.config import TrainConfig
from unitrefine.data import UnitTable, load_dataset
from unitrefine.errors import UnitRefineError
from unitrefine.estimators import TRUSTED_TYPES
from unitrefine.estimate import leave_group_out, new_recording_estimate
from unitrefine.evaluation import make_plan, scorer
from unitrefine.export import check_output_folder, metric_params_for, package_versions, write_model_folder
from unitrefine.final_model import FinalModel, choose_final_model, fit_spec, prepare_candidates
from unitrefine.objective import Objective
from unitrefine.report import HeldOut, Progress, evaluate_holdout, leaderboard, spec_params, summary, write_folder
from unitrefine.search_space import PipelineSpec, SearchSpace, parse_search_space
from unitrefine.session import Session, join_study
from unitrefine.study import budget, study_identity, trial_counts
from unitrefine.tracking import NullTracker, Tracker, default_tracking_uri
from unitrefine.warm_start import queued_trials
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


def space_components(space: SearchSpace) -> list[str]:
    """Every component a search space may choose."""
    return [name for choices in space.slots.values() for name in choices]


def binding_limits(limits: Mapping[str, int | None], components: Iterable[str], n_units: int) -> dict[str, int]:
    """The ``search.unit_limits`` of ``components`` below ``n_units``: those that subsample a fit on that many units."""
    names = set(components)
    return {k: v for k, v in sorted(limits.items()) if k in names and v is not None and v < n_units}


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
        prepare_candidates(cfg, session.study, objective)
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
        keep_oof=cfg.ensemble.rounds > 0 or cfg.threshold.tune, unit_limits=cfg.search.unit_limits,
    )
    # Unit limits change trial scores only where they bind: a study of smaller data keeps its identity.
    binding = binding_limits(cfg.search.unit_limits, space_components(space), len(train_part))
    identity = study_identity(cfg.search_space, train_part.fingerprint(), plan.folds,
                              {"scoring": cfg.cv.scoring, **({"unit_limits": binding} if binding else {})}, cfg.seed)
    session = join_study(cfg, identity, queued_trials(cfg, space), lambda: _make_tracker(cfg), run_name, tags, config_dict)
    tracker, study = session.tracker, session.study
    finalizer = _search(cfg, session, objective, space)
    if finalizer is None:
        return None
    with finalizer, tracker.parent_run(run_name, tags, run_id=session.run_id or None) as run_id:
        counts = trial_counts(study.trials, cfg.search.max_retries)
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            errors = sorted({str(t.user_attrs.get("error", "?")) for t in study.trials})
            raise UnitRefineError(f"No trial completed ({counts}); errors: {errors[:3]}. Check the search space and the data.")
        best = study.best_trial
        spec = space.spec_from_params(best.params)
        log.info("Best trial %d: CV %s %.4f with %s", best.number, cfg.cv.scoring, best.value, spec_params(spec))
        final = choose_final_model(cfg, study, space, objective, train_part)
        model_on_train = final.fit(train_part)
        held = None
        if len(held_part):
            single = fit_spec(spec, train_part, cfg.seed, cfg.search.unit_limits) if final.is_ensemble else None
            held = evaluate_holdout(model_on_train, held_part, cfg.cv.scoring, cfg.seed, cfg.search.n_jobs, single,
                                    thresholded=final.threshold is not None)
        groups = (leave_group_out(final.fit, table, cfg.search.n_jobs, cfg.cv.estimate_max_refits, cfg.seed)
                  if cfg.cv.estimate_new_recordings else None)
        estimate = new_recording_estimate(groups, None if held is None else held.report, float(best.value),
                                          counts.get("complete", 0))
        fitted_on = table if cfg.cv.refit_on_all and len(held_part) else train_part
        exported = final.fit(table) if fitted_on is table else model_on_train
        board = leaderboard(study, space)
        info = {
            "metric_params": table.metric_params if table.metric_params is not None else metric_params_for(table.X.columns),
            "requirements": versions,
            "label_conversion": {str(i): c for i, c in enumerate(table.classes)},
            "task": {"name": cfg.task.name, "classes": list(table.classes), "mapping": dict(cfg.task.mapping)},
            "features": list(table.X.columns),
            "best_configuration": spec_params(spec),
            **final.describe(spec_params),
            "cv": {"scoring": cfg.cv.scoring, "best_score": best.value, "n_folds": len(plan.folds), "grouped_by": plan.grouped_by},
            "holdout": None if held is None else held.report,
            "estimate_new_recordings": estimate,
            "trained_on": {
                "recordings": sorted(set(fitted_on.units["recording"])),
                "class_counts": fitted_on.class_counts(),
                "dataset_fingerprint": fitted_on.fingerprint(),
            },
            "unit_limits": binding_limits(cfg.search.unit_limits, [c.name for s in final.specs.values() for c in s.values()],
                                          len(fitted_on)),
            "seed": cfg.seed,
            "mlflow": {"tracking_uri": getattr(tracker, "uri", None), "run_id": run_id or None},
            "trusted_types": list(TRUSTED_TYPES),
        }
        folder = write_model_folder(
            _model_folder(cfg, run_id),
            lambda f: write_folder(f, model=exported, info=info, config=config_dict, fitted_on=fitted_on, table=table,
                                   plan=plan, board=board, study=study, held=held, metadata=dict(cfg.dataset.metadata)),
            cfg.output.overwrite,
        )
        version = _track_result(cfg, tracker, final, spec, best, held, estimate, counts, exported, table, versions, folder,
                                started)
        finalizer.exported(folder, version)
    result = TrainResult(
        model_folder=folder,
        run_id=run_id or None,
        tracking_uri=getattr(tracker, "uri", None),
        model_version=version,
        best_trial=best.number,
        best_cv_score=float(best.value),
        best_spec=spec,
        ensemble=dict(final.weights) if final.is_ensemble else None,
        holdout=None if held is None else held.report,
        trial_counts=counts,
        wall_time_s=time.perf_counter() - started,
        study=study,
    )
    exported_as = f"soft-voting ensemble of trials {result.ensemble} (trial: weight)" if result.ensemble else f"trial {best.number}"
    log.info("%s", summary(cfg.experiment_name, cfg.cv.scoring, counts, result.wall_time_s, board, exported_as,
                           result.holdout, estimate, folder, result.run_id, version, result.tracking_uri))
    return result


def _track_result(
    cfg: TrainConfig, tracker: Tracker | NullTracker, final: FinalModel, spec: PipelineSpec,
    best: optuna.trial.FrozenTrial, held: HeldOut | None, estimate: dict[str, Any], counts: dict[str, int],
    exported: Any, table: UnitTable,
    versions: dict[str, str], folder: Path, started: float,
) -> str | None:
    """Log the study's results to its parent run, register the model and apply the gate; the version or None."""
    metrics = {"wall_time_s": time.perf_counter() - started, **{f"n_trials_{k}": v for k, v in counts.items()},
               "expected_balanced_accuracy_new_recordings": estimate["balanced_accuracy"]}
    if "interval" in estimate:
        low, high = estimate["interval"]
        metrics.update(expected_balanced_accuracy_new_recordings_low=low,
                       expected_balanced_accuracy_new_recordings_high=high)
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
    tracker.log_params(spec_params(spec))
    metrics.update(cv_score=float(best.value), cv_score_std=float(best.user_attrs.get("cv_std", 0.0)))
    tracker.log_metrics(metrics)
    tracker.log_artifacts(folder, "model_folder")
    version = None
    name = cfg.tracking.model_name or cfg.experiment_name
    if cfg.tracking.register:
        version = tracker.log_model(
            exported, table.X.head(5), list(TRUSTED_TYPES),
            [f"{k}=={v}" for k, v in versions.items() if k != "unitrefine"], name,
        )
        if version is not None:
            metric = "holdout_balanced_accuracy" if held is not None else f"cv_{cfg.cv.scoring}"
            score = held.report["balanced_accuracy"] if held is not None else float(best.value)
            tracker.gate(name, version, score, cfg.registry.gate_min_score, metric)
    tracker.set_tags({"unitrefine.model_folder": str(folder), "unitrefine.model_version": version or "none"})
    return version
