"""Apply curation models to new units: ``python -m unitrefine.predict`` without the command line.

Models are loaded by :mod:`unitrefine.apply.models` (only with the reviewed trusted types, plus types a user
explicitly trusts) and given features prepared by :mod:`unitrefine.apply.model_inputs` exactly as SpikeInterface
prepares them; labels come from ``pipeline.predict`` as in SpikeInterface, so the predictions are the same as
``model_based_label_units``'. Two models make a cascade: noise vs neural on all units, then the second model
(SUA vs MUA) on the units the first calls neural, like SpikeInterface's ``unitrefine_label_units``.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from unitrefine.apply import predict_io as io
from unitrefine.apply.command_paths import check_not_input, input_path, output_path
from unitrefine.apply.model_inputs import analyzer_metrics, feature_frame
from unitrefine.apply.models import LoadedModel, load_model, load_models, model_folders
from unitrefine.data import analyzers as az
from unitrefine.errors import UnitRefineError
from unitrefine.model.uncertainty import (
    ReviewBudget,
    Stage,
    add_review_queue,
    check_budget,
    decision_threshold,
    parse_review_budget,
)
from unitrefine.options import MODEL_AND_DATA, ApplyOptions, command_options, typed_options

# load_model lives in unitrefine.apply.models; the tests import it from here.
__all__ = [
    "PredictConfig", "PredictResult", "apply_model", "cascade", "check_cascade", "input_locations", "load_model",
    "parse_predict_config", "predict", "predict_source",
]

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class PredictConfig(ApplyOptions):
    """What ``python -m unitrefine.predict`` is asked to do: the options it shares with ``suggest``
    (:class:`~unitrefine.options.ApplyOptions`) and its own. The defaults are ``conf/predict.yaml``'s."""

    model: list[str]
    phy_folder: str | None
    set_properties: bool
    noise_label: str
    review: Any  # a fraction, "10%", or a count of units (unitrefine.model.uncertainty.parse_review_budget)


def parse_predict_config(cfg: DictConfig | dict[str, Any]) -> PredictConfig:
    """Validate a composed ``predict`` config (``model`` may be one string or a list of two); options not given take
    their values in ``conf/predict.yaml``.

    Raises
    ------
    UnitRefineError
        Unknown keys, missing ``model``/``data``/``output``, more than two models, a value of the wrong type, or a
        bad ``review``.
    """
    raw = command_options(cfg, PredictConfig, "predict", ("model", "data", "output"), f"{MODEL_AND_DATA} output=<csv>")
    models = raw["model"] if isinstance(raw["model"], list) else [raw["model"]]
    if not 1 <= len(models) <= 2 or not all(isinstance(m, str) and m for m in models):
        raise UnitRefineError(
            f"model= takes one model, or two for the cascade ([noise_vs_neural, sua_vs_mua]); got {raw['model']!r}."
        )
    raw["model"] = models
    for key in ("trust", "impute_missing"):
        value = raw.get(key) or []
        raw[key] = [value] if isinstance(value, str) else list(value)
    out = typed_options(raw, PredictConfig, "predict")
    if out.n_jobs < 1:
        raise UnitRefineError(f"n_jobs must be >= 1 (got {out.n_jobs}).")
    parse_review_budget(out.review)
    return out


def input_locations(sources: list[io.Source], specs: list[str]) -> tuple[list[Path], list[Path]]:
    """What a command that applies the models ``specs`` to ``sources`` reads: files (metrics tables), and folders
    (analyzers, SpikeInterface export folders, local model folders) that an output must not be inside."""
    files = [s.path for s in sources if not s.path.is_dir()]
    return files, [*(s.path for s in sources if s.path.is_dir()), *model_folders(specs)]


def apply_model(model: LoadedModel, X: pd.DataFrame) -> pd.DataFrame:
    """Predicted label (``pipeline.predict``, as SpikeInterface), confidence and per-class probabilities."""
    codes = [str(c.item() if isinstance(c, np.generic) else c) for c in model.pipeline.classes_]
    name = dict(zip(codes, model.classes))
    pred = model.pipeline.predict(X)
    proba = np.asarray(model.pipeline.predict_proba(X), dtype=np.float64)  # some models give float32 for float32 input
    out = pd.DataFrame({
        "predicted_label": [name[str(p.item() if isinstance(p, np.generic) else p)] for p in pred],
        "confidence": proba.max(axis=1),
    })
    for j, c in enumerate(model.classes):
        out[f"probability_{c}"] = proba[:, j]
    return out


def check_cascade(first: LoadedModel, second: LoadedModel, noise_label: str) -> None:
    """The first model must separate noise; the two must not share class names.

    Raises
    ------
    UnitRefineError
    """
    if noise_label not in first.classes:
        raise UnitRefineError(
            f"The cascade's first model {first.source} has classes {first.classes}, without '{noise_label}'. Give "
            "the noise-vs-neural model first (model=[noise_vs_neural, sua_vs_mua]), or set noise_label=... to its "
            "noise class."
        )
    shared = sorted(set(first.classes) & set(second.classes))
    if shared:
        raise UnitRefineError(
            f"The cascade's models share class names {shared} ({first.source}: {first.classes}; {second.source}: "
            f"{second.classes}). The first should be noise vs neural, the second SUA vs MUA."
        )


def cascade(
    first: LoadedModel, second: LoadedModel, X1: pd.DataFrame, X2: pd.DataFrame, noise_label: str
) -> pd.DataFrame:
    """Noise vs neural on every unit, then the second model on the neural ones (SpikeInterface's cascade)."""
    stage1 = apply_model(first, X1)
    neural = (stage1["predicted_label"] != noise_label).to_numpy()
    out = stage1.copy()
    for c in second.classes:
        out[f"probability_{c}"] = np.nan
    if neural.any():
        stage2 = apply_model(second, X2[neural].reset_index(drop=True))
        idx = np.flatnonzero(neural)
        for col in stage2.columns:
            out.loc[idx, col] = stage2[col].to_numpy()
    return out


def predict_source(src: io.Source, models: list[LoadedModel], cfg: PredictConfig) -> tuple[pd.DataFrame, Any]:
    """Predictions for one input, and its opened analyzer (None for a metrics table).

    Parameters
    ----------
    src : Source
        A metrics table or a SortingAnalyzer folder (:func:`unitrefine.apply.predict_io.discover`).
    models : list of LoadedModel
        One model, or the two of a cascade.
    cfg : PredictConfig
        ``impute_missing``, ``noise_label`` and, for analyzers, ``compute_missing``, ``save_metrics``, ``strict``
        and ``n_jobs`` (outputs are not used here).

    Returns
    -------
    predictions : pandas.DataFrame
        ``recording, unit_id, predicted_label, confidence, probability_<class>...``.
    analyzer : SortingAnalyzer or None
        Free it (``gc.collect()``) once done: analyzers hold reference cycles.
    """
    where = str(src.path)
    analyzer = None
    if src.kind == "analyzer":
        analyzer = az.open_analyzer(src.path)
        ids, metrics = analyzer_metrics(analyzer, models, cfg, where)
    else:
        ids, metrics = io.read_csv_metrics(src.path, [m for model in models for m in model.required_metrics()])
    frames = [feature_frame(metrics, model, where, cfg.impute_missing) for model in models]
    result = apply_model(models[0], frames[0]) if len(models) == 1 else cascade(*models, *frames, cfg.noise_label)
    result.insert(0, "unit_id", ids.to_numpy())
    result.insert(0, "recording", src.name)
    return result, analyzer


@dataclass
class PredictResult:
    """What a prediction run produced."""

    predictions: pd.DataFrame
    output: Path
    phy_files: list[Path]


def _check_review(budget: ReviewBudget | None, sources: list[io.Source], data: str) -> None:
    """A count of units must not exceed the data's units: checked before any work (analyzers are not opened)."""
    if budget is not None and budget.count is not None:
        check_budget(budget, sum(io.count_units(src) for src in sources), f"data={data}")


def _check_phy(phy: Path, n_sources: int, output: Path, cfg: PredictConfig, review: bool) -> None:
    """``phy_folder=``: one recording as ``data=``, a Phy folder whose TSVs may be written and are not ``output``."""
    if n_sources != 1:
        raise UnitRefineError(f"phy_folder needs a single recording as data=; {cfg.data} holds {n_sources}.")
    io.check_phy_folder(phy)
    phy_outputs = io.phy_files(phy, review=review)
    check_not_input(output, [*phy_outputs, phy / "cluster_group.tsv"])
    io.check_writable(phy_outputs, cfg.overwrite, "phy_folder")


def _write_outputs(predictions: pd.DataFrame, analyzers: dict[str, Any], output: Path, phy: Path | None,
                   cfg: PredictConfig) -> list[Path]:
    """The predictions CSV, the Phy TSVs and the analyzers' sorting properties."""
    io.write_predictions(predictions, output)
    written = []
    if phy is not None:
        written = io.write_phy(phy, predictions["unit_id"], predictions["predicted_label"], predictions["confidence"])
        if "needs_review" in predictions.columns:
            written.append(io.write_phy_review(phy, predictions["unit_id"], predictions["needs_review"],
                                               predictions["review_rank"]))
    if cfg.set_properties:
        for name in [n for n, a in analyzers.items() if a is not None]:
            io.set_properties(analyzers[name], predictions[predictions["recording"] == name])
    return written


def predict(cfg: PredictConfig) -> PredictResult:
    """Apply one model (or a two-model cascade) to every unit of the input and write the outputs.

    With ``review``, the units the models are least sure about (:mod:`unitrefine.model.uncertainty`) make a review
    queue over all units of the command: ``needs_review`` and ``review_rank`` columns, a Phy
    ``cluster_unitrefine_review.tsv`` and analyzer properties.

    Parameters
    ----------
    cfg : PredictConfig

    Returns
    -------
    PredictResult

    Raises
    ------
    UnitRefineError
        For bad input, models, a review budget larger than the data, or outputs that are folders, cannot be
        written, are inputs or exist (without ``overwrite``); inputs, outputs and the budget are checked before
        work. Relative input paths are found as :func:`unitrefine.apply.command_paths.input_path` finds them.
    """
    sources = io.discover(input_path(cfg.data, "data"))
    output = output_path(cfg.output)
    phy = input_path(cfg.phy_folder, "phy_folder") if cfg.phy_folder else None
    budget = parse_review_budget(cfg.review)
    check_not_input(output, *input_locations(sources, cfg.model))
    io.check_writable([output], cfg.overwrite)
    if phy is not None:
        _check_phy(phy, len(sources), output, cfg, review=budget is not None)
    _check_review(budget, sources, cfg.data)
    models = load_models(cfg.model, cfg.trust, cfg.tracking_uri)
    if len(models) == 2:
        check_cascade(models[0], models[1], cfg.noise_label)
    tables, analyzers = [], {}
    for src in sources:
        table, analyzers[src.name] = predict_source(src, models, cfg)
        tables.append(table)
    predictions = pd.concat(tables, ignore_index=True)
    if budget is not None:
        stages = [Stage(m.classes, decision_threshold(m.pipeline)) for m in models]
        predictions = add_review_queue(predictions, stages, budget)
    written = _write_outputs(predictions, analyzers, output, phy, cfg)
    # SpikeInterface's analyzer extensions raise in __del__ when they are only collected at interpreter exit
    # (analyzers hold reference cycles): free them now.
    analyzers.clear()
    gc.collect()
    counts = predictions["predicted_label"].value_counts().to_dict()
    log.info("Predicted %d units of %d recording(s): %s. Wrote %s%s.", len(predictions), len(sources), counts, output,
             "".join(f", {p}" for p in written))
    if budget is not None:
        log.info("Review queue (review=%s, %s): %d of %d units need review (needs_review, review_rank 1 = look first).",
                 cfg.review, budget.describe(), int(predictions["needs_review"].sum()), len(predictions))
    return PredictResult(predictions, output, written)
