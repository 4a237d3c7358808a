"""SortingAnalyzer folders as input: open them, make sure the metrics a model needs exist, read them.

Metrics already on an analyzer are used as they are. Missing ones are computed with SpikeInterface
(``analyzer.compute("quality_metrics", ...)``, ``analyzer.compute("template_metrics", ...)``), after the
extensions they depend on (``random_spikes``, ``templates``, ``noise_levels``, ``spike_amplitudes``, ...).
PCA-based quality metrics are opt-in: they are slow to compute.

The parameters of what is computed and read are JSON-normalised (see :mod:`unitrefine.data.si_metrics`).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from unitrefine.data.si_metrics import (
    EXTENSIONS,
    QUALITY,
    RUN_KEYS,
    available_metric_names,
    extension_class,
    json_normalise,
    pca_metric_names,
)
from unitrefine.errors import UnitRefineError

log = logging.getLogger(__name__)

#: Parameters of the extensions metrics depend on, unless configured: a seeded spike subsample, so that
#: the same analyzer gives the same metrics twice.
DEFAULT_EXTENSION_PARAMS: dict[str, dict[str, Any]] = {"random_spikes": {"seed": 0}}


def is_analyzer_folder(path: Path) -> bool:
    """Whether ``path`` looks like a saved SortingAnalyzer (binary folder or zarr)."""
    if not path.is_dir():
        return False
    if path.suffix == ".zarr" or (path / ".zattrs").is_file() or (path / "zarr.json").is_file():
        return True
    return (path / "spikeinterface_info.json").is_file()


def open_analyzer(path: Path) -> Any:
    """Load a SortingAnalyzer folder (binary folder or ``.zarr``) with its extensions, writable.

    Raises
    ------
    UnitRefineError
        The folder does not exist, is not an analyzer, or SpikeInterface cannot read it.
    """
    from spikeinterface.core import load_sorting_analyzer

    if not path.exists():
        raise UnitRefineError(f"The analyzer folder {path} does not exist. Check the path.")
    if not is_analyzer_folder(path):
        raise UnitRefineError(
            f"{path} is not a SortingAnalyzer folder (no spikeinterface_info.json, and not zarr). Save the analyzer "
            "with analyzer.save_as(format='binary_folder', folder=...) or format='zarr'."
        )
    info_file = path / "spikeinterface_info.json"
    if info_file.is_file():
        try:
            kind = json.loads(info_file.read_text(encoding="utf-8")).get("object")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            kind = None
        if kind != "SortingAnalyzer":
            raise UnitRefineError(
                f"{path} is not a readable SortingAnalyzer folder: {info_file.name} says {kind!r}. Is it a saved "
                "recording or sorting, or is the file damaged?"
            )
    try:
        return load_sorting_analyzer(path, load_extensions=True)
    except Exception as exc:  # noqa: BLE001 - SpikeInterface raises many kinds of error for damaged folders
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UnitRefineError(
            f"The analyzer folder {path} could not be loaded ({type(exc).__name__}: {detail}). Is it complete? "
            "Re-save it from SpikeInterface."
        ) from None


def extension_params_for(name: str, configured: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters to compute extension ``name`` with: :data:`DEFAULT_EXTENSION_PARAMS` updated by ``configured``."""
    return {**DEFAULT_EXTENSION_PARAMS.get(name, {}), **dict(configured.get(name) or {})}


def dependencies(extension: str, metric_names: Sequence[str]) -> list[str]:
    """Extensions (``a|b`` meaning either) that computing ``metric_names`` of ``extension`` needs."""
    cls = extension_class(extension)
    deps = list(cls.depend_on)
    for name in metric_names:
        deps += [d for d in cls.get_metric_by_name(name).depend_on if d not in deps]
    return deps


def plan_extensions(analyzer: Any, names: Sequence[str], configured: Mapping[str, Any]) -> list[str]:
    """The extensions ``analyzer`` lacks among ``names`` (``a|b``: either) and their parents, parents first."""
    from spikeinterface.core.sortinganalyzer import get_extension_class

    order: list[str] = []

    def have(name: str) -> bool:
        return analyzer.has_extension(name) or name in order

    def visit(name: str) -> None:
        options = name.split("|")
        if any(have(o) for o in options):
            return
        name = options[0]
        for dep in get_extension_class(name).get_required_dependencies(**extension_params_for(name, configured)):
            visit(dep)
        order.append(name)

    for name in names:
        visit(name)
    return order


def _lacks_recording(analyzer: Any) -> bool:
    return not (analyzer.has_recording() or analyzer.has_temporary_recording())


def _needs_recording(analyzer: Any, name: str, plan: Sequence[str]) -> bool:
    """Whether computing extension ``name`` reads the recording (templates do, unless waveforms exist)."""
    from spikeinterface.core.sortinganalyzer import get_extension_class

    if get_extension_class(name).need_recording:
        return True
    return name == "templates" and not (analyzer.has_extension("waveforms") or "waveforms" in plan)


def needs_missing_recording(analyzer: Any, extension: str, metric: str, configured: Mapping[str, Any]) -> bool:
    """Whether computing ``metric`` needs the recording (itself, or through a missing extension) and there is none."""
    if not _lacks_recording(analyzer):
        return False
    if getattr(extension_class(extension).get_metric_by_name(metric), "needs_recording", False):
        return True
    plan = plan_extensions(analyzer, dependencies(extension, [metric]), configured)
    return any(_needs_recording(analyzer, n, plan) for n in plan)


def ensure_extensions(
    analyzer: Any, names: Sequence[str], configured: Mapping[str, Any], n_jobs: int, save: bool, where: str
) -> list[str]:
    """Compute the extensions in ``names`` (``a|b``: either) that ``analyzer`` lacks, parents first.

    Parameters
    ----------
    analyzer : SortingAnalyzer
    names : list of str
        Extension names; ``"a|b"`` is satisfied by either and computes ``a`` if neither exists.
    configured : mapping
        Extension name -> parameters (over :data:`DEFAULT_EXTENSION_PARAMS`).
    n_jobs : int
        SpikeInterface job count.
    save : bool
        Save the extensions on the analyzer's folder.
    where : str
        The analyzer, for messages.

    Returns
    -------
    list of str
        The extensions computed, in order.
    """
    order = plan_extensions(analyzer, names, configured)
    needs_recording = [n for n in order if _needs_recording(analyzer, n, order)]
    if needs_recording and _lacks_recording(analyzer):
        raise UnitRefineError(
            f"{where}: the metrics to compute need the extensions {order}, and {needs_recording} need the recording, "
            "which this analyzer does not have (it was saved without it, or its files moved). Compute them where "
            f"the recording is available (analyzer.compute({order})), or attach it with "
            "analyzer.set_temporary_recording."
        )
    for name in order:
        log.info("%s: computing extension %s.", where, name)
        analyzer.compute(name, save=save, n_jobs=n_jobs, progress_bar=False, **extension_params_for(name, configured))
    return order


def computed_metric_names(analyzer: Any, extension: str) -> list[str]:
    """The metrics of ``extension`` already on ``analyzer`` (all their columns present)."""
    ext = analyzer.get_extension(extension)
    return [] if ext is None else list(ext.get_computed_metric_names())


# Over 60 lines: its numpydoc docstring; the code is 58 lines.
def ensure_metrics(
    analyzer: Any,
    wanted: Mapping[str, Sequence[str]],
    requested: Mapping[str, Mapping[str, Any]],
    *,
    extensions: Mapping[str, Any],
    n_jobs: int,
    save: bool,
    recompute: bool,
    where: str,
    required: bool = True,
) -> dict[str, list[str]]:
    """Compute the metrics in ``wanted`` that ``analyzer`` lacks, with the ``requested`` parameters.

    Metrics already on the analyzer keep their values and parameters (SpikeInterface would otherwise reset
    the stored parameters of the metrics it does not recompute to its defaults).

    Parameters
    ----------
    analyzer : SortingAnalyzer
    wanted : mapping
        Extension (``quality_metrics``/``template_metrics``) -> metric names.
    requested : mapping
        Extension -> ``{"metric_params": {metric: {...}}, "params": {...}}``: parameters for the metrics to
        compute (over SpikeInterface's defaults) and extension-level parameters (used when the extension is new).
    extensions : mapping
        Parameters of the extensions the metrics depend on.
    n_jobs : int
        SpikeInterface job count.
    save : bool
        Save what is computed on the analyzer's folder, as its SpikeInterface extensions.
    recompute : bool
        Compute ``wanted`` metrics even when present.
    where : str
        The analyzer, for messages.
    required : bool
        False: skip (with a warning) metrics that need a recording the analyzer does not have, instead of
        failing (for default metric lists).

    Returns
    -------
    dict
        Extension -> the metrics computed here.

    Raises
    ------
    UnitRefineError
        A metric name SpikeInterface does not know; a dependency that needs a missing recording; a metric
        SpikeInterface did not compute.
    """
    done: dict[str, list[str]] = {}
    for ext_name in EXTENSIONS:
        names = list(dict.fromkeys(wanted.get(ext_name) or []))
        unknown = [n for n in names if n not in available_metric_names(ext_name)]
        if unknown:
            raise UnitRefineError(
                f"{ext_name}: unknown metric names {unknown}; SpikeInterface knows {available_metric_names(ext_name)}."
            )
        present = computed_metric_names(analyzer, ext_name)
        missing = [n for n in names if recompute or n not in present]
        if not required:
            skipped = [n for n in missing if needs_missing_recording(analyzer, ext_name, n, extensions)]
            if skipped:
                log.warning("%s: skipping %s %s, which need the recording this analyzer does not have.",
                            where, ext_name, skipped)
                missing = [n for n in missing if n not in skipped]
        if not missing:
            continue
        ensure_extensions(analyzer, dependencies(ext_name, missing), extensions, n_jobs, save, where)
        cls = extension_class(ext_name)
        defaults = cls.get_default_metric_params()
        req = requested.get(ext_name) or {}
        req_metric_params = req.get("metric_params") or {}
        existing = analyzer.get_extension(ext_name)
        if existing is not None:
            params = {k: v for k, v in existing.params.items() if k not in RUN_KEYS}
            metric_params = {m: existing.params["metric_params"][m] for m in present if m not in missing}
        else:
            params, metric_params = dict(req.get("params") or {}), {}
        if ext_name == QUALITY and set(missing) & set(pca_metric_names()):
            params["skip_pc_metrics"] = False
        accepted = set(inspect.signature(cls._set_params).parameters) - {"self"}
        ignored = sorted(set(params) - accepted)
        if ignored:
            log.warning("%s: ignoring %s parameters %s, which this SpikeInterface version does not take.",
                        where, ext_name, ignored)
            params = {k: v for k, v in params.items() if k in accepted}
        for m in missing:
            metric_params[m] = {**defaults[m], **dict(req_metric_params.get(m) or {})}
        log.info("%s: computing %s %s.", where, ext_name, missing)
        analyzer.compute(
            ext_name,
            metric_names=missing,
            metric_params=json_normalise(metric_params),
            delete_existing_metrics=False,
            save=save,
            n_jobs=n_jobs,
            progress_bar=False,
            **json_normalise(params),
        )
        failed = [m for m in missing if m not in computed_metric_names(analyzer, ext_name)]
        if failed:
            raise UnitRefineError(
                f"{where}: SpikeInterface did not compute {ext_name} {failed} (see its warnings above). Leave them "
                "out of the metrics to use, or compute them yourself."
            )
        done[ext_name] = missing
    return done


def extension_params(analyzer: Any, extension: str) -> dict[str, Any] | None:
    """An extension's parameters as stored and compared: JSON-normalised, without the run bookkeeping.

    Returns
    -------
    dict or None
        ``{"metric_names": computed metrics, "metric_params": {metric: params}, <extension-level params>}``,
        or None when the analyzer has no such extension.
    """
    ext = analyzer.get_extension(extension)
    if ext is None:
        return None
    names = list(ext.get_computed_metric_names())
    return json_normalise(
        {
            "metric_names": names,
            "metric_params": {m: ext.params["metric_params"].get(m, {}) for m in names},
            **{k: v for k, v in ext.params.items() if k not in RUN_KEYS},
        }
    )


def read_metrics(analyzer: Any) -> tuple[pd.Series, pd.DataFrame]:
    """Every metric extension's data, as SpikeInterface hands it to a model: unit ids (strings) and metrics."""
    df = analyzer.get_metrics_extension_data()
    ids = pd.Series([str(u) for u in df.index], name="unit_id")
    return ids, df.reset_index(drop=True)


def sorting_labels(analyzer: Any, prop: str, where: str) -> pd.Series:
    """Curation labels from a sorting property (e.g. ``quality``), indexed by unit id; empty values dropped."""
    keys = list(analyzer.sorting.get_property_keys())
    if prop not in keys:
        raise UnitRefineError(
            f"{where}: the sorting has no property '{prop}' (dataset.label_property); its properties are {keys}. "
            "Set the labels with analyzer.set_sorting_property, or give the recording a 'labels' file."
        )
    values = analyzer.sorting.get_property(prop)
    labels = pd.Series([None if v is None else str(v).strip() for v in values],
                       index=[str(u) for u in analyzer.unit_ids], dtype=object)
    empty = labels.isna() | labels.isin(["", "nan", "None"])
    if empty.any():
        log.warning("%s: %d units have an empty '%s' property and are left out.", where, int(empty.sum()), prop)
    return labels[~empty]
