"""One training run: its stages (:mod:`unitrefine.run.stages`, :mod:`unitrefine.run.outputs`) in order, each timed
and announced."""

from __future__ import annotations

import logging
import time

from unitrefine.config import TrainConfig
from unitrefine.export.folder import staged_folder
from unitrefine.export.report import UI_HOST, UI_PORT, Export, TrainResult, leaderboard, summary
from unitrefine.progress import Stages, shown
from unitrefine.run import outputs as o
from unitrefine.run import stages as s
from unitrefine.run.preflight import preflight
from unitrefine.tracking.runs_view import runs_page

__all__ = ["TrainResult", "train"]

log = logging.getLogger(__name__)


# Over 60 lines: the stages of a run in order, each announced and timed; the code is 48 lines.
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
        already has its trials and its export (see :mod:`unitrefine.search.workers`).

    Raises
    ------
    UnitRefineError
        For bad input or configuration; nothing is written in that case.
    """
    started, stage = time.perf_counter(), Stages()
    with shown():
        preflight(cfg)  # everything knowable before the search: names, output folder, stores writable
        with stage("load", "reading the recordings' metrics and labels"):
            table = s.load(cfg)
        with stage("split", "holding recordings out and folding the rest"):
            data = s.split(cfg, table)
            run = s.describe_run(cfg, data)
        with stage("search", f"{cfg.search.n_trials} trials, {cfg.search.n_jobs} side by side"):
            exporter = s.search(cfg, data, run)
        if exporter is None:
            return None
        searched, tracker = exporter.searched, exporter.tracker
        with exporter.finalizer, tracker.parent_run(run.name, run.tags, exporter.session.run_id or None) as run_id:
            with stage("choose", "the model to export: best trial or ensemble, threshold"):
                final = s.choose(cfg, searched, data)
            with stage("refit", "fitting it for the held-out recordings, the estimate and the export"):
                refits = s.refit(cfg, final, data)
            with stage("evaluate", "scoring the held-out recordings"):
                held = s.evaluate(cfg, final, searched, data, refits)
            with stage("estimate", "expected accuracy on new recordings"):
                expected = s.estimate(searched, refits, held)
            info = o.model_info(cfg, data, searched, final, refits, held, expected, run,
                                {"tracking_uri": tracker.uri, "run_id": run_id or None}, stage.seconds)
            board = leaderboard(searched.trials, searched.space)
            export = Export(refits.exported, info, run.config, refits.fitted_on, table, data.plan, board,
                            searched.study, held, dict(cfg.dataset.metadata))
            folder = o.model_folder_path(cfg, run_id)
            with staged_folder(folder, cfg.output.overwrite) as staging:  # in place once tracked
                with stage("write", "the model folder"):
                    o.write(export, staging, folder)
                with stage("track", "logging to MLflow and registering the model"):
                    version = o.track(cfg, tracker, searched, final, export, staging, folder, stage.seconds)
            tracker.log_metrics({"stage_seconds_track": stage.seconds["track"],
                                 "wall_time_s": time.perf_counter() - started})
            exporter.finalizer.exported(folder, version)
    best = searched.best
    result = TrainResult(
        experiment=cfg.experiment_name, model_folder=folder, run_id=run_id or None, tracking_uri=tracker.uri,
        model_version=version, best_trial=best.number, best_cv_score=float(best.value),
        best_spec=searched.space.spec_from_params(best.params),
        ensemble=dict(final.weights) if final.is_ensemble else None, holdout=info.holdout, estimate=expected,
        trial_counts=searched.counts, wall_time_s=time.perf_counter() - started, stage_seconds=dict(stage.seconds),
        study=searched.study, leaderboard=board,
        runs_page=runs_page(f"http://{UI_HOST}:{UI_PORT}", tracker.experiment_id) if run_id else None,
    )
    log.info("%s", summary(result, cfg.cv.scoring))
    return result
