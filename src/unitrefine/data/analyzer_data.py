"""Analyzer mode of the dataset loader: SortingAnalyzer folders + labels -> the same UnitTable as CSV mode.

Each recording names an ``analyzer`` folder (binary folder or ``.zarr``) and its labels: a Phy
``cluster_group.tsv`` or a CSV of unit id + label (``labels``), or a sorting property of the analyzer
(``dataset.label_property``, e.g. ``quality``). Metrics the features need and an analyzer lacks are computed
(:func:`unitrefine.data.analyzers.ensure_metrics`) and saved on it; the parameters actually used are returned in
the table's ``metric_params``, the form ``model_info.json`` stores.

The Python API hands SortingAnalyzer objects over in memory instead (:func:`given_analyzers`), with their
labels, and computes what some lack as the others computed it (:func:`stored_compute`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from unitrefine.config import DatasetConfig, MetricsConfig, RecordingConfig, TaskConfig
from unitrefine.data import analyzers as az
from unitrefine.data import si_metrics as sm
from unitrefine.data.dataset import UnitTable, check_dataset, combine_recordings
from unitrefine.data.recordings import check_labelled_units, prepare_recording
from unitrefine.data.tables import read_labels
from unitrefine.errors import UnitRefineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GivenAnalyzer:
    """A SortingAnalyzer object handed over in memory (by :func:`unitrefine.api.train_model`) and its labels."""

    analyzer: Any
    labels: pd.Series  # curation labels indexed by unit id (strings)


#: Recording ``analyzer`` reference -> the object given for it, while :func:`given_analyzers` is active.
_GIVEN: ContextVar[Mapping[str, GivenAnalyzer]] = ContextVar("unitrefine_given_analyzers", default=MappingProxyType({}))


@contextmanager
def given_analyzers(given: Mapping[str, GivenAnalyzer]) -> Iterator[None]:
    """Within the block, a recording whose ``analyzer`` is a key of ``given`` uses that object and its labels
    instead of opening a folder and reading a labels file.

    Parameters
    ----------
    given : mapping
        Reference (the recording's ``analyzer`` entry, e.g. ``analyzers[0]``) -> :class:`GivenAnalyzer`.
    """
    token = _GIVEN.set(MappingProxyType(dict(given)))
    try:
        yield
    finally:
        _GIVEN.reset(token)


def stored_compute(analyzers: Sequence[Any]) -> dict[str, Any]:
    """A ``dataset.compute`` section computing what some ``analyzers`` lack as the others computed it.

    Every metric an analyzer holds is wanted on all of them. One lacking it computes it with the parameters
    stored by the first analyzer holding it (extension-level parameters too, for a new extension), so that
    all agree.

    Parameters
    ----------
    analyzers : list of SortingAnalyzer
        The analyzers of a dataset, in order.

    Returns
    -------
    dict
        ``{"quality_metrics": {"metric_names", "metric_params", "params"}, "template_metrics": {...},
        "pca_metrics": bool}``, ``pca_metrics`` false when some analyzer lacks a PCA metric another holds
        (computing those stays opt-in); empty when no analyzer holds metrics, so that SpikeInterface's
        default lists are computed.
    """
    stored = [{ext: az.extension_params(a, ext) for ext in sm.EXTENSIONS} for a in analyzers]
    if not any(p for s in stored for p in s.values()):
        return {}
    compute: dict[str, Any] = {}
    lacked_pca = False
    for ext in sm.EXTENSIONS:
        holders = [s[ext] for s in stored if s[ext] is not None]
        names = list(dict.fromkeys(n for h in holders for n in h["metric_names"]))
        lacked = [n for n in names if any(s[ext] is None or n not in s[ext]["metric_names"] for s in stored)]
        metric_params: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for h in holders:
            for n in h["metric_names"]:
                metric_params.setdefault(n, h["metric_params"][n])
            for key, value in h.items():
                if key not in ("metric_names", "metric_params"):
                    params.setdefault(key, value)
        compute[ext] = {"metric_names": names, "params": params,
                        "metric_params": {n: metric_params[n] for n in lacked}}
        lacked_pca = lacked_pca or any(n in sm.pca_metric_names() for n in lacked)
    compute["pca_metrics"] = not lacked_pca
    return compute


def _plain(d: Any) -> dict[str, Any]:
    """A config mapping (DictConfig or dict) as a plain dict."""
    if d is None:
        return {}
    if OmegaConf.is_config(d):
        out = OmegaConf.to_container(d, resolve=True)
        assert isinstance(out, dict)
        return out
    return dict(d)


def _configured_names(dataset: DatasetConfig, ext: str, metrics: MetricsConfig) -> list[str]:
    pca = set(sm.pca_metric_names())
    known = sm.available_metric_names(ext)
    key = f"dataset.compute.{ext}"
    if metrics.metric_names is None:
        names = sm.default_metric_names(ext, pca=dataset.compute.pca_metrics)
    else:
        names = list(metrics.metric_names)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UnitRefineError(f"{key}.metric_names: unknown metrics {unknown}; SpikeInterface knows {known}.")
    slow = [n for n in names if n in pca]
    if slow and not dataset.compute.pca_metrics:
        raise UnitRefineError(
            f"{key}.metric_names lists PCA-based metrics {slow}. They are slow (minutes for 50 units on 2 cores), so "
            "they are opt-in: set dataset.compute.pca_metrics=true, or leave them out."
        )
    return names


def _check_metric_params(ext: str, metrics: MetricsConfig) -> None:
    known = sm.available_metric_names(ext)
    bad = sorted(set(_plain(metrics.metric_params)) - set(known))
    if bad:
        raise UnitRefineError(
            f"dataset.compute.{ext}.metric_params names unknown metrics {bad}; SpikeInterface knows {known}."
        )


def wanted_metrics(dataset: DatasetConfig) -> tuple[dict[str, list[str]], list[str]]:
    """The metrics to make sure of on every analyzer, and the PCA columns wanted but not computed (opt-in).

    With ``dataset.metric_names`` the metrics producing those columns; otherwise the configured (or default)
    quality and template metric names.
    """
    configured = ((sm.QUALITY, dataset.compute.quality_metrics), (sm.TEMPLATE, dataset.compute.template_metrics))
    for ext, metrics in configured:
        _check_metric_params(ext, metrics)
    if dataset.metric_names is None:
        return {ext: _configured_names(dataset, ext, metrics) for ext, metrics in configured}, []
    wanted, _ = sm.metrics_for_columns(dataset.metric_names)
    pca = set(sm.pca_metric_names())
    skipped: list[str] = []
    if not dataset.compute.pca_metrics:
        catalogue = sm.metric_catalogue()
        skipped = [c for c in dataset.metric_names if c in catalogue and catalogue[c][1] in pca]
        wanted[sm.QUALITY] = [n for n in wanted[sm.QUALITY] if n not in pca]
    return wanted, skipped


def requested_params(dataset: DatasetConfig) -> dict[str, dict[str, Any]]:
    """Extension -> the configured ``metric_params`` and extension-level ``params``."""
    return {
        ext: {"metric_params": _plain(m.metric_params), "params": _plain(m.params)}
        for ext, m in ((sm.QUALITY, dataset.compute.quality_metrics), (sm.TEMPLATE, dataset.compute.template_metrics))
    }


def _open(rec: RecordingConfig, root: Path) -> tuple[Any, Path]:
    """The recording's analyzer (the object given in memory, or its folder opened) and its path, for messages."""
    assert rec.analyzer is not None  # validated with the config
    given = _GIVEN.get().get(rec.analyzer)
    if given is not None:
        return given.analyzer, Path(rec.analyzer)
    path = root / Path(rec.analyzer).expanduser()
    return az.open_analyzer(path), path


def _labels(
    rec: RecordingConfig, dataset: DatasetConfig, analyzer: Any, root: Path, where: str
) -> tuple[pd.Series, str]:
    given = _GIVEN.get().get(str(rec.analyzer))
    if given is not None:
        return given.labels, str(rec.labels or rec.analyzer)
    if rec.labels is not None:
        path = root / Path(rec.labels).expanduser()
        return read_labels(path), str(path)
    assert dataset.label_property is not None  # validated with the config
    labels = az.sorting_labels(analyzer, dataset.label_property, where)
    return labels, f"{where} sorting property '{dataset.label_property}'"


def _check_configured(analyzer: Any, requested: dict[str, dict[str, Any]], where: str, strict: bool) -> None:
    """Metrics already on the analyzer whose parameters differ from the configured overrides: warn (strict: error)."""
    differ = []
    for ext, req in requested.items():
        overrides = req["metric_params"]
        actual = az.extension_params(analyzer, ext)
        if not overrides or actual is None:
            continue
        defaults = sm.extension_class(ext).get_default_metric_params()
        wanted = {"metric_params": {m: {**defaults[m], **dict(p or {})} for m, p in overrides.items()}}
        names = [m for m in overrides if m in actual["metric_names"]]
        differ += [
            f"{m} (analyzer {sm.describe_params(actual, m)}, config {sm.describe_params(wanted, m)})"
            for m in sm.compare_params(wanted, actual, names)[0]
        ]
    if differ:
        msg = (
            f"{where} already holds metrics computed with other parameters than configured: {'; '.join(differ)}. "
            "They are used as they are; set dataset.compute.recompute=true to recompute them."
        )
        if strict:
            raise UnitRefineError(msg + " (dataset.strict is set)")
        log.warning(msg)


def consistent_params(
    per_recording: dict[str, dict[str, dict[str, Any] | None]], features: list[str], strict: bool
) -> dict[str, dict[str, Any]]:
    """``model_info.json`` ``metric_params`` for ``features``: the parameters every analyzer agrees on.

    Metrics (or extension-level parameters) computed differently on different analyzers are named in a
    warning (an error when ``strict``) and left out, so that SpikeInterface's ``enforce_metric_params=True``
    refuses the model rather than trusting parameters that were not used throughout.
    """
    wanted, _ = sm.metrics_for_columns(features)
    out: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for ext in sm.EXTENSIONS:
        entry: dict[str, Any] = {"metric_names": wanted[ext], "metric_params": {}}
        present = {rid: p[ext] for rid, p in per_recording.items() if p.get(ext) is not None}
        for name in wanted[ext]:
            values = {rid: p["metric_params"][name] for rid, p in present.items() if name in p["metric_params"]}
            distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
            if len(distinct) == 1:
                entry["metric_params"][name] = next(iter(values.values()))
            elif distinct:
                found = "; ".join(f"{r} {json.dumps(v, sort_keys=True)}" for r, v in values.items())
                problems.append(f"{ext} '{name}': {found}")
        if wanted[ext]:
            keys = sorted({k for p in present.values() for k in p} - {"metric_names", "metric_params"})
            for key in keys:
                values = {rid: p.get(key) for rid, p in present.items()}
                distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
                if len(distinct) == 1:
                    entry[key] = next(iter(values.values()))
                else:
                    problems.append(f"{ext} parameter '{key}': " + "; ".join(f"{r} {v!r}" for r, v in values.items()))
        out[sm.info_key(ext)] = entry
    if problems:
        msg = (
            "Analyzers computed metrics with different parameters: " + " | ".join(problems) + ". Their parameters "
            "are left out of model_info.json, so SpikeInterface's enforce_metric_params=True will refuse the model. "
            "Recompute them alike (dataset.compute.recompute=true)."
        )
        if strict:
            raise UnitRefineError(msg + " (dataset.strict is set)")
        log.warning(msg)
    return out


def _lacking(columns: dict[str, list[str]], wanted: list[str]) -> dict[str, list[str]]:
    """Recording -> the ``wanted`` metrics its columns lack (recordings lacking none are left out)."""
    lacking = {rid: [c for c in wanted if c not in cols] for rid, cols in columns.items()}
    return {rid: cols for rid, cols in lacking.items() if cols}


# Over 60 lines: its numpydoc docstring; the code is 49 lines.
def load_analyzer_dataset(dataset: DatasetConfig, task: TaskConfig, root: Path) -> UnitTable:
    """Load every recording of an analyzer-mode dataset, computing the metrics it lacks.

    Parameters
    ----------
    dataset : DatasetConfig
        ``mode: analyzers``; each recording has an ``analyzer`` folder and ``labels`` (or
        ``dataset.label_property``).
    task : TaskConfig
        The label mapping.
    root : Path
        Relative paths are resolved against it.

    Returns
    -------
    UnitTable
        As :func:`unitrefine.data.loading.load_dataset`, with ``metric_params`` set.

    Raises
    ------
    UnitRefineError
        Missing or damaged analyzers, labels for unknown units, metrics that cannot be computed, and with
        ``dataset.strict`` analyzers whose metric sets or parameters differ.
    """
    dataset = check_dataset(dataset, task)
    wanted, skipped_pca = wanted_metrics(dataset)
    # Metrics named by the user must be computed; SpikeInterface's default lists skip what cannot be.
    explicit = {
        sm.QUALITY: dataset.metric_names is not None or dataset.compute.quality_metrics.metric_names is not None,
        sm.TEMPLATE: dataset.metric_names is not None or dataset.compute.template_metrics.metric_names is not None,
    }
    requested = requested_params(dataset)
    if dataset.generate is not None:
        from unitrefine.data.synthetic import ensure_recordings

        ensure_recordings(dataset, root, wanted)
    frames: dict[str, pd.DataFrame] = {}
    params: dict[str, dict[str, dict[str, Any] | None]] = {}
    for rec in dataset.recordings:
        analyzer, path = _open(rec, root)
        where = f"Recording '{rec.id}' ({path})"
        labels, source = _labels(rec, dataset, analyzer, root, where)
        # Before any metric is computed and saved into the user's analyzer.
        check_labelled_units(pd.Series([str(u) for u in analyzer.unit_ids]), labels, source, path)
        for ext in sm.EXTENSIONS:
            az.ensure_metrics(
                analyzer, {ext: wanted[ext]}, requested, extensions=_plain(dataset.compute.extensions),
                n_jobs=dataset.compute.n_jobs, save=dataset.compute.save, recompute=dataset.compute.recompute,
                where=where, required=explicit[ext],
            )
        if not dataset.compute.recompute:
            _check_configured(analyzer, requested, where, dataset.strict)
        ids, metrics = az.read_metrics(analyzer)
        frames[rec.id] = prepare_recording(rec.id, ids, metrics, labels, source, path, dataset, task)
        params[rec.id] = {ext: az.extension_params(analyzer, ext) for ext in sm.EXTENSIONS}
    columns = {rid: [c for c in f.columns if not c.startswith("__")] for rid, f in frames.items()}
    if skipped_pca:
        lacking = _lacking(columns, skipped_pca)
        if lacking:
            raise UnitRefineError(
                f"dataset.metric_names asks for PCA-based metrics that analyzers lack ({lacking}). They are slow "
                "(minutes for 50 units on 2 cores), so computing them is opt-in: set dataset.compute.pca_metrics=true."
            )
    if dataset.strict:
        union = dataset.metric_names or list(dict.fromkeys(c for cols in columns.values() for c in cols))
        lacking = _lacking(columns, union)
        if lacking:
            raise UnitRefineError(
                f"Analyzers hold different metric sets: {lacking} lack metrics others have (dataset.strict is set). "
                "Compute them on every analyzer, or choose the features with dataset.metric_names."
            )
    table = combine_recordings(frames, dataset, task)
    return replace(table, metric_params=consistent_params(params, list(table.X.columns), dataset.strict))
