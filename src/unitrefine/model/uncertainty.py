"""How unsure a model is about each unit, and what reviewing the most uncertain units buys.

The one place the uncertainty ranking lives: ``unitrefine.suggest`` (what to label next,
:mod:`unitrefine.apply.active`), the review queue of ``unitrefine.predict review=...`` and the estimate of what a
review budget buys (:func:`curated_scores`) all score units here.

Strategies, for class probabilities sorted ``p1 >= p2 >= ...`` over ``K`` classes (higher score: look first):

* ``margin`` (default): ``1 - (p1 - p2)``, closeness to the boundary between the two likeliest classes,
  which is the decision a curator's label settles;
* ``least_confidence``: ``1 - p1``;
* ``entropy``: ``-sum(p log p) / log K``, uncertainty spread over all classes.

For two classes the three give the same order. A binary model that decides with a tuned threshold ``t`` on
P(positive) (scikit-learn's ``FixedThresholdClassifier``, ``threshold.tune``) is most uncertain at ``t``, not at
0.5: its probabilities are rescaled piecewise linearly (``t`` -> 0.5, 0 and 1 kept) before scoring
(:func:`centre_on_threshold`), so the units nearest its own decision come first.

A review budget is a fraction of the units (``0 < x < 1``, or a percentage ``"10%"``) or a whole count; a fraction
``x`` of ``n`` units is ``ceil(x * n)`` units (:func:`review_count`), everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from unitrefine.errors import UnitRefineError

STRATEGIES = ("margin", "least_confidence", "entropy")


def uncertainty(proba: np.ndarray, strategy: str = "margin") -> np.ndarray:
    """Uncertainty of each row of class probabilities, in [0, 1]; higher means look at it sooner.

    Parameters
    ----------
    proba : numpy.ndarray
        ``(n_units, n_classes)`` class probabilities.
    strategy : {"margin", "least_confidence", "entropy"}
        See the module docstring.

    Returns
    -------
    numpy.ndarray
        One score per unit (NaN where a row's probabilities are NaN).
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must be (n_units, n_classes >= 2); got shape {p.shape}")
    top = -np.sort(-p, axis=1)
    if strategy == "margin":
        return 1.0 - (top[:, 0] - top[:, 1])
    if strategy == "least_confidence":
        return 1.0 - top[:, 0]
    if strategy == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p), 0.0)
        return np.where(np.isnan(p).any(axis=1), np.nan, -terms.sum(axis=1) / np.log(p.shape[1]))
    raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")


def centre_on_threshold(proba: np.ndarray, threshold: float) -> np.ndarray:
    """Binary probabilities rescaled so that the decision threshold on P(positive) maps to 0.5.

    ``p`` below ``threshold`` maps linearly onto [0, 0.5), above it onto [0.5, 1]; the order of units on each
    side is kept, and a unit exactly at the threshold becomes the most uncertain.
    """
    p = np.asarray(proba, dtype=np.float64)[:, 1]
    t = float(threshold)
    q = np.where(p < t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1.0 - t))
    return np.column_stack([1.0 - q, q])


def decision_threshold(pipeline: Any) -> float | None:
    """The threshold on P(positive) a binary pipeline predicts with (a ``FixedThresholdClassifier`` as its last
    step, as ``threshold.tune`` exports it), or None for argmax decisions."""
    from sklearn.model_selection import FixedThresholdClassifier

    last = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    if not isinstance(last, FixedThresholdClassifier) or len(getattr(last, "classes_", ())) != 2:
        return None
    t = last.threshold
    if isinstance(t, str) or last.pos_label not in (None, last.classes_[1]):
        return None  # "auto" is 0.5 on probabilities; another positive label is not what we export
    return float(t) if 0.0 < float(t) < 1.0 else None


def model_uncertainty(proba: np.ndarray, threshold: float | None = None, strategy: str = "margin") -> np.ndarray:
    """Uncertainty of a model about each unit around its own decision: :func:`uncertainty` of its probabilities,
    centred on ``threshold`` first for a thresholded binary model (:func:`decision_threshold`)."""
    p = np.asarray(proba, dtype=np.float64)
    if threshold is not None and p.shape[1] == 2:
        p = centre_on_threshold(p, threshold)
    return uncertainty(p, strategy)


@dataclass(frozen=True)
class Stage:
    """One model's part of a predictions table: its classes (``probability_<class>`` columns) and threshold."""

    classes: Sequence[str]
    threshold: float | None = None


def table_uncertainty(predictions: pd.DataFrame, stages: Sequence[Stage], strategy: str = "margin") -> np.ndarray:
    """Uncertainty of every unit of a predictions table (``probability_<class>`` columns, as ``predict`` writes).

    Parameters
    ----------
    predictions : pandas.DataFrame
        One row per unit.
    stages : sequence of Stage
        One model, or the two of a cascade. A unit's score is the largest of its stages' scores (a label is as
        doubtful as the most doubtful decision that made it); a stage that did not see a unit (a cascade's second
        model on noise units: its probabilities are NaN) does not count.
    strategy : str
        See :func:`uncertainty`.

    Returns
    -------
    numpy.ndarray
        One score per row (NaN only where no stage has probabilities).
    """
    per_stage = []
    for stage in stages:
        proba = predictions[[f"probability_{c}" for c in stage.classes]].to_numpy(dtype=np.float64)
        per_stage.append(model_uncertainty(proba, stage.threshold, strategy))
    return np.fmax.reduce(np.vstack(per_stage), axis=0)


def review_order(scores: np.ndarray) -> np.ndarray:
    """Positions of the units, most uncertain first; ties keep the units' order, NaN scores come last."""
    s = np.asarray(scores, dtype=np.float64)
    return np.argsort(np.where(np.isnan(s), np.inf, -s), kind="stable")


def review_ranks(scores: np.ndarray) -> np.ndarray:
    """The review rank of each unit (1 = look first), by :func:`review_order`."""
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[review_order(scores)] = np.arange(1, len(scores) + 1)
    return ranks


def review_count(fraction: float, n_units: int) -> int:
    """How many of ``n_units`` a review of ``fraction`` of them covers: ``ceil(fraction * n_units)``.

    A tolerance keeps float products exact (``0.1 * 30`` is 3, not 4).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1]; got {fraction}")
    return min(n_units, math.ceil(fraction * n_units - 1e-9))


def curated_labels(y_true: np.ndarray, y_model: np.ndarray, scores: np.ndarray, n_review: int) -> np.ndarray:
    """The labels after a review: the ``n_review`` most uncertain units (:func:`review_order`) take their true
    label, the others keep the model's."""
    curated = np.asarray(y_model, dtype=object).copy()
    reviewed = review_order(scores)[: int(n_review)]
    curated[reviewed] = np.asarray(y_true, dtype=object)[reviewed]
    return curated


def curated_scores(y_true: np.ndarray, y_model: np.ndarray, scores: np.ndarray,
                   fractions: Sequence[float]) -> dict[float, float]:
    """Balanced accuracy of the whole set of units after reviewing the most uncertain ones, per review budget.

    For each fraction ``f``, the ``ceil(f * n)`` units with the highest ``scores`` (ties: the earlier unit first;
    NaN scores last) take their true label, every other unit keeps the model's, and the balanced accuracy
    (scikit-learn's) is computed over all ``n`` units.

    Parameters
    ----------
    y_true : numpy.ndarray
        The curators' labels (what a review would give).
    y_model : numpy.ndarray
        The model's labels.
    scores : numpy.ndarray
        Uncertainty of each unit, e.g. :func:`model_uncertainty` of the model's probabilities.
    fractions : sequence of float
        Review budgets as fractions of the units, each in [0, 1] (0: the model alone).

    Returns
    -------
    dict of float to float
        ``{fraction: balanced accuracy}``, in the order of ``fractions``.

    Raises
    ------
    ValueError
        Arrays of different lengths, no units, or a fraction outside [0, 1].
    """
    from sklearn.metrics import balanced_accuracy_score

    y_true, y_model, scores = np.asarray(y_true), np.asarray(y_model), np.asarray(scores, dtype=np.float64)
    if not len(y_true) == len(y_model) == len(scores) or len(y_true) == 0:
        raise ValueError(f"y_true, y_model and scores need the same, non-zero length; got {len(y_true)}, "
                         f"{len(y_model)}, {len(scores)}")
    truth = y_true.astype(str)
    out = {}
    for f in fractions:
        k = review_count(float(f), len(truth))
        curated = curated_labels(truth, y_model.astype(str), scores, k).astype(str)
        out[f] = float(balanced_accuracy_score(truth, curated))
    return out


@dataclass(frozen=True)
class ReviewBudget:
    """How many units a curator will review: a fraction of the units, or a count."""

    fraction: float | None = None
    count: int | None = None

    def n_units(self, n_total: int) -> int:
        """The number of units of ``n_total`` in the budget."""
        return self.count if self.count is not None else review_count(float(self.fraction or 0.0), n_total)

    def describe(self) -> str:
        """``"10 % of the units"`` or ``"50 units"``."""
        return f"{100 * (self.fraction or 0.0):g} % of the units" if self.count is None else f"{self.count} units"


def check_budget(budget: ReviewBudget, n_units: int, where: str) -> None:
    """A count may not exceed the units being labelled.

    Raises
    ------
    UnitRefineError
        ``budget.count > n_units``, naming ``review=`` and ``where`` (the data).
    """
    if budget.count is not None and budget.count > n_units:
        raise UnitRefineError(
            f"review={budget.count} asks for more units than {where} holds ({n_units}). Give at most {n_units}, or a "
            "fraction of the units (review=0.1 or review=10%)."
        )


def add_review_queue(predictions: pd.DataFrame, stages: Sequence[Stage], budget: ReviewBudget,
                     strategy: str = "margin") -> pd.DataFrame:
    """``predictions`` with ``needs_review`` (the budget's units) and ``review_rank`` (every unit; 1 = look first).

    The budget is over all rows (every recording of the command together): the units the model is least sure
    about (:func:`table_uncertainty`), whatever their recording.
    """
    ranks = review_ranks(table_uncertainty(predictions, stages, strategy))
    check_budget(budget, len(predictions), "the data")
    return predictions.assign(needs_review=ranks <= budget.n_units(len(predictions)), review_rank=ranks)


def parse_review_budget(value: Any) -> ReviewBudget | None:
    """Read ``review=``: ``null`` (no review queue), a fraction ``0 < x < 1``, a percentage ``"10%"`` or a whole count.

    Raises
    ------
    UnitRefineError
        Anything else (negative, over 100 %, a fraction above 1 that is not a whole count, not a number); the
        message names ``review=`` and says what to write.
    """
    if value is None:
        return None
    how = ("Write a fraction of the units (review=0.1), a percentage (review=10%) or a whole number of units "
           "(review=50); review=null for no review queue.")
    text = str(value).strip()
    if isinstance(value, bool) or text == "":
        raise UnitRefineError(f"review={value!r} is not a review budget. {how}")
    percent = text.endswith("%")
    try:
        number = float(text[:-1] if percent else text)
    except ValueError:
        raise UnitRefineError(f"review={text} is not a number. {how}") from None
    if not math.isfinite(number) or number < 0:
        raise UnitRefineError(f"review={text} is negative or not finite. {how}")
    if percent:
        if number > 100:
            raise UnitRefineError(f"review={text} is over 100 % of the units. {how}")
        return ReviewBudget(fraction=number / 100)
    if 0 < number < 1:
        return ReviewBudget(fraction=number)
    if number != int(number):
        raise UnitRefineError(f"review={text}: above 1 the budget is a number of units, which must be whole. {how}")
    return ReviewBudget(count=int(number))
