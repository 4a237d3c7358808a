"""What loaded models (:mod:`unitrefine.apply.models`) are given: an analyzer's metrics, computed where missing and
checked against the parameters the models were trained with, and each model's feature frame, prepared exactly as
SpikeInterface prepares it before it calls a model (old metric names mapped, float32, ±inf -> NaN)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from unitrefine.apply.models import LoadedModel
from unitrefine.data import analyzers as az
from unitrefine.data import si_metrics as sm
from unitrefine.data.metric_names import RENAMED_METRICS, current_metric_name
from unitrefine.errors import UnitRefineError
from unitrefine.export.model_info import INFO_FILE
from unitrefine.options import ApplyOptions

log = logging.getLogger(__name__)


def missing_metrics_message(missing: list[str], where: str, model: LoadedModel) -> str:
    """What is missing, and how to compute it with SpikeInterface."""
    wanted, custom = sm.metrics_for_columns(missing)
    how = [f"analyzer.compute('{ext}', metric_names={names})" for ext, names in wanted.items() if names]
    text = f"{where} lacks metrics {missing} that model {model.source} needs."
    if how:
        text += (f" Compute them with SpikeInterface ({'; '.join(how)}, with the parameters in the model's "
                 f"{INFO_FILE}), or pass the SortingAnalyzer folder as data=, which computes them.")
    if custom:
        text += f" {custom} are not SpikeInterface metrics: compute them as the model's training data did."
    text += (f" Or, if the model may impute them (its training data lacked them on some recordings), set "
             f"impute_missing=[{','.join(missing)}].")
    return text


def feature_frame(
    metrics: pd.DataFrame, model: LoadedModel, where: str, impute: list[str] | None = None
) -> pd.DataFrame:
    """The model's input: its features in its order and naming, float32, ±inf -> NaN (as SpikeInterface).

    ``metrics`` uses current SpikeInterface names; a model trained with an old name gets the renamed
    column (with the sign flipped where SpikeInterface flips it). Extra columns are ignored. Missing metrics
    are an error, except those in ``impute``: they are NaN, left to the model's imputer (with a warning).
    Values the model sees as missing (±inf, beyond float32) and metrics with no usable value for any unit are
    a warning naming the metric, ``where`` and the units (by ``metrics``' index when it holds the unit ids).
    """
    from unitrefine.data.tables import warn_unusable_values

    allowed = {current_metric_name(m) for m in impute or []}
    missing = [m for m in model.required_metrics() if m not in metrics.columns]
    if [m for m in missing if m not in allowed]:
        raise UnitRefineError(missing_metrics_message([m for m in missing if m not in allowed], where, model))
    if missing:
        log.warning("%s lacks metrics %s: they are imputed by model %s (impute_missing).", where, missing, model.source)
    columns = {}
    for f in model.features:
        sign = RENAMED_METRICS[f][1] if f in RENAMED_METRICS else 1.0
        current = current_metric_name(f)
        values = metrics[current] if current in metrics.columns else pd.Series(np.nan, index=metrics.index)
        columns[f] = pd.to_numeric(values, errors="coerce") * sign
    present = [m for m in model.required_metrics() if m not in missing]
    units = None if isinstance(metrics.index, pd.RangeIndex) else [str(u) for u in metrics.index]
    warn_unusable_values(metrics[present].apply(pd.to_numeric, errors="coerce"), units,
                         f"{where} (model {model.source})", "the model sees it as missing for every unit and predicts "
                         "from the other metrics alone. Recompute the metric, or check how the table was exported.")
    with np.errstate(over="ignore"):
        X = pd.DataFrame(columns).astype("float32")
    return X.replace([np.inf, -np.inf], np.nan)


def _model_requested(model: LoadedModel) -> dict[str, dict[str, Any]]:
    stored = model.info.get("metric_params") or {}
    out = {}
    for ext in sm.EXTENSIONS:
        entry = stored.get(sm.info_key(ext)) or {}
        params = {k: v for k, v in entry.items() if k not in sm.RUN_KEYS}
        out[ext] = {"metric_params": dict(entry.get("metric_params") or {}), "params": params}
    return out


def _compute_missing(analyzer: Any, models: list[LoadedModel], cfg: ApplyOptions, where: str) -> None:
    """Compute the metrics the models need that the analyzer lacks, with the (first) model's parameters."""
    needed = list(dict.fromkeys(m for model in models for m in model.required_metrics()))
    wanted, _ = sm.metrics_for_columns(needed)
    requested = _model_requested(models[0])
    for model in models[1:]:
        for ext, req in _model_requested(model).items():
            for name, params in req["metric_params"].items():
                requested[ext]["metric_params"].setdefault(name, params)
    unknown = [n for ext, names in wanted.items() for n in names
               if n not in requested[ext]["metric_params"] and n not in az.computed_metric_names(analyzer, ext)]
    if unknown:
        log.warning("%s: the model does not record the parameters of %s; they are computed with SpikeInterface's "
                    "defaults.", where, unknown)
    az.ensure_metrics(analyzer, wanted, requested, extensions={}, n_jobs=cfg.n_jobs, save=cfg.save_metrics,
                      recompute=False, where=where)


def _check_params(analyzer: Any, model: LoadedModel, strict: bool, where: str) -> None:
    """Metrics on the analyzer whose parameters differ from the model's: a warning (an error with ``strict``)."""
    stored = model.info.get("metric_params") or {}
    own, _ = sm.metrics_for_columns(model.required_metrics())
    differ, unknown = [], []
    for ext, names in own.items():
        present = [n for n in names if n in az.computed_metric_names(analyzer, ext)]
        actual = az.extension_params(analyzer, ext)
        d, u = sm.compare_params(stored.get(sm.info_key(ext)), actual, present)
        differ += [f"{n} (analyzer {sm.describe_params(actual, n)}, model "
                   f"{sm.describe_params(stored.get(sm.info_key(ext)), n)})" for n in d]
        unknown += u
    if differ:
        msg = (f"{where}: metrics computed with other parameters than model {model.source} was trained with: "
               f"{'; '.join(differ)}. Predictions may be off: recompute them with the model's parameters.")
        if strict:
            raise UnitRefineError(msg + " (strict=true)")
        log.warning(msg)
    if unknown and strict:
        raise UnitRefineError(
            f"{where}: model {model.source} does not record the parameters of {unknown} (trained from CSVs?), so "
            "they cannot be checked (strict=true). Set strict=false to predict anyway."
        )


def analyzer_metrics(
    analyzer: Any, models: list[LoadedModel], cfg: ApplyOptions, where: str
) -> tuple[pd.Series, pd.DataFrame]:
    """Make sure the metrics the models need are on the analyzer (with the models' parameters), then read them.

    Metrics already there whose parameters differ from a model's are a warning (an error with ``cfg.strict``),
    checked before anything is computed, so that a refusal leaves the user's analyzer as it was. Then, only with
    ``cfg.compute_missing``, the metrics the analyzer lacks are computed with the models' parameters.
    """
    for model in models:
        _check_params(analyzer, model, cfg.strict, where)
    if cfg.compute_missing:
        _compute_missing(analyzer, models, cfg, where)
    return az.read_metrics(analyzer)
