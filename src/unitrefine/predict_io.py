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
#: ``predict review=...``: the review rank (1 = look first) of the units in the review budget; other clusters have none.
PHY_REVIEW_FIELD = "unitrefine_review"
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


def count_units(src: Source) -> int:
    """How many units an input holds, without computing anything (a table's rows; an analyzer's units)."""
    if src.kind == "analyzer":
        from spikeinterface.core import load_sorting_analyzer

        from unitrefine.analyzers import open_analyzer

        try:
            analyzer = load_sorting_analyzer(src.path, load_extensions=False)
        except Exception:  # noqa: BLE001 - SpikeInterface raises many kinds of error for damaged folders
            analyzer = open_analyzer(src.path)  # raises its clear UnitRefineError
        return int(analyzer.get_num_units())
    return len(split_unit_ids(read_table(src.path, "metrics"), src.path)[0])


def phy_files(folder: Path, review: bool = False) -> list[Path]:
    """The TSVs :func:`write_phy` (and, with ``review``, :func:`write_phy_review`) write into a Phy folder."""
    files = [folder / f"cluster_{PHY_LABEL_FIELD}.tsv", folder / f"cluster_{PHY_PROBABILITY_FIELD}.tsv"]
    return files + [folder / f"cluster_{PHY_REVIEW_FIELD}.tsv"] if review else files


def check_phy_folder(folder: Path) -> None:
    """A Phy folder must exist; without ``params.py`` it is probably the wrong folder (a warning)."""
    if not folder.is_dir():
        raise UnitRefineError(f"The Phy folder {folder} does not exist (phy_folder).")
    if not (folder / "params.py").is_file():
        log.warning("%s has no params.py: is it a Phy folder? Writing the TSVs there anyway.", folder)


def _cluster_ids(unit_ids: pd.Series) -> np.ndarray:
    as_int = pd.to_numeric(unit_ids, errors="coerce")
    if as_int.isna().any() or not np.all(np.mod(as_int, 1) == 0):
        bad = unit_ids[as_int.isna() | (np.mod(as_int, 1) != 0)].tolist()[:5]
        raise UnitRefineError(f"Unit ids {bad} are not integers, so they are not Phy cluster ids; phy_folder needs them.")
    return as_int.astype(int).to_numpy()


def write_phy(folder: Path, unit_ids: pd.Series, labels: pd.Series, confidence: pd.Series) -> list[Path]:
    """Write ``cluster_unitrefine_label.tsv`` and ``cluster_unitrefine_probability.tsv`` (Phy cluster ids).

    Raises
    ------
    UnitRefineError
        Unit ids that are not integers (Phy cluster ids are).
    """
    ids = _cluster_ids(unit_ids)
    label_file, probability_file = phy_files(folder)
    _write_atomic(label_file, lambda tmp: pd.DataFrame({"cluster_id": ids, PHY_LABEL_FIELD: labels.to_numpy()})
                  .to_csv(tmp, sep="\t", index=False))
    _write_atomic(probability_file, lambda tmp: pd.DataFrame({"cluster_id": ids, PHY_PROBABILITY_FIELD: confidence.to_numpy()})
                  .to_csv(tmp, sep="\t", index=False, float_format="%.4f"))
    return [label_file, probability_file]


def write_phy_review(folder: Path, unit_ids: pd.Series, needs_review: pd.Series, review_rank: pd.Series) -> Path:
    """Write ``cluster_unitrefine_review.tsv``: the review rank of each unit in the budget (1 = look first).

    Units outside the budget are not listed, so Phy shows them without a value: filter the cluster view with
    ``unitrefine_review > 0`` and sort by the column.

    Raises
    ------
    UnitRefineError
        Unit ids that are not integers (Phy cluster ids are).
    """
    ids = _cluster_ids(unit_ids)
    queued = needs_review.to_numpy(dtype=bool)
    table = pd.DataFrame({"cluster_id": ids[queued], PHY_REVIEW_FIELD: review_rank.to_numpy(dtype=int)[queued]})
    path = phy_files(folder, review=True)[-1]
    _write_atomic(path, lambda tmp: table.sort_values(PHY_REVIEW_FIELD).to_csv(tmp, sep="\t", index=False))
    return path


def set_properties(analyzer: Any, table: pd.DataFrame) -> None:
    """Set the sorting properties SpikeInterface's curation uses: ``classifier_label``, ``classifier_probability``
    (from ``unit_id``, ``predicted_label``, ``confidence`` of ``table``), and with a review queue
    ``classifier_needs_review`` (bool) and ``classifier_review_rank`` (1 = look first).

    They are saved with the analyzer when it is on disk (SpikeInterface writes them).
    """
    order = [str(u) for u in analyzer.unit_ids]
    by_id = table.set_index(table["unit_id"].astype(str)).reindex(order)
    analyzer.set_sorting_property("classifier_label", by_id["predicted_label"].to_numpy(dtype=str))
    analyzer.set_sorting_property("classifier_probability", by_id["confidence"].to_numpy(dtype=float))
    if "needs_review" in table.columns:
        analyzer.set_sorting_property("classifier_needs_review", by_id["needs_review"].to_numpy(dtype=bool))
        analyzer.set_sorting_property("classifier_review_rank", by_id["review_rank"].to_numpy(dtype=np.int64))
