"""Units a curator has labelled already (``unitrefine.suggest labels=...``): read them, leave them out.

Labels come as a Phy ``cluster_group.tsv`` or a CSV of unit id + label (with a ``recording`` column when the
data hold several recordings), or a folder of such files named by recording. A unit counts as labelled when its
label is set: empty labels and Phy's default ``unsorted`` do not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from unitrefine.data import LABEL_COLUMNS, read_table, split_unit_ids
from unitrefine.errors import UnitRefineError

#: Label values that do not count as a label (Phy's default group is ``unsorted``).
NOT_LABELLED = ("", "unsorted", "nan")
_LISTED = 5




def _listed(items: Sequence[object]) -> str:
    shown = ", ".join(repr(i) for i in list(items)[:_LISTED])
    return shown + (f" (and {len(items) - _LISTED} more)" if len(items) > _LISTED else "")


def _labelled_ids(df: pd.DataFrame, path: Path) -> pd.Series:
    """Unit ids of ``df`` (a labels table) whose label is set (not empty, not Phy's ``unsorted``)."""
    ids, rest = split_unit_ids(df.reset_index(drop=True), path)
    named = [c for c in LABEL_COLUMNS if c in rest.columns]
    if named:
        column = named[0]
    elif rest.shape[1] == 1:
        column = rest.columns[0]
    else:
        raise UnitRefineError(
            f"{path}: cannot tell which column holds the labels among {_listed(list(rest.columns))}. "
            f"Name it one of {list(LABEL_COLUMNS)}."
        )
    labels = rest[column].fillna("").astype(str).str.strip().str.lower()
    return ids[~labels.isin(NOT_LABELLED).to_numpy()].reset_index(drop=True)


def _from_file(path: Path, recordings: Sequence[str], only: str | None = None) -> pd.DataFrame:
    df = read_table(path, "labels")
    if "recording" in df.columns:
        parts = [_labelled_ids(part.drop(columns="recording"), path).to_frame("unit_id").assign(recording=str(rec))
                 for rec, part in df.groupby(df["recording"].fillna("").str.strip(), sort=False)]
        out = pd.concat(parts, ignore_index=True)
        unknown = sorted(set(out["recording"]) - set(recordings))
        if unknown:
            raise UnitRefineError(
                f"{path}: its 'recording' column names {_listed(unknown)}, which data= does not hold (its recordings: "
                f"{_listed(list(recordings))}; a recording is named by its metrics file or analyzer folder)."
            )
    else:
        rec = only if only is not None else (recordings[0] if len(recordings) == 1 else None)
        if rec is None:
            raise UnitRefineError(
                f"{path} has no 'recording' column, but data= holds {len(recordings)} recordings: add a recording "
                "column, or give labels= a folder with one labels file per recording (<recording>.csv/.tsv or "
                "<recording>/cluster_group.tsv)."
            )
        out = _labelled_ids(df, path).to_frame("unit_id").assign(recording=rec)
    return out.assign(source=str(path))[["recording", "unit_id", "source"]]


def read_labelled(path: Path, recordings: Sequence[str]) -> pd.DataFrame:
    """The units already labelled, from a labels file or folder.

    Parameters
    ----------
    path : Path
        A labels file (Phy ``cluster_group.tsv`` or a CSV of unit id + label; with a ``recording`` column when
        the data hold several recordings), or a folder: a Phy folder (``cluster_group.tsv``) for a single
        recording, else one ``<recording>.csv``/``.tsv`` or ``<recording>/cluster_group.tsv`` per recording.
    recordings : sequence of str
        The recordings of the data (their names in the output).

    Returns
    -------
    pandas.DataFrame
        ``recording, unit_id, source`` of every unit with a label (empty labels and ``unsorted`` do not count).

    Raises
    ------
    UnitRefineError
        A missing path, an unreadable table, recordings the data do not hold, or a folder with no labels file
        for any recording.
    """
    if not path.exists():
        raise UnitRefineError(f"The labels {path} (labels=) do not exist.")
    if path.is_file():
        return _from_file(path, recordings)
    if len(recordings) == 1 and (path / "cluster_group.tsv").is_file():
        return _from_file(path / "cluster_group.tsv", recordings)
    frames = []
    for rec in recordings:
        found = [p for p in (path / f"{rec}.csv", path / f"{rec}.tsv", path / rec / "cluster_group.tsv") if p.is_file()]
        if len(found) > 1:
            raise UnitRefineError(f"{path} holds several labels files for recording '{rec}': {[str(p) for p in found]}. Keep one.")
        if found:
            frames.append(_from_file(found[0], recordings, only=rec))
    if not frames:
        raise UnitRefineError(
            f"{path} holds no labels file for any recording of data= ({_listed(list(recordings))}): name them "
            "<recording>.csv, <recording>.tsv or <recording>/cluster_group.tsv."
        )
    return pd.concat(frames, ignore_index=True)


def drop_labelled(predictions: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` without the ``labelled`` units.

    Raises
    ------
    UnitRefineError
        Labels for units the data do not have (the labels and the data are probably of different sortings).
    """
    have = set(zip(predictions["recording"].astype(str), predictions["unit_id"].astype(str)))
    keys = list(zip(labelled["recording"].astype(str), labelled["unit_id"].astype(str)))
    strangers = [i for i, k in enumerate(keys) if k not in have]
    if strangers:
        first = labelled.iloc[strangers[0]]
        units = labelled.iloc[strangers]
        units = units[units["recording"] == first["recording"]]["unit_id"].tolist()
        raise UnitRefineError(
            f"{first['source']}: labels for units {_listed(units)} of recording '{first['recording']}' that are not in "
            "data= (are the labels and the metrics from the same sorting?)."
        )
    done = set(keys)
    mask = np.array([k not in done for k in zip(predictions["recording"].astype(str), predictions["unit_id"].astype(str))],
                    dtype=bool)
    return predictions[mask].reset_index(drop=True)
