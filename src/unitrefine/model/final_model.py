"""The model to export once the search is over: the best trial or an ensemble, with its threshold or calibration."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from unitrefine.config import CVConfig, EnsembleConfig, ThresholdConfig
from unitrefine.data.dataset import UnitTable
from unitrefine.model.ensemble import Selection, select_ensemble
from unitrefine.model.threshold import Threshold, tune_threshold, with_threshold
from unitrefine.search.evaluation import make_folds
from unitrefine.search.objective import Objective
from unitrefine.search.outcomes import TrialOutcome
from unitrefine.search.pipeline import build_pipeline, export_pipeline, fit_positions, soft_vote, unit_limit
from unitrefine.search.search_space import PipelineSpec, SearchSpace

log = logging.getLogger(__name__)


def limited(table: UnitTable, specs: list[PipelineSpec], limits: Mapping[str, int | None], seed: int) -> UnitTable:
    """``table``, or the class-stratified random subsample of it that pipelines of ``specs`` are fitted on
    (the smallest ``search.unit_limits`` among their components), as in the search's CV folds."""
    found = [lim for spec in specs if (lim := unit_limit(spec, limits)) is not None]
    if not found or len(table) <= min(lim.units for lim in found):
        return table
    limit = min(found, key=lambda lim: lim.units)
    log.info("Fitting %s on a class-stratified random subsample of %d of %d units (search.unit_limits).",
             " and ".join(limit.components), limit.units, len(table))
    return table.subset(fit_positions(table.y, limit.units, seed))


def fit_spec(spec: PipelineSpec, table: UnitTable, seed: int, limits: Mapping[str, int | None] | None = None) -> Any:
    """Fit the imbalanced-learn pipeline of ``spec`` on ``table`` (within ``limits``), one thread."""
    part = limited(table, [spec], limits or {}, seed)
    with threadpool_limits(limits=1):
        return build_pipeline(spec, seed).fit(part.X, part.y)


@dataclass(frozen=True)
class Fitting:
    """How the exported model (and every refit of it) is fitted.

    Attributes
    ----------
    seed : int
        ``random_state`` of every seeded step, and of the unit-limit subsample and the calibration folds.
    unit_limits : mapping
        ``search.unit_limits``: components fitted on a class-stratified subsample of at most that many units.
    calibration : str or None
        ``calibration.method`` (``sigmoid`` or ``isotonic``), or None for no calibration.
    cv : CVConfig
        The folds the calibrator is fitted on (``n_splits``, ``group_by``).
    """

    seed: int
    unit_limits: Mapping[str, int | None]
    calibration: str | None
    cv: CVConfig


@dataclass(frozen=True)
class FinalModel:
    """How to build the exported model on any part of the data.

    Attributes
    ----------
    specs, weights : dict
        Trial number -> pipeline and -> soft-voting weight (one entry: the single best trial).
    selection : Selection or None
        The ensemble selection that chose them (None when ensembles are off).
    threshold : Threshold or None
        The tuned decision threshold of a binary task.
    fitting : Fitting
        How every fit is made: seed, unit limits, calibration.
    """

    specs: dict[int, PipelineSpec]
    weights: dict[int, int]
    selection: Selection | None
    threshold: Threshold | None
    fitting: Fitting

    @property
    def is_ensemble(self) -> bool:
        """Whether several trials vote."""
        return len(self.weights) > 1

    def fit(self, part: UnitTable) -> Pipeline:
        """Fit on ``part``: a plain scikit-learn ``Pipeline`` whose ``feature_names_in_`` are the metric names."""
        seed, limits = self.fitting.seed, self.fitting.unit_limits
        if self.fitting.calibration is not None:
            return self._calibrated(part)
        fitted = [(f"trial_{n}", export_pipeline(fit_spec(self.specs[n], part, seed, limits))) for n in self.weights]
        model = fitted[0][1] if len(fitted) == 1 else soft_vote(fitted, list(self.weights.values()), part.X, part.y)
        return model if self.threshold is None else with_threshold(model, self.threshold.value, part.X, part.y)

    def _calibrated(self, part: UnitTable) -> Pipeline:
        """Refit inside ``CalibratedClassifierCV`` on CV folds of ``part`` (grouped by recording when possible):
        each fold's model is fitted on the other folds and the calibrator on its predictions. Within
        ``search.unit_limits``, on a subsample of ``part``."""
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.ensemble import VotingClassifier

        how = self.fitting
        part = limited(part, list(self.specs.values()), how.unit_limits, how.seed)
        pipes = [(f"trial_{n}", build_pipeline(self.specs[n], how.seed)) for n in self.weights]
        weights = list(self.weights.values())
        model = pipes[0][1] if len(pipes) == 1 else VotingClassifier(pipes, voting="soft", weights=weights)
        folds, _ = make_folds(part, how.cv, how.seed)
        calibrated = CalibratedClassifierCV(model, method=how.calibration, cv=folds, ensemble=False)
        with threadpool_limits(limits=1):
            return Pipeline([("calibrated", calibrated.fit(part.X, part.y))])

    def describe(self, spec_params: Any) -> dict[str, Any]:
        """``ensemble`` and ``threshold`` entries of ``model_info.json``."""
        return {
            "ensemble": None if not self.is_ensemble else [
                {"trial": n, "weight": w, "configuration": spec_params(self.specs[n])} for n, w in self.weights.items()
            ],
            "threshold": None if self.threshold is None else asdict(self.threshold),
            "calibration": self.fitting.calibration,
        }


def member(model: Pipeline, trial: int) -> Pipeline | None:
    """The fitted pipeline of ``trial`` inside an exported ensemble (through its threshold), or None.

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        What :meth:`FinalModel.fit` returned.
    trial : int
        A trial number.
    """
    from sklearn.ensemble import VotingClassifier
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import FixedThresholdClassifier

    est: Any = model
    while True:
        if isinstance(est, Pipeline) and len(est.steps) == 1 and est.steps[0][0] in ("thresholded", "ensemble"):
            est = est.steps[0][1]
        elif isinstance(est, (FixedThresholdClassifier, FrozenEstimator)):
            est = est.estimator
        else:
            break
    if not isinstance(est, VotingClassifier):
        return None
    found = est.named_estimators_.get(f"trial_{trial}")
    return None if found is None else found.estimator


def prepare_candidates(candidates: int, ranked: Sequence[TrialOutcome], objective: Objective) -> None:
    """Give the ``candidates`` (``ensemble.candidates``) best completed trials out-of-fold predictions in
    ``objective``.

    ``ranked``: the study's completed trials, best first (:func:`unitrefine.search.outcomes.ranked`). Trials run
    by other workers, or before a resume, were scored in another process: their predictions are recomputed
    (same folds, same seed) so that :func:`choose_final_model` can choose among them.
    """
    objective.ensure_oof(ranked[: max(candidates, 1)])


def choose_final_model(
    ranked: Sequence[TrialOutcome],
    space: SearchSpace,
    objective: Objective,
    part: UnitTable,
    ensemble: EnsembleConfig,
    threshold: ThresholdConfig,
    fitting: Fitting,
) -> FinalModel:
    """Pick the members (best trial, or an ensemble chosen out of fold) and tune the threshold out of fold.

    Parameters
    ----------
    ranked : sequence of TrialOutcome
        The finished search's completed trials, best first (:func:`unitrefine.search.outcomes.ranked`).
    space : SearchSpace
        Its search space.
    objective : Objective
        Its objective, holding the candidates' out-of-fold predictions (:func:`prepare_candidates`).
    part : UnitTable
        The searched units.
    ensemble, threshold : EnsembleConfig, ThresholdConfig
        Ensemble selection (``rounds``, ``candidates``, ``max_members``) and threshold tuning settings.
    fitting : Fitting
        How the chosen model is fitted.
    """
    best = ranked[0]
    selection = _select(ranked, objective, part, ensemble)
    weights = selection.weights if selection is not None and selection.is_ensemble else {best.number: 1}
    tuned = None
    if threshold.tune:
        proba = sum(w * objective.oof[n] for n, w in weights.items()) / sum(weights.values())
        tuned = tune_threshold(part.y, proba[:, 1], threshold.objective, threshold.target_precision)
        log.info("Decision threshold %.3f on P(%s): out-of-fold balanced accuracy %.4f (at 0.5: %.4f), precision %.4f.",
                 tuned.value, part.classes[1], tuned.oof_balanced_accuracy,
                 tuned.oof_balanced_accuracy_at_half, tuned.oof_precision)
    params = {t.number: t.params for t in ranked}
    specs = {n: space.spec_from_params(params[n]) for n in weights}
    return FinalModel(specs=specs, weights=weights, selection=selection, threshold=tuned, fitting=fitting)


def _select(
    ranked: Sequence[TrialOutcome], objective: Objective, part: UnitTable, ensemble: EnsembleConfig
) -> Selection | None:
    """The ensemble chosen out of fold among the best completed trials (None when ensembles are off)."""
    if ensemble.rounds <= 0:
        return None
    scored = [t.number for t in ranked if t.number in objective.oof]
    selection = select_ensemble(objective.oof, part.y, scored[: ensemble.candidates],
                                ensemble.rounds, ensemble.max_members)
    if selection.is_ensemble:
        log.info("Ensemble of trials %s: out-of-fold balanced accuracy %.4f (best single trial %d: %.4f).",
                 selection.weights, selection.score, selection.single_trial, selection.single_score)
    else:
        log.info("No ensemble beats the best single trial out of fold (%.4f): exporting one model.", selection.score)
    return selection
