"""Apply curation models to new units: ``python -m unitrefine.predict`` without the command line.

Models come from a folder (ours, or one SpikeInterface's ``train_model`` wrote) or from the registry
(``models:/<name>@<alias>``) and are loaded only with the reviewed trusted types (plus types a user
explicitly trusts). Features are prepared exactly as SpikeInterface does before it calls a model (old metric
names mapped, float32, ±inf -> NaN), and labels come from ``pipeline.predict`` as in SpikeInterface, so the
predictions are the same as ``model_based_label_units``'. Two models make a cascade: noise vs neural on all
units, then the second model (SUA vs MUA) on the units the first calls neural, like SpikeInterface's
``unitrefine_label_units``.
"""

from __future__ import annotations

import gc
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from unitrefine.apply import predict_io as io
from unitrefine.apply.command_paths import check_not_input, input_path, output_path
from unitrefine.data import analyzers as az
from unitrefine.data import si_metrics as sm
from unitrefine.data.dataset import RENAMED_METRICS, current_metric_name
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
from unitrefine.search.estimators import TRUSTED_TYPES

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


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model and what prediction needs to know about it."""

    source: str
    pipeline: Any
    info: dict[str, Any]
    features: list[str]
    classes: list[str]

    def required_metrics(self) -> list[str]:
        """The metric columns the model needs, by their current SpikeInterface names."""
        return list(dict.fromkeys(current_metric_name(f) for f in self.features))


def _class_names(pipeline: Any, info: dict[str, Any], source: str) -> list[str]:
    conversion = {str(k): str(v) for k, v in (info.get("label_conversion") or {}).items()}
    codes = [str(c.item() if isinstance(c, np.generic) else c) for c in pipeline.classes_]
    if not conversion:
        return codes
    unknown = [c for c in codes if c not in conversion]
    if unknown:
        raise UnitRefineError(
            f"Model {source}: model_info.json label_conversion {conversion} does not name the model's classes {unknown}."
        )
    return [conversion[c] for c in codes]


def load_model(spec: str, trust: list[str], tracking_uri: str | None, workdir: Path) -> LoadedModel:
    """Load a model folder or a registered model (``models:/name@alias``) with the reviewed trusted types.

    Parameters
    ----------
    spec : str
        A model folder, or ``models:/<name>@<alias>`` / ``models:/<name>/<version>``.
    trust : list of str
        Types to trust beyond :data:`~unitrefine.search.estimators.TRUSTED_TYPES`, explicitly chosen by the user.
    tracking_uri : str or None
        Registry store for ``models:/`` URIs (None: the project's ``mlruns/mlflow.db``).
    workdir : Path
        Where a registered model's folder is downloaded.

    Returns
    -------
    LoadedModel

    Raises
    ------
    UnitRefineError
        Missing folder or registry entry, untrusted types (named), or a file that is not a usable pipeline.
    """
    from unitrefine.export.folder import load_model_folder
    from unitrefine.tracking.registry import download_model_folder, is_registry_uri

    if is_registry_uri(spec):
        if tracking_uri is None:
            from unitrefine.config import PROJECT_ROOT
            from unitrefine.tracking.tracker import default_tracking_uri

            tracking_uri = default_tracking_uri(PROJECT_ROOT)
        folder = download_model_folder(spec, tracking_uri, workdir)
    else:
        folder = input_path(spec, "model")
    extra = sorted(set(trust) - set(TRUSTED_TYPES))
    if extra:
        log.warning("Trusting types beyond the reviewed list, as asked (trust=): %s", extra)
    pipeline, info = load_model_folder(folder, trusted=[*TRUSTED_TYPES, *extra])
    if not all(hasattr(pipeline, a) for a in ("feature_names_in_", "predict_proba", "classes_")):
        raise UnitRefineError(
            f"Model {spec}: {type(pipeline).__name__} is not a fitted pipeline trained on a metrics DataFrame "
            "(it needs feature_names_in_, classes_ and predict_proba)."
        )
    return LoadedModel(spec, pipeline, info, [str(f) for f in pipeline.feature_names_in_],
                       _class_names(pipeline, info, spec))


def model_folders(specs: list[str]) -> list[Path]:
    """The local model folders of ``model=`` (registered models are left out), found as :func:`load_model` finds them.

    Raises
    ------
    UnitRefineError
        A relative path found neither in the working directory nor in the project.
    """
    from unitrefine.tracking.registry import is_registry_uri

    paths = [input_path(spec, "model") for spec in specs if not is_registry_uri(spec)]
    return [p.parent if p.is_file() else p for p in paths]


def input_locations(sources: list[io.Source], specs: list[str]) -> tuple[list[Path], list[Path]]:
    """What a command that applies the models ``specs`` to ``sources`` reads: files (metrics tables), and folders
    (analyzers, SpikeInterface export folders, local model folders) that an output must not be inside."""
    files = [s.path for s in sources if not s.path.is_dir()]
    return files, [*(s.path for s in sources if s.path.is_dir()), *model_folders(specs)]


def load_models(specs: list[str], trust: list[str], tracking_uri: str | None) -> list[LoadedModel]:
    """Load each model of ``specs`` with :func:`load_model`; registered models are downloaded to a temporary folder.

    Raises
    ------
    UnitRefineError
        As :func:`load_model`.
    """
    with tempfile.TemporaryDirectory(prefix="unitrefine-predict-") as tmp:
        return [load_model(spec, trust, tracking_uri, Path(tmp) / f"model{i}") for i, spec in enumerate(specs)]


def missing_metrics_message(missing: list[str], where: str, model: LoadedModel) -> str:
    """What is missing, and how to compute it with SpikeInterface."""
    wanted, custom = sm.metrics_for_columns(missing)
    how = [f"analyzer.compute('{ext}', metric_names={names})" for ext, names in wanted.items() if names]
    text = f"{where} lacks metrics {missing} that model {model.source} needs."
    if how:
        text += (f" Compute them with SpikeInterface ({'; '.join(how)}, with the parameters in the model's "
                 "model_info.json), or pass the SortingAnalyzer folder as data=, which computes them.")
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
            f"The cascade's first model {first.source} has classes {first.classes}, without '{noise_label}'. Give the "
            "noise-vs-neural model first (model=[noise_vs_neural, sua_vs_mua]), or set noise_label=... to its noise class."
        )
    shared = sorted(set(first.classes) & set(second.classes))
    if shared:
        raise UnitRefineError(
            f"The cascade's models share class names {shared} ({first.source}: {first.classes}; {second.source}: "
            f"{second.classes}). The first should be noise vs neural, the second SUA vs MUA."
        )


def cascade(first: LoadedModel, second: LoadedModel, X1: pd.DataFrame, X2: pd.DataFrame, noise_label: str) -> pd.DataFrame:
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


def _model_requested(model: LoadedModel) -> dict[str, dict[str, Any]]:
    stored = model.info.get("metric_params") or {}
    out = {}
    for ext in sm.EXTENSIONS:
        entry = stored.get(sm.info_key(ext)) or {}
        params = {k: v for k, v in entry.items() if k not in sm.RUN_KEYS}
        out[ext] = {"metric_params": dict(entry.get("metric_params") or {}), "params": params}
    return out


def analyzer_metrics(analyzer: Any, models: list[LoadedModel], cfg: PredictConfig, where: str) -> tuple[pd.Series, pd.DataFrame]:
    """Make sure the metrics the models need are on the analyzer (with the models' parameters), then read them.

    Metrics already there whose parameters differ from a model's are a warning (an error with ``strict``).
    """
    needed = list(dict.fromkeys(m for model in models for m in model.required_metrics()))
    wanted, _ = sm.metrics_for_columns(needed)
    if cfg.compute_missing:
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
    for model in models:
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
            if cfg.strict:
                raise UnitRefineError(msg + " (strict=true)")
            log.warning(msg)
        if unknown and cfg.strict:
            raise UnitRefineError(
                f"{where}: model {model.source} does not record the parameters of {unknown} (trained from CSVs?), so "
                "they cannot be checked (strict=true). Set strict=false to predict anyway."
            )
    return az.read_metrics(analyzer)


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
        if len(sources) != 1:
            raise UnitRefineError(f"phy_folder needs a single recording as data=; {cfg.data} holds {len(sources)}.")
        io.check_phy_folder(phy)
        phy_outputs = io.phy_files(phy, review=budget is not None)
        check_not_input(output, [*phy_outputs, phy / "cluster_group.tsv"])
        io.check_writable(phy_outputs, cfg.overwrite, "phy_folder")
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
