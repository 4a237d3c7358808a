"""Inputs and outputs of ``unitrefine.predict``: metrics CSVs or analyzer folders in; a predictions CSV,
Phy TSVs and sorting properties out. Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unitrefine.apply import command_paths
from unitrefine.data.analyzers import is_analyzer_folder
from unitrefine.data.metric_names import current_metric_name, rename_old_metrics
from unitrefine.data.tables import read_table, split_unit_ids, to_numeric
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
    """The inputs ``data`` names: a metrics CSV/TSV, a folder of them, a SortingAnalyzer folder, or a
    SpikeInterface export folder (``quality_metrics.csv``/``template_metrics.csv``: one recording, see
    :mod:`unitrefine.data.si_export`) or a folder of those.

    Raises
    ------
    UnitRefineError
        ``data`` does not exist, or is a folder holding none of these.
    """
    from unitrefine.data.si_export import is_export_folder

    if not data.exists():
        raise UnitRefineError(
            f"The data {data} does not exist. Give a metrics CSV, a folder of them, or an analyzer folder."
        )
    if data.is_file():
        return [Source(data.stem, data, "csv")]
    if is_analyzer_folder(data):
        return [Source(data.stem if data.suffix == ".zarr" else data.name, data, "analyzer")]
    if is_export_folder(data):
        return [Source(data.name, data, "csv")]
    tables = sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() in _TABLE_SUFFIXES)
    if not tables:
        exports = sorted(p for p in data.iterdir() if is_export_folder(p))
        if exports:
            return [Source(p.name, p, "csv") for p in exports]
        raise UnitRefineError(
            f"{data} holds no metrics tables (*.csv, *.tsv) and is not a SortingAnalyzer folder (no "
            "spikeinterface_info.json, not zarr) nor a SpikeInterface export (quality_metrics.csv, "
            "template_metrics.csv). Point data= at one of those."
        )
    names = [p.stem for p in tables]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UnitRefineError(f"{data}: several tables share the names {dup}; rename them so each recording is unique.")
    return [Source(p.stem, p, "csv") for p in tables]


def read_csv_metrics(path: Path, needed: Iterable[str]) -> tuple[pd.Series, pd.DataFrame]:
    """Unit ids and the ``needed`` metrics (current SpikeInterface names) of a metrics table or export folder.

    Old metric names are mapped as in training; columns that are not needed are ignored (not even parsed).
    The metrics are indexed by unit id (strings), so messages about their values can name the units.
    """
    from unitrefine.data.si_export import read_export_metrics

    if path.is_dir():
        ids, rest = read_export_metrics(path)
    else:
        ids, rest = split_unit_ids(read_table(path, "metrics"), path)
    needed = set(needed)
    keep = [c for c in rest.columns if current_metric_name(c) in needed]
    values = rename_old_metrics(to_numeric(rest[keep], ids, path), path)
    return ids, values.set_axis(pd.Index(ids.to_numpy(), name="unit_id"))


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary file in its folder, renamed into place: never half-written.

    Raises
    ------
    UnitRefineError
        The file could not be written (the outputs are checked before any work, see :func:`check_writable`, so
        this is a disk full or a folder changed meanwhile); the temporary file is removed, ``path`` left as it was.
    """
    tmp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UnitRefineError(f"Could not write {path}: {exc.strerror or exc}. It was left as it was; choose "
                                  "another output, or free space / fix the folder's permissions.") from None
        raise


def check_writable(paths: Iterable[Path], overwrite: bool, option: str = "output") -> None:
    """Fail before any work unless every output can be written (:func:`unitrefine.apply.command_paths.check_writable`):
    not a folder, in a writable folder, and not existing unless ``overwrite``."""
    command_paths.check_writable(paths, overwrite, option)


def write_predictions(table: pd.DataFrame, path: Path) -> None:
    """Write the predictions CSV atomically."""
    _write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def count_units(src: Source) -> int:
    """How many units an input holds, without computing anything (a table's rows; an analyzer's units)."""
    if src.kind == "analyzer":
        from spikeinterface.core import load_sorting_analyzer

        from unitrefine.data.analyzers import open_analyzer

        try:
            analyzer = load_sorting_analyzer(src.path, load_extensions=False)
        except Exception:  # noqa: BLE001 - SpikeInterface raises many kinds of error for damaged folders
            analyzer = open_analyzer(src.path)  # raises its clear UnitRefineError
        return int(analyzer.get_num_units())
    return len(read_csv_metrics(src.path, [])[0])


def phy_files(folder: Path, review: bool = False) -> list[Path]:
    """The TSVs :func:`write_phy` (and, with ``review``, :func:`write_phy_review`) write into a Phy folder."""
    files = [folder / f"cluster_{PHY_LABEL_FIELD}.tsv", folder / f"cluster_{PHY_PROBABILITY_FIELD}.tsv"]
    return files + [folder / f"cluster_{PHY_REVIEW_FIELD}.tsv"] if review else files


def check_phy_folder(folder: Path) -> None:
    """A Phy folder must exist; without ``params.py`` it is probably the wrong folder (a warning)."""
    if folder.is_file():
        raise UnitRefineError(f"The Phy folder {folder} (phy_folder=) is a file: give the Phy folder that holds it.")
    if not folder.is_dir():
        raise UnitRefineError(f"The Phy folder {folder} does not exist (phy_folder).")
    if not (folder / "params.py").is_file():
        log.warning("%s has no params.py: is it a Phy folder? Writing the TSVs there anyway.", folder)


def _cluster_ids(unit_ids: pd.Series) -> np.ndarray:
    as_int = pd.to_numeric(unit_ids, errors="coerce")
    if as_int.isna().any() or not np.all(np.mod(as_int, 1) == 0):
        bad = unit_ids[as_int.isna() | (np.mod(as_int, 1) != 0)].tolist()[:5]
        raise UnitRefineError(
            f"Unit ids {bad} are not integers, so they are not Phy cluster ids; phy_folder needs them."
        )
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
    label_table = pd.DataFrame({"cluster_id": ids, PHY_LABEL_FIELD: labels.to_numpy()})
    probability_table = pd.DataFrame({"cluster_id": ids, PHY_PROBABILITY_FIELD: confidence.to_numpy()})
    _write_atomic(label_file, lambda tmp: label_table.to_csv(tmp, sep="\t", index=False))
    _write_atomic(probability_file,
                  lambda tmp: probability_table.to_csv(tmp, sep="\t", index=False, float_format="%.4f"))
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
