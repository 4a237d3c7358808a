"""Read the user's tables (metrics, labels, predictions) with clear errors, and say which metric values a model
cannot use.

A problem with a file raises :class:`~unitrefine.errors.UnitRefineError` naming the file, column or unit and
what to do. Values that are read but become missing for the model (±inf, numbers beyond float32, a metric
empty for a whole recording) are a warning naming the metric, the file and the units: the features are cast
to float32 with ±inf -> NaN, as SpikeInterface does before it calls a model.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd

from unitrefine.errors import UnitRefineError

log = logging.getLogger(__name__)

#: Column names taken as the unit id, in order of preference.
ID_COLUMNS = ("cluster_id", "unit_id", "unit_ids", "cluster_ids", "id")
#: Column names taken as the curation label in a labels file (Phy writes ``group``).
LABEL_COLUMNS = ("group", "label", "labels", "quality", "curation")
#: Phy's labels file, and the map from Phy cluster ids to unit ids SpikeInterface's ``export_to_phy`` writes beside it.
PHY_LABELS = "cluster_group.tsv"
PHY_SI_IDS = "cluster_si_unit_ids.tsv"
_SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon"}
_DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+(?:[eE][-+]?\d+)?")
_MAX_LISTED = 5


def listed(items: Sequence[object]) -> str:
    """The first few ``items`` quoted, and how many more there are (for messages)."""
    shown = ", ".join(repr(i) for i in list(items)[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def read_table(path: Path, what: str) -> pd.DataFrame:
    """Read a CSV/TSV as strings, with clear errors for missing, empty, mis-separated or malformed files.

    Parameters
    ----------
    path : Path
        The file. ``.tsv``/``.tab`` files are tab-separated, everything else comma-separated.
    what : str
        What the file is meant to hold, for messages (e.g. ``"metrics"``).

    Returns
    -------
    pandas.DataFrame
        All cells as strings (missing cells as NaN); a UTF-8 byte-order mark is removed, names are stripped.

    Raises
    ------
    UnitRefineError
        A missing, empty or non-UTF-8 file; another separator (or decimal commas); ragged rows; a column
        named twice (ignoring case and surrounding spaces).
    """
    if path.is_dir():
        raise UnitRefineError(f"The {what} file {path} is a folder; give the table file itself.")
    if not path.is_file():
        raise UnitRefineError(f"The {what} file {path} does not exist. Check the path in the dataset config.")
    if path.stat().st_size == 0:
        raise UnitRefineError(f"The {what} file {path} is empty.")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        _check_separator(path, sep, what)
        df = pd.read_csv(path, sep=sep, dtype=str, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise UnitRefineError(f"The {what} file {path} is empty.") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise UnitRefineError(
            f"The {what} file {path} is malformed ({detail}). Is it truncated, or are some rows ragged?"
        ) from None
    except UnicodeDecodeError:
        raise UnitRefineError(f"The {what} file {path} is not UTF-8 text.") from None
    if not isinstance(df.index, pd.RangeIndex):
        raise UnitRefineError(
            f"The {what} file {path} is malformed: some rows have more fields than the header "
            "(a trailing delimiter, or a value too many). Fix those rows."
        )
    if df.empty:
        raise UnitRefineError(f"The {what} file {path} has a header but no rows.")
    _check_short_rows(path, sep, df.shape[1], what)
    _check_header(path, sep, what)
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _check_separator(path: Path, sep: str, what: str) -> None:
    """Refuse a file whose header is split by another separator than its extension's (saying so, and naming
    decimal commas when the values have them: reading those as numbers is guesswork, so they are not read)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        lines = [line.rstrip("\r\n") for line in islice(f, 200) if line.strip()]
    if not lines or sep in lines[0]:
        return
    other = next((s for s in _SEPARATORS if s != sep and s in lines[0]), None)
    if other is None:
        return
    expected = _SEPARATORS[sep]
    cells = (c.strip().strip('"') for line in lines[1:] for c in line.split(other))
    decimal = None if other == "," else next((c for c in cells if _DECIMAL_COMMA.fullmatch(c)), None)
    if decimal is not None:
        raise UnitRefineError(
            f"The {what} file {path} looks {_SEPARATORS[other]}-separated with decimal commas (e.g. {decimal!r}), as "
            f"a spreadsheet set to a comma-decimal language saves it. Save it {expected}-separated with decimal points "
            f"(e.g. pandas.read_csv(old, sep={other!r}, decimal=',').to_csv(new, index=False))."
        )
    raise UnitRefineError(
        f"The {what} file {path} looks {_SEPARATORS[other]}-separated, but a {path.suffix or 'no'}-extension file is "
        f"read as {expected}-separated. Save it {expected}-separated (or as .tsv for tabs)."
    )


def _check_short_rows(path: Path, sep: str, n_columns: int, what: str) -> None:
    """Refuse rows with fewer fields than the header (pandas would fill them with NaN silently).

    A file cut off while it was written or copied ends in such a row; table writers (pandas,
    SpikeInterface, Phy) always write every delimiter, even around empty values.
    """
    with path.open(encoding="utf-8-sig", newline="") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter=sep), start=1):
            if line_no > 1 and row and len(row) < n_columns:
                where = "its last line" if not f.read(1) else f"line {line_no}"
                raise UnitRefineError(
                    f"The {what} file {path} is malformed: {where} has {len(row)} of the header's {n_columns} "
                    "fields. Is the file truncated (an interrupted copy or export)? Export it again, or write "
                    "empty values with their delimiters."
                )


def _check_header(path: Path, sep: str, what: str) -> None:
    """Refuse a column named twice (pandas would rename the copy ``snr.1``, a feature no other file has).

    Names are compared ignoring case and surrounding spaces. A repeated unit-id column is left to
    :func:`split_unit_ids`, which drops it when it repeats the ids (some SpikeInterface exports do).
    """
    with path.open(encoding="utf-8-sig", newline="") as f:
        header = next((row for row in csv.reader(f, delimiter=sep) if row), [])
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(header, start=1):
        positions.setdefault(name.strip().casefold(), []).append(i)
    for key, where in positions.items():
        names = [header[i - 1] for i in where]
        if len(where) < 2 or (len(set(names)) == 1 and names[0] in ID_COLUMNS):
            continue
        columns = ", ".join(str(i) for i in where)
        if not key:
            raise UnitRefineError(
                f"The {what} file {path} has {len(where)} columns without a name (columns {columns}). Only the unit-id "
                "column may have an empty name: name the others, or remove them."
            )
        raise UnitRefineError(
            f"The {what} file {path} has the column {names[0].strip()!r} {len(where)} times (columns {columns}: "
            f"{', '.join(repr(n) for n in names)}; names differing only in case or surrounding spaces are the same "
            "column). Keep one of them: remove or rename the others."
        )


def split_unit_ids(df: pd.DataFrame, path: Path) -> tuple[pd.Series, pd.DataFrame]:
    """Find the unit-id column (named, or SpikeInterface's empty header); return ids and the rest.

    Raises
    ------
    UnitRefineError
        No id column, empty or duplicate ids, or a repeated id column whose values differ.
    """
    cols = list(df.columns)
    named = [c for c in ID_COLUMNS if c in cols]
    if named:
        id_col = named[0]
        # An old pandas row index in front of a named id column is not an id: drop it.
        drop = [c for c in cols if c.startswith("Unnamed: ") and cols.index(c) == 0 and c != id_col]
    elif cols[0] == "" or cols[0].startswith("Unnamed: "):
        id_col, drop = cols[0], []
    else:
        raise UnitRefineError(
            f"{path}: no unit-id column. Name the first column one of {list(ID_COLUMNS)} "
            f"(or leave its header empty, as SpikeInterface does); the columns are {listed(cols)}."
        )
    ids = df[id_col].str.strip()
    if ids.isna().any():
        rows = (np.flatnonzero(ids.isna().to_numpy()) + 2).tolist()
        raise UnitRefineError(f"{path}: column '{id_col}' has empty unit ids on lines {listed(rows)}.")
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise UnitRefineError(
            f"{path}: duplicate unit ids in column '{id_col}': {listed(dup)}. Each unit must appear once."
        )
    rest = df.drop(columns=[id_col, *drop])
    # Some SpikeInterface-style exports repeat an id column at the end (pandas reads it as 'cluster_id.1').
    echoes = []
    for col in rest.columns:
        original = col.rsplit(".", 1)[0]
        if col == original or original not in ID_COLUMNS or original not in cols:
            continue
        same = rest[col].str.strip().fillna("") == df[original].str.strip().fillna("")
        if not same.all():
            unit = ids.iloc[int(np.flatnonzero(~same.to_numpy())[0])]
            raise UnitRefineError(
                f"{path}: the column '{original}' appears twice with different values (first at unit {unit}). "
                "Keep one of them."
            )
        echoes.append(col)
    rest = rest.drop(columns=echoes)
    return ids.reset_index(drop=True), rest.reset_index(drop=True)


def to_numeric(df: pd.DataFrame, ids: pd.Series, path: Path) -> pd.DataFrame:
    """Convert every column to float64, naming the first cell that is not a number."""
    out = {}
    for col in df.columns:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            cell = str(df[col].iloc[i]).strip()
            hint = " (a decimal comma? Numbers need a decimal point)" if _DECIMAL_COMMA.fullmatch(cell) else ""
            raise UnitRefineError(
                f"{path}: metric column '{col}' is not numeric: unit {ids.iloc[i]} has {df[col].iloc[i]!r}{hint} "
                f"({int(bad.sum())} such cells). Write plain numbers (no units or text), or leave the column out "
                "with dataset.exclude_metrics."
            )
        out[col] = values.astype("float64")
    return pd.DataFrame(out, index=df.index)


def label_column(rest: pd.DataFrame, path: Path) -> str:
    """The column of a labels table (unit ids split off) that holds the labels: one named in ``LABEL_COLUMNS``, or
    the only column.

    Raises
    ------
    UnitRefineError
        Several columns, none of them named as a label column.
    """
    named = [c for c in LABEL_COLUMNS if c in rest.columns]
    if named:
        return named[0]
    if rest.shape[1] == 1:
        return rest.columns[0]
    raise UnitRefineError(
        f"{path}: cannot tell which column holds the labels among {listed(list(rest.columns))}. "
        f"Name it one of {list(LABEL_COLUMNS)}."
    )


def read_labels(path: Path) -> pd.Series:
    """Read a Phy ``cluster_group.tsv`` or a CSV of unit id + label.

    Parameters
    ----------
    path : Path
        The labels file.

    Returns
    -------
    pandas.Series
        Labels (strings) indexed by unit id (strings; Phy cluster ids mapped by :func:`phy_to_unit_ids`).
    """
    df = read_table(path, "labels")
    ids, rest = split_unit_ids(df, path)
    labels = rest[label_column(rest, path)].str.strip()
    return pd.Series(labels.to_numpy(), index=phy_to_unit_ids(ids, path).to_numpy(), name="label")


def phy_to_unit_ids(ids: pd.Series, path: Path) -> pd.Series:
    """The unit ids of a labels file's ``ids``: Phy cluster ids of a ``cluster_group.tsv`` that SpikeInterface's
    ``export_to_phy`` wrote (``cluster_si_unit_ids.tsv`` beside it) are mapped to SpikeInterface's unit ids, in
    which SpikeInterface's metrics tables are indexed; any other ids are returned as they are.

    Raises
    ------
    UnitRefineError
        A malformed map, or clusters the map does not hold (Phy splits and merges make new clusters).
    """
    map_path = path.parent / PHY_SI_IDS
    if path.name != PHY_LABELS or not map_path.is_file():
        return ids
    table = read_table(map_path, "unit-id map")
    if not {"cluster_id", "si_unit_id"} <= set(table.columns):
        raise UnitRefineError(
            f"{map_path}: expected the columns 'cluster_id' and 'si_unit_id' (as SpikeInterface's export_to_phy writes "
            f"them); the columns are {listed(list(table.columns))}."
        )
    mapping = dict(zip(table["cluster_id"].str.strip(), table["si_unit_id"].str.strip()))
    unknown = [i for i in ids if i not in mapping]
    if unknown:
        raise UnitRefineError(
            f"{path}: clusters {listed(unknown)} are not in {map_path}, which maps Phy cluster ids to SpikeInterface "
            "unit ids (clusters made by splits or merges in Phy have no SpikeInterface unit). Remove them from "
            f"{PHY_LABELS}, or delete {PHY_SI_IDS} if the metrics are indexed by Phy cluster ids."
        )
    log.info("%s: Phy cluster ids read as SpikeInterface unit ids through %s.", path, map_path)
    return ids.map(mapping)


def warn_unusable_values(values: pd.DataFrame, units: Sequence[str] | None, where: str, if_empty: str) -> None:
    """Warn about metric values a model sees as missing: ±inf and numbers beyond float32 (the features are cast
    to float32 and ±inf turned into NaN, as SpikeInterface does), and metrics with no usable value at all.

    Parameters
    ----------
    values : pandas.DataFrame
        Numeric metric columns, one row per unit.
    units : sequence of str or None
        The unit id of each row (None: units are named by their row, counting from 0).
    where : str
        The recording or file, for messages.
    if_empty : str
        What happens to a metric with no usable value for any unit (ends its warning).
    """
    numbers = values.to_numpy(dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        usable = np.isfinite(numbers.astype(np.float32))
    for j, column in enumerate(values.columns):
        if not usable[:, j].any():
            log.warning("%s: metric '%s' has no usable value for any of its %d units (empty, NaN or infinite); %s",
                        where, column, len(values), if_empty)
            continue
        lost = np.flatnonzero(~usable[:, j] & ~np.isnan(numbers[:, j]))
        if lost.size:
            names = [units[i] for i in lost] if units is not None else [f"row {i}" for i in lost]
            log.warning(
                "%s: metric '%s' has %d values that are infinite or beyond float32's range (±3.4e38), at units %s: "
                "they are treated as missing (NaN), as SpikeInterface treats them.",
                where, column, lost.size, listed(names),
            )
