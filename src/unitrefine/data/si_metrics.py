"""What SpikeInterface's metric extensions hold: metric names, their columns and defaults, and their
parameters normalised, stored and compared.

Parameters are handled JSON-normalised (tuples become lists) everywhere: that is how SpikeInterface reads
them back from disk and from ``model_info.json``, so parameters compared or stored here compare equal to
the ones SpikeInterface's ``model_based_label_units(..., enforce_metric_params=True)`` sees. SpikeInterface
is imported lazily.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

QUALITY = "quality_metrics"
TEMPLATE = "template_metrics"
EXTENSIONS = (QUALITY, TEMPLATE)
#: Keys of a metric extension's params that say what was run, not how: never stored or compared.
RUN_KEYS = frozenset({"metric_names", "metrics_to_compute", "delete_existing_metrics", "metric_params", "periods"})
_INFO_KEYS = {QUALITY: "quality_metric_params", TEMPLATE: "template_metric_params"}


def info_key(extension: str) -> str:
    """The ``model_info.json`` ``metric_params`` key of an extension (``quality_metric_params``, ...)."""
    return _INFO_KEYS[extension]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def json_normalise(obj: Any) -> Any:
    """``obj`` as it comes back from JSON: tuples -> lists, numpy scalars/arrays -> Python values/lists."""
    return json.loads(json.dumps(obj, default=_json_default))


def _canonical(obj: Any) -> str:
    return json.dumps(json_normalise(obj), sort_keys=True)


@lru_cache(maxsize=1)
def metric_catalogue() -> dict[str, tuple[str, str]]:
    """Every SpikeInterface quality/template metric column -> (extension name, metric name)."""
    from spikeinterface.metrics import ComputeQualityMetrics, ComputeTemplateMetrics

    out: dict[str, tuple[str, str]] = {}
    for cls in (ComputeQualityMetrics, ComputeTemplateMetrics):
        for metric in cls.metric_list:
            for column in metric.metric_columns:
                out.setdefault(column, (cls.extension_name, metric.metric_name))
    return out


def extension_class(extension: str) -> Any:
    """SpikeInterface's ``ComputeQualityMetrics`` or ``ComputeTemplateMetrics``."""
    from spikeinterface.metrics import ComputeQualityMetrics, ComputeTemplateMetrics

    return {QUALITY: ComputeQualityMetrics, TEMPLATE: ComputeTemplateMetrics}[extension]


def pca_metric_names() -> list[str]:
    """Quality metrics computed from principal components (slow)."""
    from spikeinterface.metrics.quality.pca_metrics import pca_metrics_list

    return [m.metric_name for m in pca_metrics_list]


def available_metric_names(extension: str) -> list[str]:
    """The metric names SpikeInterface knows for ``extension``."""
    return extension_class(extension).get_available_metric_names()


def default_metric_names(extension: str, pca: bool = False) -> list[str]:
    """What is computed when the config names no metrics: SpikeInterface's defaults, PCA metrics only if asked.

    Quality: every metric but ``nn_advanced`` (as SpikeInterface), without the PCA ones unless ``pca``.
    Template: the single-channel metrics (SpikeInterface adds the multi-channel ones from 64 channels up).
    """
    if extension == TEMPLATE:
        from spikeinterface.metrics.template.template_metrics import get_single_channel_template_metric_names

        return list(get_single_channel_template_metric_names())
    skip = {"nn_advanced"} | (set() if pca else set(pca_metric_names()))
    return [m for m in available_metric_names(QUALITY) if m not in skip]


def metrics_for_columns(columns: Iterable[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The SpikeInterface metrics that produce ``columns``, per extension, and the columns no metric produces."""
    catalogue = metric_catalogue()
    wanted: dict[str, list[str]] = {ext: [] for ext in EXTENSIONS}
    unknown = []
    for column in columns:
        if column not in catalogue:
            unknown.append(column)
            continue
        ext, name = catalogue[column]
        if name not in wanted[ext]:
            wanted[ext].append(name)
    return wanted, unknown


def compare_params(
    stored: Mapping[str, Any] | None, actual: Mapping[str, Any] | None, names: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Compare the parameters of ``names`` (metrics of one extension) in two :func:`extension_params` dicts.

    Returns
    -------
    differ, unknown : list of str
        Metrics whose parameters differ, and metrics whose stored parameters are unknown.
    """
    stored_params = (stored or {}).get("metric_params") or {}
    actual_params = (actual or {}).get("metric_params") or {}
    differ, unknown = [], []
    for name in names:
        if name not in stored_params:
            unknown.append(name)
        elif name in actual_params and _canonical(stored_params[name]) != _canonical(actual_params[name]):
            differ.append(name)
    return differ, unknown


def describe_params(params: Mapping[str, Any] | None, name: str) -> str:
    """One metric's parameters, for messages."""
    return json.dumps(((params or {}).get("metric_params") or {}).get(name), sort_keys=True)
