"""Units a curator has labelled (``unitrefine.suggest labels=...``, ``unitrefine.merge_review review=...``).

Labels come as a Phy ``cluster_group.tsv`` or a CSV of unit id + label (with a ``recording`` column when the
data hold several recordings), or a folder of such files named by recording. A unit counts as labelled when its
label is set: empty labels and Phy's default ``unsorted`` do not count. The Phy cluster ids of a
``cluster_group.tsv`` that SpikeInterface's ``export_to_phy`` wrote are read as SpikeInterface unit ids
(:func:`unitrefine.data.tables.phy_to_unit_ids`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from unitrefine.data.tables import label_column, listed, phy_to_unit_ids, read_table, split_unit_ids
from unitrefine.errors import UnitRefineError

#: Label values that do not count as a label (Phy's default group is ``unsorted``).
NOT_LABELLED = ("", "unsorted", "nan")


def _labelled_rows(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``unit_id, label`` of the units of ``df`` (a labels table) whose label is set (not empty, not ``unsorted``).

    Labels are stripped; their case is kept (:func:`read_unit_labels` callers compare them case-insensitively).
    """
    ids, rest = split_unit_ids(df.reset_index(drop=True), path)
    labels = rest[label_column(rest, path)].fillna("").astype(str).str.strip()
    keep = ~labels.str.lower().isin(NOT_LABELLED).to_numpy()
    ids = phy_to_unit_ids(ids[keep], path)
    return pd.DataFrame({"unit_id": ids.to_numpy(), "label": labels[keep].to_numpy()})


@dataclass(frozen=True)
class Options:
    """How the command names the labels and the data in its messages (``labels=``/``data=`` for suggest)."""

    labels: str = "labels"
    data: str = "data"


def _from_file(path: Path, recordings: Sequence[str], opts: Options, only: str | None = None) -> pd.DataFrame:
    df = read_table(path, "labels")
    if "recording" in df.columns:
        parts = [_labelled_rows(part.drop(columns="recording"), path).assign(recording=str(rec))
                 for rec, part in df.groupby(df["recording"].fillna("").str.strip(), sort=False)]
        out = pd.concat(parts, ignore_index=True)
        unknown = sorted(set(out["recording"]) - set(recordings))
        if unknown:
            raise UnitRefineError(
                f"{path}: its 'recording' column names {listed(unknown)}, which {opts.data}= does not hold (its "
                f"recordings: {listed(list(recordings))}; a recording is named by its metrics file or analyzer "
                "folder)."
            )
    else:
        rec = only if only is not None else (recordings[0] if len(recordings) == 1 else None)
        if rec is None:
            raise UnitRefineError(
                f"{path} has no 'recording' column, but {opts.data}= holds {len(recordings)} recordings: add a "
                f"recording column, or give {opts.labels}= a folder with one labels file per recording "
                "(<recording>.csv/.tsv or <recording>/cluster_group.tsv)."
            )
        out = _labelled_rows(df, path).assign(recording=rec)
    return out.assign(source=str(path))[["recording", "unit_id", "label", "source"]]


def read_unit_labels(path: Path, recordings: Sequence[str], opts: Options = Options()) -> pd.DataFrame:
    """The units a curator has labelled and their labels, from a labels file or folder.

    Parameters
    ----------
    path : Path
        A labels file (Phy ``cluster_group.tsv`` or a CSV of unit id + label; with a ``recording`` column when
        the data hold several recordings), or a folder: a Phy folder (``cluster_group.tsv``) for a single
        recording, else one ``<recording>.csv``/``.tsv`` or ``<recording>/cluster_group.tsv`` per recording.
    recordings : sequence of str
        The recordings of the data (their names in the output).
    opts : Options
        The command's option names, for messages.

    Returns
    -------
    pandas.DataFrame
        ``recording, unit_id, label, source`` of every unit with a label (empty labels and ``unsorted`` do not
        count); ``source`` is the file it came from.

    Raises
    ------
    UnitRefineError
        A missing path, an unreadable table, recordings the data do not hold, or a folder with no labels file
        for any recording.
    """
    if not path.exists():
        raise UnitRefineError(f"The labels {path} ({opts.labels}=) do not exist.")
    if path.is_file():
        return _from_file(path, recordings, opts)
    if len(recordings) == 1 and (path / "cluster_group.tsv").is_file():
        return _from_file(path / "cluster_group.tsv", recordings, opts)
    frames = []
    for rec in recordings:
        found = [p for p in (path / f"{rec}.csv", path / f"{rec}.tsv", path / rec / "cluster_group.tsv") if p.is_file()]
        if len(found) > 1:
            raise UnitRefineError(
                f"{path} holds several labels files for recording '{rec}': {[str(p) for p in found]}. Keep one."
            )
        if found:
            frames.append(_from_file(found[0], recordings, opts, only=rec))
    if not frames:
        raise UnitRefineError(
            f"{path} holds no labels file for any recording of {opts.data}= ({listed(list(recordings))}): name "
            "them <recording>.csv, <recording>.tsv or <recording>/cluster_group.tsv."
        )
    return pd.concat(frames, ignore_index=True)


def read_labelled(path: Path, recordings: Sequence[str], opts: Options = Options()) -> pd.DataFrame:
    """The units already labelled: :func:`read_unit_labels` without the labels (``recording, unit_id, source``)."""
    return read_unit_labels(path, recordings, opts)[["recording", "unit_id", "source"]]


def check_known_units(predictions: pd.DataFrame, labelled: pd.DataFrame, opts: Options = Options()) -> None:
    """Every labelled unit must be a unit of the data.

    Raises
    ------
    UnitRefineError
        Labels for units the data do not have (the labels and the data are probably of different sortings),
        naming the first few.
    """
    have = set(zip(predictions["recording"].astype(str), predictions["unit_id"].astype(str)))
    keys = list(zip(labelled["recording"].astype(str), labelled["unit_id"].astype(str)))
    strangers = [i for i, k in enumerate(keys) if k not in have]
    if strangers:
        first = labelled.iloc[strangers[0]]
        units = labelled.iloc[strangers]
        units = units[units["recording"] == first["recording"]]["unit_id"].tolist()
        raise UnitRefineError(
            f"{first['source']}: labels for units {listed(units)} of recording '{first['recording']}' that are not in "
            f"{opts.data}= (are the labels and the {'metrics' if opts.data == 'data' else 'predictions'} from the same "
            "sorting?)."
        )


def drop_labelled(predictions: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` without the ``labelled`` units.

    Raises
    ------
    UnitRefineError
        Labels for units the data do not have (:func:`check_known_units`).
    """
    check_known_units(predictions, labelled)
    done = set(zip(labelled["recording"].astype(str), labelled["unit_id"].astype(str)))
    keys = zip(predictions["recording"].astype(str), predictions["unit_id"].astype(str))
    mask = np.array([k not in done for k in keys], dtype=bool)
    return predictions[mask].reset_index(drop=True)
