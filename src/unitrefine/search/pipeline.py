"""Build the cross-validated pipeline (imputer -> scaler -> resampler -> classifier) and its exported form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.ensemble import VotingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from unitrefine.search.estimators import GROUPS, get_component
from unitrefine.search.search_space import PipelineSpec


def build_pipeline(spec: PipelineSpec, seed: int) -> ImbPipeline:
    """Return an unfitted imbalanced-learn pipeline for ``spec``.

    Every step, the resampler included, is fitted inside whatever split the pipeline is fitted on, so
    cross-validating it leaks nothing from validation folds. A skipped step is ``"passthrough"``.

    Parameters
    ----------
    spec : PipelineSpec
        The chosen component and parameters of each slot.
    seed : int
        ``random_state`` of every seeded step.

    Returns
    -------
    imblearn.pipeline.Pipeline
    """
    steps = []
    for slot in GROUPS:
        choice = spec[slot]
        est = get_component(slot, choice.name).make(choice.params, seed)
        steps.append((slot, "passthrough" if est is None else est))
    return ImbPipeline(steps)


@dataclass(frozen=True)
class UnitLimit:
    """The most units a pipeline is fitted on, and the components that set it (``search.unit_limits``)."""

    units: int
    components: tuple[str, ...]


def unit_limit(spec: PipelineSpec, limits: Mapping[str, int | None]) -> UnitLimit | None:
    """The smallest limit among the components of ``spec`` (None: no component is limited)."""
    named = {choice.name: limits[choice.name] for choice in spec.values() if limits.get(choice.name) is not None}
    if not named:
        return None
    units = min(v for v in named.values() if v is not None)
    return UnitLimit(units, tuple(name for name, v in named.items() if v == units))


def fit_positions(y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Positions of the units a pipeline is fitted on: all of them, or a class-stratified random subsample.

    Each class keeps its share of ``limit`` (largest remainders round up), and at least one unit, so the
    subsample has every class of ``y``; its size is ``limit`` (a few more only when tiny classes need
    their one unit). The same ``y``, ``limit`` and ``seed`` give the same positions, in increasing order.

    Parameters
    ----------
    y : numpy.ndarray
        Class codes of the units available for the fit.
    limit : int or None
        The most units to fit on (None: no limit).
    seed : int
        Seed of the draw.
    """
    n = len(y)
    if limit is None or n <= limit:
        return np.arange(n)
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * limit / n
    quota = np.floor(exact).astype(int)
    quota[np.argsort(quota - exact, kind="stable")[: limit - int(quota.sum())]] += 1
    quota = np.minimum(np.maximum(quota, 1), counts)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c, k in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def export_pipeline(fitted: ImbPipeline) -> Pipeline:
    """The fitted pipeline as a plain scikit-learn ``Pipeline`` without the resampler.

    Resamplers only act during ``fit``; dropping the step leaves predictions unchanged and gives the
    ``sklearn.pipeline.Pipeline`` that SpikeInterface's ``load_model`` requires.
    """
    return Pipeline([(name, step) for name, step in fitted.steps if name != "resampler"])


def soft_vote(
    members: Sequence[tuple[str, Pipeline]], weights: Sequence[int], X: pd.DataFrame, y: np.ndarray
) -> Pipeline:
    """Combine fitted exported pipelines into one ``Pipeline`` that averages their probabilities.

    The members stay as fitted (``FrozenEstimator``): the vote only learns the class labels. The result
    is a plain scikit-learn ``Pipeline`` whose ``feature_names_in_`` are the metric names, which
    SpikeInterface loads like a single model.
    """
    vote = VotingClassifier(
        [(name, FrozenEstimator(model)) for name, model in members], voting="soft", weights=list(weights)
    )
    return Pipeline([("ensemble", vote.fit(X, y))])
