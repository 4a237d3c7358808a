"""Inputs and outputs of ``unitrefine.predict``: metrics CSVs or analyzer folders in; a predictions CSV,
Phy TSVs and sorting properties out. Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unitrefine.analyzers import is_analyzer_folder
from unitrefine.data import current_metric_name, read_table, rename_old_metrics, split_unit_ids, to_numeric
from unitrefine.errors import UnitRefineError

log = logging.getLogger(__name__)

#: Phy shows every ``cluster_<field>.tsv`` (columns ``cluster_id``, ``<field>``) as a column of its cluster view.
PHY_LABEL_FIELD = "unitrefine_label"
PHY_PROBABILITY_FIELD = "unitrefine_probability"
_TABLE_SUFFIXES = (".csv", ".tsv")


@dataclass(frozen=True)
class Source:
    """One input: a metrics table or a SortingAnalyzer folder; ``name`` is its recording column in the output."""

    name: str
    path: Path
    kind: str  # "csv" or "analyzer"


def discover(data: Path) -> list[Source]:
    """The inputs ``data`` names: a metrics CSV/TSV, a folder of them, or a SortingAnalyzer folder.

    Raises
    ------
    UnitRefineError
        ``data`` does not exist, or is a folder holding neither an analyzer nor metrics tables.
    """
    if not data.exists():
        raise UnitRefineError(f"The data {data} does not exist. Give a metrics CSV, a folder of them, or an analyzer folder.")
    if data.is_file():
        return [Source(data.stem, data, "csv")]
    if is_analyzer_folder(data):
        return [Source(data.stem if data.suffix == ".zarr" else data.name, data, "analyzer")]
    tables = sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() in _TABLE_SUFFIXES)
    if not tables:
        raise UnitRefineError(
            f"{data} holds no metrics tables (*.csv, *.tsv) and is not a SortingAnalyzer folder (no "
            "spikeinterface_info.json, not zarr). Point data= at one of those."
        )
    names = [p.stem for p in tables]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UnitRefineError(f"{data}: several tables share the names {dup}; rename them so each recording is unique.")
    return [Source(p.stem, p, "csv") for p in tables]


def read_csv_metrics(path: Path, needed: Iterable[str]) -> tuple[pd.Series, pd.DataFrame]:
    """Unit ids and the ``needed`` metrics (current SpikeInterface names) of a metrics table.

    Old metric names are mapped as in training; columns that are not needed are ignored (not even parsed).
    """
    df = read_table(path, "metrics")
    ids, rest = split_unit_ids(df, path)
    needed = set(needed)
    keep = [c for c in rest.columns if current_metric_name(c) in needed]
    values = rename_old_metrics(to_numeric(rest[keep], ids, path), path)
    return ids, values


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable(paths: Iterable[Path], overwrite: bool) -> None:
    """Fail before any work if an output exists and may not be replaced."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise UnitRefineError(f"{', '.join(existing)} already exist(s). Choose another output, or set overwrite=true.")


def write_predictions(table: pd.DataFrame, path: Path) -> None:
    """Write the predictions CSV atomically."""
    _write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def phy_files(folder: Path) -> list[Path]:
    """The TSVs :func:`write_phy` writes into a Phy folder."""
    return [folder / f"cluster_{PHY_LABEL_FIELD}.tsv", folder / f"cluster_{PHY_PROBABILITY_FIELD}.tsv"]


def check_phy_folder(folder: Path) -> None:
    """A Phy folder must exist; without ``params.py`` it is probably the wrong folder (a warning)."""
    if not folder.is_dir():
        raise UnitRefineError(f"The Phy folder {folder} does not exist (phy_folder).")
    if not (folder / "params.py").is_file():
        log.warning("%s has no params.py: is it a Phy folder? Writing the TSVs there anyway.", folder)


def write_phy(folder: Path, unit_ids: pd.Series, labels: pd.Series, confidence: pd.Series) -> list[Path]:
    """Write ``cluster_unitrefine_label.tsv`` and ``cluster_unitrefine_probability.tsv`` (Phy cluster ids).

    Raises
    ------
    UnitRefineError
        Unit ids that are not integers (Phy cluster ids are).
    """
    as_int = pd.to_numeric(unit_ids, errors="coerce")
    if as_int.isna().any() or not np.all(np.mod(as_int, 1) == 0):
        bad = unit_ids[as_int.isna()].tolist()[:5]
        raise UnitRefineError(f"Unit ids {bad} are not integers, so they are not Phy cluster ids; phy_folder needs them.")
    ids = as_int.astype(int).to_numpy()
    label_file, probability_file = phy_files(folder)
    _write_atomic(label_file, lambda tmp: pd.DataFrame({"cluster_id": ids, PHY_LABEL_FIELD: labels.to_numpy()})
                  .to_csv(tmp, sep="\t", index=False))
    _write_atomic(probability_file, lambda tmp: pd.DataFrame({"cluster_id": ids, PHY_PROBABILITY_FIELD: confidence.to_numpy()})
                  .to_csv(tmp, sep="\t", index=False, float_format="%.4f"))
    return [label_file, probability_file]


def set_properties(analyzer: Any, unit_ids: pd.Series, labels: pd.Series, confidence: pd.Series) -> None:
    """Set the sorting properties SpikeInterface's curation uses: ``classifier_label``, ``classifier_probability``.

    They are saved with the analyzer when it is on disk (SpikeInterface writes them).
    """
    order = [str(u) for u in analyzer.unit_ids]
    by_id_label = pd.Series(labels.to_numpy(), index=unit_ids.to_numpy()).reindex(order)
    by_id_conf = pd.Series(confidence.to_numpy(), index=unit_ids.to_numpy()).reindex(order)
    analyzer.set_sorting_property("classifier_label", by_id_label.to_numpy(dtype=str))
    analyzer.set_sorting_property("classifier_probability", by_id_conf.to_numpy(dtype=float))
