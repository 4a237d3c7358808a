"""SpikeInterface's export layout: one folder per recording holding its metrics tables and its Phy labels.

A folder with ``quality_metrics.csv`` and/or ``template_metrics.csv`` (each as SpikeInterface's
``analyzer.get_extension(...).get_data().to_csv(...)`` writes it: the unit id in a first column with an empty
header) and, for training, ``cluster_group.tsv`` (Phy's ``cluster_id``, ``group``) is one recording: its
metrics tables are joined on unit id. Phy's own ``cluster_*.tsv`` files in the same folder are not metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from unitrefine.data.tables import PHY_LABELS, listed, read_table, split_unit_ids
from unitrefine.errors import UnitRefineError

log = logging.getLogger(__name__)

#: The metrics tables of an export folder, joined in this order (the first one present gives the unit order).
METRICS_FILES = ("quality_metrics.csv", "template_metrics.csv")
_TABLE_SUFFIXES = (".csv", ".tsv")


def is_export_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding SpikeInterface's ``quality_metrics.csv`` or ``template_metrics.csv``."""
    return path.is_dir() and any((path / name).is_file() for name in METRICS_FILES)


def labels_file(folder: Path) -> Path:
    """The export folder's labels, Phy's ``cluster_group.tsv`` (which may not exist)."""
    return folder / PHY_LABELS


def metrics_files(path: Path) -> list[Path]:
    """The files a metrics input is read from: an export folder's metrics tables, else ``path`` itself."""
    return [path / name for name in METRICS_FILES if (path / name).is_file()] if is_export_folder(path) else [path]


def other_tables(folder: Path) -> list[str]:
    """Tables in an export folder that are neither its metrics nor Phy's ``cluster_*.tsv``: they are not read."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _TABLE_SUFFIXES
                  and p.name not in METRICS_FILES and not p.name.startswith("cluster_"))


def read_export_metrics(folder: Path) -> tuple[pd.Series, pd.DataFrame]:
    """Unit ids and metric columns (strings) of an export folder, its metrics tables joined on unit id.

    Parameters
    ----------
    folder : Path
        A folder for which :func:`is_export_folder` holds.

    Returns
    -------
    ids : pandas.Series
        Unit ids (strings), in the order of the first metrics table.
    metrics : pandas.DataFrame
        The columns of every metrics table, aligned with ``ids``.

    Raises
    ------
    UnitRefineError
        A table that cannot be read, tables holding different units (named), or a column in two tables.
    """
    tables = []
    for name in METRICS_FILES:
        path = folder / name
        if path.is_file():
            tables.append((path, *split_unit_ids(read_table(path, "metrics"), path)))
    first_path, ids, joined = tables[0]
    for path, other_ids, rest in tables[1:]:
        have, other_have = set(ids), set(other_ids)
        only_first = [u for u in ids if u not in other_have]
        only_other = [u for u in other_ids if u not in have]
        if only_first or only_other:
            parts = [f"units {listed(units)} are only in {p.name}"
                     for units, p in ((only_first, first_path), (only_other, path)) if units]
            raise UnitRefineError(
                f"{folder}: {first_path.name} and {path.name} hold different units ({'; '.join(parts)}). They must "
                "come from the same sorting: export both again from the same SortingAnalyzer."
            )
        shared = [c for c in rest.columns if c in joined.columns]
        if shared:
            raise UnitRefineError(
                f"{folder}: the columns {listed(shared)} are in both {first_path.name} and {path.name}. Keep each "
                "metric in one table."
            )
        rest = rest.set_axis(other_ids.to_numpy()).reindex(ids.to_numpy()).reset_index(drop=True)
        joined = pd.concat([joined, rest], axis=1)
    ignored = other_tables(folder)
    if ignored:
        log.warning("%s: read as one recording from %s; the other tables there are not read: %s.", folder,
                    " and ".join(p.name for p, _, _ in tables), listed(ignored))
    return ids, joined
