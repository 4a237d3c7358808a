"""Units already labelled (:mod:`unitrefine.data.labelled`): every accepted layout, what counts as a label, errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from unitrefine.data.labelled import drop_labelled, read_labelled
from unitrefine.errors import UnitRefineError


def keys(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["recording"], df["unit_id"]))


def test_layouts_and_what_counts_as_a_label(tmp_path: Path) -> None:
    # A folder: <recording>.csv, <recording>.tsv (Phy), <recording>/cluster_group.tsv; recC has no file (nothing done).
    folder = tmp_path / "labels"
    (folder / "recB").mkdir(parents=True)
    pd.DataFrame({"unit_id": ["1", "2", "3", "4"], "label": ["good", "unsorted", "", " Noise "]}).to_csv(
        folder / "recA.csv", index=False)
    pd.DataFrame({"cluster_id": [7, 8], "group": ["mua", "Unsorted"]}).to_csv(folder / "recB" / "cluster_group.tsv",
                                                                           sep="\t", index=False)
    got = read_labelled(folder, ["recA", "recB", "recC"])
    assert keys(got) == {("recA", "1"), ("recA", "4"), ("recB", "7")}  # unsorted and empty are not labels
    assert dict(zip(zip(got["recording"], got["unit_id"]), got["source"])) == {
        ("recA", "1"): str(folder / "recA.csv"), ("recA", "4"): str(folder / "recA.csv"),
        ("recB", "7"): str(folder / "recB" / "cluster_group.tsv")}
    # One file with a recording column.
    pd.DataFrame({"recording": ["recA", "recB"], "cluster_id": [1, 7], "quality": ["good", "noise"]}).to_csv(
        tmp_path / "all.csv", index=False)
    assert keys(read_labelled(tmp_path / "all.csv", ["recA", "recB"])) == {("recA", "1"), ("recB", "7")}
    # One recording: a plain labels file, or a Phy folder holding cluster_group.tsv.
    phy = tmp_path / "phy"
    phy.mkdir()
    pd.DataFrame({"cluster_id": [5], "group": ["good"]}).to_csv(phy / "cluster_group.tsv", sep="\t", index=False)
    assert keys(read_labelled(phy, ["only"])) == {("only", "5")}
    assert keys(read_labelled(phy / "cluster_group.tsv", ["only"])) == {("only", "5")}


def test_drop_labelled_keeps_the_rest_and_refuses_strangers(tmp_path: Path) -> None:
    predictions = pd.DataFrame({"recording": ["A", "A", "B"], "unit_id": ["1", "2", "1"], "x": [0, 1, 2]})
    done = pd.DataFrame({"recording": ["A"], "unit_id": ["1"], "source": ["f.csv"]})
    assert drop_labelled(predictions, done)["x"].tolist() == [1, 2]  # B/1 shares A/1's id, not its recording
    stranger = pd.DataFrame({"recording": ["B", "B"], "unit_id": ["1", "9"], "source": ["g.csv", "g.csv"]})
    with pytest.raises(UnitRefineError, match=r"g.csv: labels for units '9' of recording 'B' that are not in data="):
        drop_labelled(predictions, stranger)


def test_two_files_for_one_recording_are_ambiguous(tmp_path: Path) -> None:
    for suffix, sep in ((".csv", ","), (".tsv", "\t")):
        pd.DataFrame({"cluster_id": [1], "group": ["good"]}).to_csv(tmp_path / f"recA{suffix}", sep=sep, index=False)
    with pytest.raises(UnitRefineError, match="several labels files for recording 'recA'"):
        read_labelled(tmp_path, ["recA", "recB"])


def test_phy_cluster_ids_of_a_spikeinterface_export_are_read_as_unit_ids(tmp_path: Path) -> None:
    # export_to_phy numbers clusters 0..n-1 and maps them to SpikeInterface's unit ids in cluster_si_unit_ids.tsv.
    pd.DataFrame({"cluster_id": [0, 1, 2], "group": ["good", "unsorted", "noise"]}).to_csv(
        tmp_path / "cluster_group.tsv", sep="\t", index=False)
    pd.DataFrame({"cluster_id": [0, 1, 2], "si_unit_id": ["u7", "u3", "u5"]}).to_csv(
        tmp_path / "cluster_si_unit_ids.tsv", sep="\t", index=False)
    assert keys(read_labelled(tmp_path, ["rec"])) == {("rec", "u7"), ("rec", "u5")}
    (tmp_path / "cluster_group.tsv").write_text("cluster_id\tgroup\n0\tgood\n9\tmua\n")
    with pytest.raises(UnitRefineError, match=r"cluster_group.tsv: clusters '9' are not in .*cluster_si_unit_ids.tsv"):
        read_labelled(tmp_path, ["rec"])
