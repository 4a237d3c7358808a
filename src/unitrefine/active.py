"""What to label next: rank unlabelled units by how unsure a model is about them (uncertainty sampling).

``python -m unitrefine.suggest`` without the command line. The model is applied exactly as
``unitrefine.predict`` applies it (:func:`unitrefine.prediction.predict_source`: trusted types only, metrics
read, renamed and checked the same way); each unit gets an uncertainty score from its class probabilities,
and the most uncertain units are suggested, spread across recordings so that a curator's batch is not
spent on one odd recording. Units already labelled (a labels file or folder, :mod:`unitrefine.labelled`)
are never suggested.

Strategies, for class probabilities sorted ``p1 >= p2 >= ...`` over ``K`` classes (higher score: label first):

* ``margin`` (default): ``1 - (p1 - p2)``, closeness to the boundary between the two likeliest classes,
  which is the decision a curator's label settles;
* ``least_confidence``: ``1 - p1``;
* ``entropy``: ``-sum(p log p) / log K``, uncertainty spread over all classes.

For two classes the three give the same order. A binary model that decides with a tuned threshold ``t`` on
P(positive) (scikit-learn's ``FixedThresholdClassifier``, ``threshold.tune``) is most uncertain at ``t``, not at
0.5: its probabilities are rescaled piecewise linearly (``t`` -> 0.5, 0 and 1 kept) before scoring, so the
units nearest its own decision come first; the output keeps the model's probabilities.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from unitrefine import predict_io as io
from unitrefine.errors import UnitRefineError
from unitrefine.labelled import drop_labelled, read_labelled
from unitrefine.prediction import PredictConfig, load_models, predict_source

log = logging.getLogger(__name__)

STRATEGIES = ("margin", "least_confidence", "entropy")
#: ``round_robin``: the most uncertain unit of each recording, then the second of each, ...; ``none``: one global order.
SPREADS = ("round_robin", "none")


@dataclass
class SuggestConfig:
    """What ``python -m unitrefine.suggest`` is asked to do (``conf/suggest.yaml``)."""

    model: str
    data: str
    output: str
    n: int = 20
    strategy: str = "margin"
    spread: str = "round_robin"
    labels: str | None = None
    overwrite: bool = False
    trust: list[str] = field(default_factory=list)
    impute_missing: list[str] = field(default_factory=list)
    tracking_uri: str | None = None
    compute_missing: bool = True
    save_metrics: bool = True
    strict: bool = False
    n_jobs: int = 1

    def predict_config(self) -> PredictConfig:
        """The options :func:`~unitrefine.prediction.predict_source` reads, as ``unitrefine.predict`` has them."""
        return PredictConfig(
            model=[self.model], data=self.data, output=self.output, set_properties=False,
            compute_missing=self.compute_missing, save_metrics=self.save_metrics, strict=self.strict,
            trust=list(self.trust), impute_missing=list(self.impute_missing), tracking_uri=self.tracking_uri,
            n_jobs=self.n_jobs, overwrite=self.overwrite,
        )


def parse_suggest_config(cfg: DictConfig | dict[str, Any]) -> SuggestConfig:
    """Validate a composed ``suggest`` config.

    Raises
    ------
    UnitRefineError
        Unknown keys, missing ``model``/``data``/``output``, a cascade, ``n < 1``, or an unknown strategy/spread.
    """
    raw = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    known = set(SuggestConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UnitRefineError(f"Unknown suggest option(s) {unknown}; the options are {sorted(known)}.")
    missing = [k for k in ("model", "data", "output") if raw.get(k) in (None, "", "???")]
    if missing:
        raise UnitRefineError(
            f"Set {', '.join(f'{k}=...' for k in missing)}: python -m unitrefine.suggest model=<folder or "
            "models:/name@alias> data=<csv, folder of csvs, or analyzer folder> n=<how many> output=<csv>"
        )
    if not isinstance(raw["model"], str):
        raise UnitRefineError(
            f"suggest takes one model (got {raw['model']!r}): for a cascade, ask for suggestions of each stage's model."
        )
    for key in ("trust", "impute_missing"):
        value = raw.get(key) or []
        raw[key] = [value] if isinstance(value, str) else list(value)
    out = SuggestConfig(**raw)
    problems = []
    if not isinstance(out.n, int) or isinstance(out.n, bool) or out.n < 1:
        problems.append(f"n must be a whole number >= 1 (got {out.n!r})")
    if out.strategy not in STRATEGIES:
        problems.append(f"strategy must be one of {', '.join(STRATEGIES)} (got '{out.strategy}')")
    if out.spread not in SPREADS:
        problems.append(f"spread must be one of {', '.join(SPREADS)} (got '{out.spread}')")
    if out.n_jobs < 1:
        problems.append(f"n_jobs must be >= 1 (got {out.n_jobs})")
    if problems:
        raise UnitRefineError("Invalid suggest options: " + "; ".join(problems) + ".")
    return out


def uncertainty(proba: np.ndarray, strategy: str = "margin") -> np.ndarray:
    """Uncertainty of each row of class probabilities, in [0, 1]; higher means label it sooner.

    Parameters
    ----------
    proba : numpy.ndarray
        ``(n_units, n_classes)`` class probabilities.
    strategy : {"margin", "least_confidence", "entropy"}
        See the module docstring.

    Returns
    -------
    numpy.ndarray
        One score per unit.
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
        return -terms.sum(axis=1) / np.log(p.shape[1])
    raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")


def select(recordings: Sequence[str] | np.ndarray, scores: np.ndarray, n: int, spread: str = "round_robin") -> np.ndarray:
    """Positions of the ``n`` units to label first, in order.

    Parameters
    ----------
    recordings : sequence of str
        The recording of each unit.
    scores : numpy.ndarray
        Uncertainty of each unit (:func:`uncertainty`).
    n : int
        How many to choose (fewer if there are fewer units).
    spread : {"round_robin", "none"}
        ``round_robin``: round ``r`` takes the ``r``-th most uncertain unit of every recording that has one,
        most uncertain first, so every recording is represented before any gets a second unit; ``none``:
        the most uncertain units overall. Ties keep the recordings' and units' order.

    Returns
    -------
    numpy.ndarray
        Row positions into ``recordings``/``scores``.
    """
    order = list(dict.fromkeys(np.asarray(recordings, dtype=object).tolist()))
    codes = pd.Categorical(np.asarray(recordings, dtype=object), categories=order).codes
    df = pd.DataFrame({"rec": codes, "score": np.asarray(scores, dtype=np.float64), "row": np.arange(len(codes))})
    df = df.sort_values(["score", "rec", "row"], ascending=[False, True, True], kind="stable", na_position="last")
    if spread == "round_robin":
        df["round"] = df.groupby("rec").cumcount()
        df = df.sort_values(["round", "score", "rec", "row"], ascending=[True, False, True, True], kind="stable",
                            na_position="last")
    elif spread != "none":
        raise ValueError(f"unknown spread {spread!r}; choose from {SPREADS}")
    return df["row"].to_numpy()[: max(int(n), 0)]


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


def rank_candidates(predictions: pd.DataFrame, classes: Sequence[str], n: int, strategy: str = "margin",
                    spread: str = "round_robin", threshold: float | None = None) -> pd.DataFrame:
    """The suggestion table: the chosen units of ``predictions`` with their rank and score.

    Parameters
    ----------
    predictions : pandas.DataFrame
        ``recording``, ``unit_id``, ``predicted_label`` and ``probability_<class>`` for every candidate
        (as :func:`~unitrefine.prediction.predict_source` returns them).
    classes : sequence of str
        The model's classes, in the order of its probability columns.
    n, strategy, spread
        See :func:`select` and :func:`uncertainty`.
    threshold : float, optional
        A binary model's decision threshold on P(``classes[1]``): scores are computed on
        :func:`centre_on_threshold` probabilities.

    Returns
    -------
    pandas.DataFrame
        ``recording, unit_id, rank, score, predicted_label, probability_<class>...``, rank 1 first.
    """
    prob_cols = [f"probability_{c}" for c in classes]
    proba = predictions[prob_cols].to_numpy(dtype=np.float64)
    if threshold is not None and len(prob_cols) == 2:
        proba = centre_on_threshold(proba, threshold)
    scores = uncertainty(proba, strategy)
    rows = select(predictions["recording"].to_numpy(), scores, n, spread)
    out = predictions.iloc[rows][["recording", "unit_id"]].reset_index(drop=True)
    out["rank"] = np.arange(1, len(rows) + 1)
    out["score"] = scores[rows]
    out["predicted_label"] = predictions["predicted_label"].to_numpy()[rows]
    for c in prob_cols:
        out[c] = predictions[c].to_numpy()[rows]
    return out


@dataclass
class SuggestResult:
    """What a suggestion run produced."""

    suggestions: pd.DataFrame
    output: Path
    n_candidates: int
    n_labelled: int


def suggest(cfg: SuggestConfig) -> SuggestResult:
    """Rank the units a curator should label next and write them to ``cfg.output``.

    Parameters
    ----------
    cfg : SuggestConfig

    Returns
    -------
    SuggestResult

    Raises
    ------
    UnitRefineError
        Bad data, model, labels or options, or an existing output (without ``overwrite``); the output is
        written only at the end, atomically.
    """
    sources = io.discover(Path(cfg.data).expanduser().resolve())
    output = Path(cfg.output).expanduser().resolve()
    io.check_writable([output], cfg.overwrite)
    labels_path = Path(cfg.labels).expanduser().resolve() if cfg.labels else None
    labelled = read_labelled(labels_path, [s.name for s in sources]) if labels_path is not None else None
    (model,) = load_models([cfg.model], cfg.trust, cfg.tracking_uri)
    predict_cfg = cfg.predict_config()
    tables = []
    for src in sources:
        table, analyzer = predict_source(src, [model], predict_cfg)
        tables.append(table)
        del analyzer
    gc.collect()  # SpikeInterface analyzers hold reference cycles whose __del__ fails at interpreter exit
    predictions = pd.concat(tables, ignore_index=True)
    candidates = predictions if labelled is None else drop_labelled(predictions, labelled)
    n_labelled = len(predictions) - len(candidates)
    if candidates.empty:
        raise UnitRefineError(f"Every unit of {cfg.data} is already labelled ({cfg.labels}): nothing to suggest.")
    if cfg.n > len(candidates):
        log.warning("n=%d but only %d units are unlabelled: suggesting all of them.", cfg.n, len(candidates))
    threshold = decision_threshold(model.pipeline)
    if threshold is not None:
        log.info("Model %s decides at P(%s) >= %.3f: uncertainty is measured around that threshold.", cfg.model,
                 model.classes[1], threshold)
    ranked = rank_candidates(candidates, model.classes, cfg.n, cfg.strategy, cfg.spread, threshold)
    io.write_predictions(ranked, output)
    per_rec = ranked["recording"].value_counts(sort=False).to_dict()
    log.info(
        "Suggested %d of %d unlabelled units (%d already labelled) by %s uncertainty%s: %s; predicted %s. Wrote %s.",
        len(ranked), len(candidates), n_labelled, cfg.strategy,
        ", round-robin over recordings" if cfg.spread == "round_robin" else "", per_rec,
        ranked["predicted_label"].value_counts().to_dict(), output,
    )
    return SuggestResult(ranked, output, len(candidates), n_labelled)
