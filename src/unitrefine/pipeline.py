"""Build the cross-validated pipeline (imputer -> scaler -> resampler -> classifier) and its exported form."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.ensemble import VotingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from unitrefine.estimators import GROUPS, get_component
from unitrefine.search_space import PipelineSpec


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


def export_pipeline(fitted: ImbPipeline) -> Pipeline:
    """The fitted pipeline as a plain scikit-learn ``Pipeline`` without the resampler.

    Resamplers only act during ``fit``; dropping the step leaves predictions unchanged and gives the
    ``sklearn.pipeline.Pipeline`` that SpikeInterface's ``load_model`` requires.
    """
    return Pipeline([(name, step) for name, step in fitted.steps if name != "resampler"])


def soft_vote(members: Sequence[tuple[str, Pipeline]], weights: Sequence[int], X: pd.DataFrame, y: np.ndarray) -> Pipeline:
    """Combine fitted exported pipelines into one ``Pipeline`` that averages their probabilities.

    The members stay as fitted (``FrozenEstimator``): the vote only learns the class labels. The result
    is a plain scikit-learn ``Pipeline`` whose ``feature_names_in_`` are the metric names, which
    SpikeInterface loads like a single model.
    """
    vote = VotingClassifier(
        [(name, FrozenEstimator(model)) for name, model in members], voting="soft", weights=list(weights)
    )
    return Pipeline([("ensemble", vote.fit(X, y))])
