"""The stages of one training run, each a plain function with typed inputs and outputs.

``load -> split -> search -> choose -> refit -> evaluate -> estimate -> write -> track``;
:func:`unitrefine.run.training.train` runs them in that order (``write`` and ``track``, with the ``model_info.json``
record, are in :mod:`unitrefine.run.outputs`; what the stages hand each other is in :mod:`unitrefine.run.records`).
``refit`` makes every fit the later stages need (the model on the search's recordings for the held-out
evaluation, one per left-out animal for the estimate, the model to export), each training set once and side by
side on ``search.n_jobs`` threads; ``evaluate`` and ``estimate`` only score them.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from sklearn.pipeline import Pipeline

from unitrefine.config import TrainConfig
from unitrefine.data.dataset import UnitTable
from unitrefine.data.loading import load_dataset
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import package_versions
from unitrefine.export.report import HeldOut, evaluate_holdout, spec_params
from unitrefine.model.estimate import GroupScore, group_estimate, new_recording_estimate, plan_estimate, score_fold
from unitrefine.model.final_model import FinalModel, Fitting, choose_final_model, fit_spec, member, prepare_candidates
from unitrefine.progress import TrialProgress, parallel_map
from unitrefine.run.records import Data, Exporter, Refits, RunRecord, Searched
from unitrefine.run.warm_start import queued_trials
from unitrefine.search.budget import study_budget, study_counts
from unitrefine.search.evaluation import make_plan, scorer
from unitrefine.search.objective import Objective
from unitrefine.search.outcomes import Study, outcomes
from unitrefine.search.search_space import SearchSpace, parse_search_space
from unitrefine.search.session import StudyPlace, join_study
from unitrefine.search.storage import default_storage
from unitrefine.search.study import study_identity
from unitrefine.search.trial_attrs import ERROR_ATTR
from unitrefine.search.workers import Worker
from unitrefine.tracking.tracker import NullTracker, Tracker, default_artifact_location, default_tracking_uri

log = logging.getLogger(__name__)


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
        has its trials and its export (see :mod:`unitrefine.search.workers`).
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

    def params_of(params: Mapping[str, Any]) -> dict[str, Any]:
        return spec_params(space.partial_spec(params))

    done = study_budget(session.study, cfg.search.max_retries).counted
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
    return Exporter(session, finalizer, _searched(cfg, session.study, space, objective))


def searched_study(cfg: TrainConfig, data: Data, study: Study) -> Searched:
    """A study searched earlier (e.g. loaded from its storage), ready for :func:`choose` and the stages after it."""
    space = parse_search_space(cfg.search_space)
    return _searched(cfg, study, space, _objective(cfg, data, space))


def _searched(cfg: TrainConfig, study: Study, space: SearchSpace, objective: Objective) -> Searched:
    return Searched(study, outcomes(study), space, objective, study_counts(study, cfg.search.max_retries))


def choose(cfg: TrainConfig, searched: Searched, data: Data) -> FinalModel:
    """The model to export: the best trial or an ensemble chosen out of fold, with its threshold."""
    if not searched.ranked:
        errors = sorted({str(t.user_attrs.get(ERROR_ATTR, "?")) for t in searched.trials})
        raise UnitRefineError(f"No trial completed ({searched.counts}); errors: {errors[:3]}. "
                              "Check the search space and the data.")
    best = searched.best
    log.info("Best trial %d: CV %s %.4f with %s", best.number, cfg.cv.scoring, best.value,
             spec_params(searched.space.spec_from_params(best.params)))
    if searched.objective.keep_oof:
        prepare_candidates(cfg.ensemble.candidates, searched.ranked, searched.objective)
    fitting = Fitting(cfg.seed, cfg.search.unit_limits, cfg.calibration.method, cfg.cv)
    return choose_final_model(searched.ranked, searched.space, searched.objective, data.train, cfg.ensemble,
                              cfg.threshold, fitting)


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
    best = searched.best
    single = None
    if final.is_ensemble:  # for the record: the ensemble was chosen out of fold, before this
        single = member(refits.on_train, best.number)
        if single is None:  # the best trial is not among the members
            spec = searched.space.spec_from_params(best.params)
            single = fit_spec(spec, data.train, cfg.seed, cfg.search.unit_limits)
    return evaluate_holdout(refits.on_train, data.held, cfg.cv.scoring, cfg.seed, cfg.search.n_jobs, single,
                            thresholded=final.threshold is not None)


def estimate(searched: Searched, refits: Refits, held: HeldOut | None) -> dict[str, Any]:
    """The expectation for new recordings: leave-one-animal-out scores, else held-out, else the CV score."""
    groups = group_estimate(refits.estimate_plan, refits.estimate_scores) if refits.estimate_plan else None
    best = searched.best
    return new_recording_estimate(groups, None if held is None else held.report, float(best.value),
                                  searched.counts.get("complete", 0))
