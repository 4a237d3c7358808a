"""The stages of one training run, each a plain function with typed inputs and outputs.

``load -> split -> search -> choose -> refit -> evaluate -> estimate -> write -> track``; :func:`unitrefine.run.training.train`
runs them in that order. ``refit`` makes every fit the later stages need (the model on the search's recordings
for the held-out evaluation, one per left-out animal for the estimate, the model to export), each training set
once and side by side on ``search.n_jobs`` threads; ``evaluate`` and ``estimate`` only score them.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from omegaconf import OmegaConf
from sklearn.pipeline import Pipeline

from unitrefine.config import TrainConfig
from unitrefine.data.dataset import UnitTable, load_dataset
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import metric_params_for, package_versions
from unitrefine.export.model_info import ModelInfo, TrainedOn
from unitrefine.export.report import Export, HeldOut, evaluate_holdout, spec_params, write_folder
from unitrefine.model.estimate import (
    EstimatePlan,
    GroupScore,
    group_estimate,
    new_recording_estimate,
    plan_estimate,
    score_fold,
)
from unitrefine.model.final_model import FinalModel, Fitting, choose_final_model, fit_spec, member, prepare_candidates
from unitrefine.progress import TrialProgress, parallel_map
from unitrefine.run.election import Finalizer
from unitrefine.run.session import Session, StudyPlace, join_study
from unitrefine.run.warm_start import queued_trials
from unitrefine.run.workers import Worker
from unitrefine.search.budget import budget, trial_counts
from unitrefine.search.estimators import TRUSTED_TYPES
from unitrefine.search.evaluation import Plan, make_plan, scorer
from unitrefine.search.objective import Objective
from unitrefine.search.search_space import SearchSpace, parse_search_space
from unitrefine.search.storage import default_storage
from unitrefine.search.study import stopped_by_timeout, study_identity
from unitrefine.tracking.tracker import NullTracker, Tracker, default_artifact_location, default_tracking_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Data:
    """The labelled units and where each goes: searched (``train``) or held out (``held``)."""

    table: UnitTable
    plan: Plan
    train: UnitTable
    held: UnitTable


@dataclass(frozen=True)
class RunRecord:
    """How the run describes itself to MLflow and in the model folder."""

    name: str
    tags: dict[str, str]
    config: dict[str, Any]
    versions: dict[str, str]


@dataclass(frozen=True)
class Searched:
    """A finished study and what its trials were scored with."""

    study: optuna.Study
    space: SearchSpace
    objective: Objective
    counts: dict[str, int]

    @property
    def stopped_by_timeout(self) -> bool:
        """Whether the time cap ended the search: then the model depends on the machine's speed and load."""
        return stopped_by_timeout(self.study)


@dataclass(frozen=True)
class Exporter:
    """The worker that exports, after the search: its session (study, MLflow tracker) and the export lock."""

    session: Session
    finalizer: Finalizer
    searched: Searched

    @property
    def tracker(self) -> Tracker | NullTracker:
        """The study's MLflow tracker."""
        return self.session.tracker


@dataclass(frozen=True)
class Refits:
    """The final model fitted on every training set the run needs.

    Attributes
    ----------
    on_train : Pipeline or None
        Fitted on the search's recordings (None when no recording is held out).
    exported : Pipeline
        The model to export, fitted on ``fitted_on``.
    fitted_on : UnitTable
    estimate_plan : EstimatePlan or None
        The estimate's refits (None: no estimate).
    estimate_scores : list of list of GroupScore
        Per refit of ``estimate_plan``, its scores on each group it left out (alone, and after reviews).
    """

    on_train: Pipeline | None
    exported: Pipeline
    fitted_on: UnitTable
    estimate_plan: EstimatePlan | None
    estimate_scores: list[list[GroupScore]]


def load(cfg: TrainConfig) -> UnitTable:
    """Read and check every recording's metrics and labels."""
    return load_dataset(cfg.dataset, cfg.task, cfg.root_dir)


def split(cfg: TrainConfig, table: UnitTable) -> Data:
    """Hold recordings out of the search and fold the rest for cross-validation."""
    plan = make_plan(table, cfg.cv, cfg.seed)
    return Data(table, plan, table.subset(plan.train_index), table.subset(plan.holdout_index))


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def describe_run(cfg: TrainConfig, data: Data) -> RunRecord:
    """The run's name, MLflow tags (data, seed, versions, commit) and resolved configuration."""
    config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(config, dict)
    versions = package_versions()
    tags = {
        "unitrefine.experiment": cfg.experiment_name,
        "unitrefine.task": cfg.task.name,
        "unitrefine.dataset": cfg.dataset.name,
        "unitrefine.dataset_fingerprint": data.table.fingerprint(),
        "unitrefine.recordings": ",".join(dict.fromkeys(data.table.units["recording"])),
        "unitrefine.holdout_recordings": ",".join(dict.fromkeys(data.held.units["recording"])) or "none",
        "unitrefine.seed": str(cfg.seed),
        "mlflow.source.git.commit": _git_commit(cfg.root_dir),
        **{f"version.{k}": v for k, v in versions.items()},
    }
    return RunRecord(f"{cfg.experiment_name}-{dt.datetime.now():%Y%m%d-%H%M%S}", tags, config, versions)


def _make_tracker(cfg: TrainConfig) -> Tracker | NullTracker:
    if not cfg.tracking.enabled:
        return NullTracker()
    root = cfg.root_dir
    uri = cfg.tracking.uri or default_tracking_uri(root)
    artifacts = cfg.tracking.artifact_location or default_artifact_location(root, cfg.experiment_name)
    return Tracker(uri, cfg.experiment_name, artifacts)


def binding_limits(limits: dict[str, int | None], components: list[str], n_units: int) -> dict[str, int]:
    """The ``search.unit_limits`` of ``components`` below ``n_units``: those that subsample a fit on that many units."""
    names = set(components)
    return {k: v for k, v in sorted(limits.items()) if k in names and v is not None and v < n_units}


def _objective(cfg: TrainConfig, data: Data, space: SearchSpace) -> Objective:
    return Objective(
        space, data.train.X, data.train.y, data.plan.folds, scorer(cfg.cv.scoring), cfg.seed,
        keep_oof=cfg.ensemble.rounds > 0 or cfg.threshold.tune, unit_limits=cfg.search.unit_limits,
    )


def search(cfg: TrainConfig, data: Data, run: RunRecord) -> Exporter | None:
    """Join the experiment's study and run this worker's share of its trials.

    Returns
    -------
    Exporter or None
        None when this worker does not export: another worker of the study does, or did, or the study already
        has its trials and its export (see :mod:`unitrefine.run.workers`).
    """
    space = parse_search_space(cfg.search_space)
    objective = _objective(cfg, data, space)
    # Unit limits change trial scores only where they bind: a study of smaller data keeps its identity.
    components = [name for choices in space.slots.values() for name in choices]
    binding = binding_limits(cfg.search.unit_limits, components, len(data.train))
    identity = study_identity(cfg.search_space, data.train.fingerprint(), data.plan.folds,
                              {"scoring": cfg.cv.scoring, **({"unit_limits": binding} if binding else {})}, cfg.seed)
    uri = cfg.tracking.uri or default_tracking_uri(cfg.root_dir)
    storage = cfg.search.storage or default_storage(cfg.tracking.enabled, uri, cfg.root_dir, cfg.experiment_name)
    place = StudyPlace(cfg.search, cfg.experiment_name, cfg.seed, storage, cfg.resolve_path)
    queued = queued_trials(space, cfg.search, cfg.task.name, uri, cfg.resolve_path)
    session = join_study(place, identity, queued, lambda: _make_tracker(cfg), run.name, run.tags, run.config)

    def params_of(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return spec_params(space.partial_spec(t.params))

    done = budget(session.study.get_trials(deepcopy=False), cfg.search.max_retries).counted
    progress = TrialProgress(cfg.search.n_trials, done=min(done, cfg.search.n_trials))
    worker = Worker(
        session, objective, cfg.search.n_trials, cfg.search.n_jobs, cfg.search.max_retries, cfg.search.timeout_s,
        poll_s=1.0 if session.store.kind == "rdb" else 0.5, trial_params=params_of, callbacks=[progress],
    )
    try:
        finalizer = worker.run()
    finally:
        progress.close()
    if finalizer is None:
        return None
    counts = trial_counts(session.study.trials, cfg.search.max_retries)
    return Exporter(session, finalizer, Searched(session.study, space, objective, counts))


def searched_study(cfg: TrainConfig, data: Data, study: optuna.Study) -> Searched:
    """A study searched earlier (e.g. loaded from its storage), ready for :func:`choose` and the stages after it."""
    space = parse_search_space(cfg.search_space)
    return Searched(study, space, _objective(cfg, data, space), trial_counts(study.trials, cfg.search.max_retries))


def choose(cfg: TrainConfig, searched: Searched, data: Data) -> FinalModel:
    """The model to export: the best trial or an ensemble chosen out of fold, with its threshold."""
    study = searched.study
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        errors = sorted({str(t.user_attrs.get("error", "?")) for t in study.trials})
        raise UnitRefineError(f"No trial completed ({searched.counts}); errors: {errors[:3]}. "
                              "Check the search space and the data.")
    best = study.best_trial
    log.info("Best trial %d: CV %s %.4f with %s", best.number, cfg.cv.scoring, best.value,
             spec_params(searched.space.spec_from_params(best.params)))
    if searched.objective.keep_oof:
        prepare_candidates(cfg.ensemble.candidates, study, searched.objective)
    fitting = Fitting(cfg.seed, cfg.search.unit_limits, cfg.calibration.method, cfg.cv)
    return choose_final_model(study, searched.space, searched.objective, data.train, cfg.ensemble, cfg.threshold,
                              fitting)


def refit(cfg: TrainConfig, final: FinalModel, data: Data) -> Refits:
    """Fit ``final`` on every training set the run needs, each once, ``search.n_jobs`` side by side.

    The sets: the search's recordings (scored on the held-out ones), all but each left-out animal (scored on
    it, for the estimate) and the recordings the exported model is fitted on (all of them with
    ``cv.refit_on_all``). Sets that coincide (e.g. the held-out animal is one of the estimate's) are fitted
    once. Each estimate refit is scored as soon as it is fitted and then dropped, so memory holds at most
    ``search.n_jobs`` of them.
    """
    table, plan = data.table, data.plan
    has_held = len(data.held) > 0
    est = plan_estimate(table, cfg.cv.estimate_max_refits, cfg.seed) if cfg.cv.estimate_new_recordings else None
    fitted_on_positions = np.arange(len(table)) if cfg.cv.refit_on_all or not has_held else plan.train_index
    sets: dict[bytes, np.ndarray] = {}
    export_key = _add(sets, fitted_on_positions)
    train_key = _add(sets, plan.train_index) if has_held else None
    folds_of: dict[bytes, list[int]] = {}
    for k in range(len(est.folds) if est else 0):
        folds_of.setdefault(_add(sets, est.training_positions(k)), []).append(k)
    keys = list(sets)

    def fit_and_score(key: bytes) -> tuple[Pipeline | None, list[tuple[int, list[GroupScore]]]]:
        model = final.fit(table.subset(sets[key]))
        scores = [(k, score_fold(model, table, est.folds[k])) for k in folds_of.get(key, [])] if est else []
        return (model if key in (export_key, train_key) else None), scores

    log.info("%d fits of the exported model (%d estimate refits; training sets that coincide are fitted once), "
             "%d side by side.", len(keys), len(est.folds) if est else 0, min(cfg.search.n_jobs, len(keys)))
    results = dict(zip(keys, parallel_map(fit_and_score, keys, cfg.search.n_jobs, "refits")))
    scores = dict(pair for _, fold_scores in results.values() for pair in fold_scores)
    exported = results[export_key][0]
    assert exported is not None
    return Refits(
        on_train=results[train_key][0] if train_key is not None else None, exported=exported,
        fitted_on=table.subset(fitted_on_positions), estimate_plan=est,
        estimate_scores=[scores[k] for k in range(len(est.folds))] if est else [],
    )


def _add(sets: dict[bytes, np.ndarray], positions: np.ndarray) -> bytes:
    """Add a training set (unit positions) to ``sets`` once; return its key."""
    key = np.asarray(positions, dtype=np.int64).tobytes()
    sets.setdefault(key, positions)
    return key


def evaluate(cfg: TrainConfig, final: FinalModel, searched: Searched, data: Data, refits: Refits) -> HeldOut | None:
    """Score the model fitted on the search's recordings on the held-out ones (None when none is held out)."""
    if refits.on_train is None:
        return None
    best = searched.study.best_trial
    single = None
    if final.is_ensemble:  # for the record: the ensemble was chosen out of fold, before this
        single = member(refits.on_train, best.number)
        if single is None:  # the best trial is not among the members
            single = fit_spec(searched.space.spec_from_params(best.params), data.train, cfg.seed, cfg.search.unit_limits)
    return evaluate_holdout(refits.on_train, data.held, cfg.cv.scoring, cfg.seed, cfg.search.n_jobs, single,
                            thresholded=final.threshold is not None)


def estimate(searched: Searched, refits: Refits, held: HeldOut | None) -> dict[str, Any]:
    """The expectation for new recordings: leave-one-animal-out scores, else held-out, else the CV score."""
    groups = group_estimate(refits.estimate_plan, refits.estimate_scores) if refits.estimate_plan else None
    best = searched.study.best_trial
    return new_recording_estimate(groups, None if held is None else held.report, float(best.value),
                                  searched.counts.get("complete", 0))


def model_info(
    cfg: TrainConfig, data: Data, searched: Searched, final: FinalModel, refits: Refits, held: HeldOut | None,
    expected: dict[str, Any], run: RunRecord, tracking: dict[str, str | None], stage_seconds: dict[str, float],
) -> ModelInfo:
    """The exported model's ``model_info.json`` record (``tracking``: the MLflow ``tracking_uri`` and ``run_id``)."""
    table, fitted_on, best = data.table, refits.fitted_on, searched.study.best_trial
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
        unit_limits=binding_limits(cfg.search.unit_limits, [c.name for s in final.specs.values() for c in s.values()],
                                   len(fitted_on)),
        seed=cfg.seed,
        search={"n_trials": cfg.search.n_trials, "n_jobs": cfg.search.n_jobs, "timeout_s": cfg.search.timeout_s,
                "stopped_by_timeout": searched.stopped_by_timeout, "trial_counts": searched.counts},
        mlflow=dict(tracking),
        trusted_types=list(TRUSTED_TYPES),
        stage_seconds=dict(stage_seconds),
    )


def model_folder_path(cfg: TrainConfig, run_id: str | None) -> Path:
    """``output.folder``, or ``experiments/<experiment>/models/<date>-<run id>`` under the project."""
    if cfg.output.folder:
        return cfg.resolve_path(cfg.output.folder)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = f"-{run_id[:8]}" if run_id else ""
    return cfg.root_dir / "experiments" / cfg.experiment_name / "models" / f"{stamp}{suffix}"


def write(export: Export, staging: Path, folder: Path) -> None:
    """Write the files of the model folder ``folder`` into ``staging`` (:func:`unitrefine.export.folder.staged_folder`)."""
    write_folder(staging, export, folder.name)


def track(
    cfg: TrainConfig, tracker: Tracker | NullTracker, searched: Searched, final: FinalModel, export: Export,
    staging: Path, folder: Path, stage_seconds: dict[str, float],
) -> str | None:
    """Log the run's results to its MLflow parent run, register the model and apply the gate; the version or None.

    The model folder is uploaded from ``staging`` before it is moved to ``folder``, so that a run stopped here
    leaves no model folder that the study has not recorded as its export.
    """
    info, held = export.info, export.held
    best = searched.study.best_trial
    expected = info.estimate_new_recordings
    metrics = {**{f"n_trials_{k}": v for k, v in searched.counts.items()},
               **{f"stage_seconds_{k}": v for k, v in stage_seconds.items()},
               "expected_balanced_accuracy_new_recordings": expected["balanced_accuracy"]}
    if "interval" in expected:
        low, high = expected["interval"]
        metrics.update(expected_balanced_accuracy_new_recordings_low=low,
                       expected_balanced_accuracy_new_recordings_high=high)
    for point in expected.get("review_budget") or []:
        name = f"expected_curated_balanced_accuracy_review_{round(100 * point['review_fraction'])}pct"
        metrics.update({name: point["balanced_accuracy"], f"{name}_low": point["interval"][0],
                        f"{name}_high": point["interval"][1]})
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
    tracker.log_params(info.best_configuration)
    metrics.update(cv_score=float(best.value), cv_score_std=float(best.user_attrs.get("cv_std", 0.0)))
    tracker.log_metrics(metrics)
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
