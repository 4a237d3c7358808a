"""What to label next: rank unlabelled units by how unsure a model is about them (uncertainty sampling).

``python -m unitrefine.suggest`` without the command line. The model is applied exactly as
``unitrefine.predict`` applies it (:func:`unitrefine.apply.prediction.predict_source`: trusted types only, metrics
read, renamed and checked the same way); each unit gets an uncertainty score from its class probabilities,
and the most uncertain units are suggested, spread across recordings so that a curator's batch is not
spent on one odd recording. Units already labelled (a labels file or folder, :mod:`unitrefine.data.labelled`)
are never suggested.

The scores (``margin``, ``least_confidence``, ``entropy``; a thresholded binary model is most unsure at its own
threshold) are :mod:`unitrefine.model.uncertainty`'s, the same ranking as ``unitrefine.predict review=...``; this
module adds the spreading over recordings and the labelled units. The output keeps the model's probabilities.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from unitrefine.apply import predict_io as io
from unitrefine.apply.command_paths import check_not_input, input_path, labels_inputs, output_path
from unitrefine.apply.models import load_models
from unitrefine.apply.prediction import PredictConfig, input_locations, predict_source
from unitrefine.data.labelled import drop_labelled, read_labelled
from unitrefine.errors import UnitRefineError

# The scores live in unitrefine.model.uncertainty; their names stay importable from here.
from unitrefine.model.uncertainty import (  # noqa: F401
    STRATEGIES,
    Stage,
    centre_on_threshold,
    decision_threshold,
    table_uncertainty,
    uncertainty,
)
from unitrefine.options import MODEL_AND_DATA, ApplyOptions, command_options, typed_options

log = logging.getLogger(__name__)

#: ``round_robin``: the most uncertain unit of each recording, then the second of each, ...; ``none``: one global order.
SPREADS = ("round_robin", "none")


@dataclass(kw_only=True)
class SuggestConfig(ApplyOptions):
    """What ``python -m unitrefine.suggest`` is asked to do: the options it shares with ``predict``
    (:class:`~unitrefine.options.ApplyOptions`) and its own. The defaults are ``conf/suggest.yaml``'s."""

    model: str
    n: int
    strategy: str
    spread: str
    labels: str | None

    def predict_config(self) -> PredictConfig:
        """The options :func:`~unitrefine.apply.prediction.predict_source` reads, as ``unitrefine.predict`` has them.

        The shared options are copied; of ``predict``'s own, none applies: one model (no cascade, so no
        ``noise_label``), no review queue, no Phy files and no sorting properties.
        """
        shared = {f.name: getattr(self, f.name) for f in fields(ApplyOptions)}
        return PredictConfig(**shared, model=[self.model], phy_folder=None, set_properties=False, noise_label="",
                             review=None)


def parse_suggest_config(cfg: DictConfig | dict[str, Any]) -> SuggestConfig:
    """Validate a composed ``suggest`` config; options not given take their values in ``conf/suggest.yaml``.

    Raises
    ------
    UnitRefineError
        Unknown keys, missing ``model``/``data``/``output``, a cascade, a value of the wrong type, ``n < 1``, or an
        unknown strategy/spread.
    """
    raw = command_options(cfg, SuggestConfig, "suggest", ("model", "data", "output"),
                          f"{MODEL_AND_DATA} n=<how many> output=<csv>")
    if not isinstance(raw["model"], str):
        raise UnitRefineError(
            f"suggest takes one model (got {raw['model']!r}): for a cascade, ask for suggestions of each stage's model."
        )
    for key in ("trust", "impute_missing"):
        value = raw.get(key) or []
        raw[key] = [value] if isinstance(value, str) else list(value)
    out = typed_options(raw, SuggestConfig, "suggest")
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


def select(
    recordings: Sequence[str] | np.ndarray, scores: np.ndarray, n: int, spread: str = "round_robin"
) -> np.ndarray:
    """Positions of the ``n`` units to label first, in order.

    Parameters
    ----------
    recordings : sequence of str
        The recording of each unit.
    scores : numpy.ndarray
        Uncertainty of each unit (:func:`unitrefine.model.uncertainty.uncertainty`).
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


def rank_candidates(predictions: pd.DataFrame, classes: Sequence[str], n: int, strategy: str = "margin",
                    spread: str = "round_robin", threshold: float | None = None) -> pd.DataFrame:
    """The suggestion table: the chosen units of ``predictions`` with their rank and score.

    Parameters
    ----------
    predictions : pandas.DataFrame
        ``recording``, ``unit_id``, ``predicted_label`` and ``probability_<class>`` for every candidate
        (as :func:`~unitrefine.apply.prediction.predict_source` returns them).
    classes : sequence of str
        The model's classes, in the order of its probability columns.
    n, strategy, spread
        See :func:`select` and :func:`unitrefine.model.uncertainty.uncertainty`.
    threshold : float, optional
        A binary model's decision threshold on P(``classes[1]``): scores are computed on
        :func:`~unitrefine.model.uncertainty.centre_on_threshold` probabilities.

    Returns
    -------
    pandas.DataFrame
        ``recording, unit_id, rank, score, predicted_label, probability_<class>...``, rank 1 first.
    """
    prob_cols = [f"probability_{c}" for c in classes]
    scores = table_uncertainty(predictions, [Stage(list(classes), threshold)], strategy)
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
    sources = io.discover(input_path(cfg.data, "data"))
    output = output_path(cfg.output)
    labels_path = input_path(cfg.labels, "labels") if cfg.labels else None
    labels_files = labels_inputs(labels_path, [s.name for s in sources]) if labels_path is not None else []
    files, folders = input_locations(sources, [cfg.model])
    check_not_input(output, [*files, *labels_files], folders)
    io.check_writable([output], cfg.overwrite)
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
