"""The Optuna objective: sample a pipeline, cross-validate it fold by fold, report each fold to the pruner."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
from threadpoolctl import threadpool_limits

from unitrefine.search.budget import first_evaluation
from unitrefine.search.evaluation import Split
from unitrefine.search.outcomes import TrialOutcome
from unitrefine.search.pipeline import build_pipeline, fit_positions, unit_limit
from unitrefine.search.search_space import PipelineSpec, SearchSpace
from unitrefine.search.trial_attrs import CV_STD_ATTR, DUPLICATE_ATTR, ERROR_ATTR, FOLD_SCORES_ATTR

log = logging.getLogger(__name__)

#: Exceptions a sampled configuration may legitimately raise (e.g. SMOTE with more neighbours than
#: minority units in a fold). They fail the trial, with the reason kept; anything else stops the search.
CONFIG_ERRORS: tuple[type[Exception], ...] = (ValueError, np.linalg.LinAlgError)


class Objective:
    """Mean cross-validated score of one sampled pipeline.

    Parameters
    ----------
    space : SearchSpace
        What to sample.
    X : pandas.DataFrame
        Training features (the held-out recordings are not here).
    y : numpy.ndarray
        Training class codes.
    folds : list of (train, validation) position arrays
        The CV folds; every step of the pipeline is fitted on the training part of each.
    score : callable
        A scikit-learn scorer ``score(estimator, X, y) -> float``, higher is better.
    seed : int
        ``random_state`` of every seeded step.
    keep_oof : bool
        Keep every completed trial's out-of-fold class probabilities in :attr:`oof` (for ensembles).
    unit_limits : mapping, optional
        ``search.unit_limits``: a pipeline holding a limited component is fitted, in each fold, on a
        class-stratified random subsample of at most that many of the fold's training units (validation
        units are all scored).
    """

    def __init__(
        self,
        space: SearchSpace,
        X: pd.DataFrame,
        y: np.ndarray,
        folds: list[Split],
        score: Callable[[Any, pd.DataFrame, np.ndarray], float],
        seed: int,
        keep_oof: bool = False,
        unit_limits: Mapping[str, int | None] | None = None,
    ) -> None:
        self.space = space
        self.X = X
        self.y = y
        self.folds = folds
        self.score = score
        self.seed = seed
        self.keep_oof = keep_oof
        self.oof: dict[int, np.ndarray] = {}
        self.unit_limits = dict(unit_limits or {})
        self._announced: set[tuple[str, ...]] = set()
        self._checked: set[tuple[str, int]] = set()  # (study, trial) whose configuration was checked for repeats
        self._lock = threading.Lock()

    def fit_fold(self, spec: PipelineSpec, train: np.ndarray) -> Any:
        """Fit the pipeline of ``spec`` on the fold's training positions ``train`` (within the unit limit)."""
        limit = unit_limit(spec, self.unit_limits)
        if limit is not None and len(train) > limit.units:
            self._announce(limit.components, limit.units, len(train))
            train = train[fit_positions(self.y[train], limit.units, self.seed)]
        return build_pipeline(spec, self.seed).fit(self.X.iloc[train], self.y[train])

    def _announce(self, components: tuple[str, ...], units: int, available: int) -> None:
        with self._lock:
            if components in self._announced:
                return
            self._announced.add(components)
        log.info(
            "Pipelines with %s are fitted on a class-stratified random subsample of %d of the %d training units of "
            "each CV fold (search.unit_limits; null for no limit).", " and ".join(components), units, available,
        )

    def sample(self, trial: optuna.Trial) -> PipelineSpec:
        """Draw every parameter of ``trial``'s pipeline (a trial that has them gets them back unchanged).

        A worker calls this as it starts the trial, while trials are started one at a time in order, so that
        the sampler's random draws are taken in that order (:mod:`unitrefine.search.workers`); :meth:`__call__` then
        reads the parameters back. The first time, a trial whose configuration another trial of the study
        evaluated, or is evaluating, is marked a duplicate of it (:data:`unitrefine.search.trial_attrs.DUPLICATE_ATTR`):
        it is not fitted.
        """
        spec = self.space.sample(trial)
        key = (trial.study.study_name, trial.number)
        with self._lock:
            checked = key in self._checked
            self._checked.add(key)
        if not checked and DUPLICATE_ATTR not in trial.user_attrs:
            earlier = first_evaluation(trial.study, trial.number, trial.params)
            if earlier is not None:
                trial.set_user_attr(DUPLICATE_ATTR, earlier)
                log.info("Trial %d repeats the configuration of trial %d: it is not fitted again, and does not count "
                         "toward search.n_trials.", trial.number, earlier)
        return spec

    def __call__(self, trial: optuna.Trial) -> float:
        """Cross-validate the trial's pipeline; prune after any fold the pruner says is hopeless.

        A duplicate (see :meth:`sample`) is pruned at once, without a fit.
        """
        spec = self.sample(trial)
        earlier = trial.user_attrs.get(DUPLICATE_ATTR)
        if earlier is not None:
            raise optuna.TrialPruned(f"the configuration of trial {earlier}, not fitted again")
        scores: list[float] = []
        oof = np.full((len(self.y), int(self.y.max()) + 1), np.nan) if self.keep_oof else None
        # One thread per fit: parallelism comes from running trials side by side.
        with threadpool_limits(limits=1):
            for k, (train, valid) in enumerate(self.folds):
                try:
                    model = self.fit_fold(spec, train)
                    scores.append(float(self.score(model, self.X.iloc[valid], self.y[valid])))
                    if oof is not None:
                        oof[valid] = model.predict_proba(self.X.iloc[valid])
                except CONFIG_ERRORS as exc:
                    reason = f"fold {k}: {type(exc).__name__}: {str(exc).splitlines()[0]}"[:500]
                    log.warning("Trial %d failed (%s); the search goes on.", trial.number, reason)
                    trial.set_user_attr(ERROR_ATTR, reason)
                    return float("nan")  # Optuna records a NaN result as a failed trial
                trial.set_user_attr(FOLD_SCORES_ATTR, scores)
                trial.report(scores[-1], k)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after fold {k}")
        trial.set_user_attr(CV_STD_ATTR, float(np.std(scores)))
        if oof is not None:
            self.oof[trial.number] = oof
        return float(np.mean(scores))

    def ensure_oof(self, trials: Sequence[TrialOutcome]) -> None:
        """Recompute the out-of-fold probabilities of completed ``trials`` that are not in :attr:`oof`.

        Trials run by another worker, or by this command before a resume, were scored elsewhere; refitting
        their configuration on the same folds with the same seed gives the predictions they had.
        """
        for t in trials:
            if t.number in self.oof:
                continue
            spec = self.space.spec_from_params(t.params)
            oof = np.full((len(self.y), int(self.y.max()) + 1), np.nan)
            with threadpool_limits(limits=1):
                for train, valid in self.folds:
                    model = self.fit_fold(spec, train)
                    oof[valid] = model.predict_proba(self.X.iloc[valid])
            self.oof[t.number] = oof
