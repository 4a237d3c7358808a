"""The inputs and outputs of ``predict`` (:mod:`unitrefine.apply.predict_io`), called directly on tiny files:
which recordings ``data=`` names, which metric columns are read, and the predictions CSV and Phy TSVs, written
atomically. End-to-end runs are in tests/apply/test_prediction.py."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import snapshot

from unitrefine.apply.predict_io import (
    PHY_LABEL_FIELD,
    PHY_PROBABILITY_FIELD,
    PHY_REVIEW_FIELD,
    Source,
    _write_atomic,
    check_phy_folder,
    count_units,
    discover,
    phy_files,
    read_csv_metrics,
    write_phy,
    write_phy_review,
    write_predictions,
)
from unitrefine.errors import UnitRefineError


def _table(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def test_a_folder_of_tables_is_one_recording_per_table_in_name_order(tmp_path: Path) -> None:
    _table(tmp_path / "b_rec.tsv", "cluster_id\tsnr\n1\t5\n")
    _table(tmp_path / "a_rec.CSV", "cluster_id,snr\n1,5\n")
    _table(tmp_path / "notes.txt", "not a table\n")
    (tmp_path / "subfolder").mkdir()
    assert discover(tmp_path) == [Source("a_rec", tmp_path / "a_rec.CSV", "csv"),
                                  Source("b_rec", tmp_path / "b_rec.tsv", "csv")]
    assert discover(tmp_path / "b_rec.tsv") == [Source("b_rec", tmp_path / "b_rec.tsv", "csv")]


def test_tables_sharing_a_name_are_refused_naming_it(tmp_path: Path) -> None:
    _table(tmp_path / "recA.csv", "cluster_id,snr\n1,5\n")
    _table(tmp_path / "recA.tsv", "cluster_id\tsnr\n1\t5\n")
    _table(tmp_path / "recB.csv", "cluster_id,snr\n1,5\n")
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        discover(tmp_path)
    assert str(excinfo.value) == (f"{tmp_path}: several tables share the names ['recA']; rename them so each "
                                  "recording is unique.")
    assert snapshot(tmp_path) == before


def test_spikeinterface_export_folders_are_recordings_named_by_their_folder(tmp_path: Path) -> None:
    one = _table(tmp_path / "exports" / "mouse1" / "quality_metrics.csv", ",snr\n0,5\n").parent
    two = _table(tmp_path / "exports" / "mouse2" / "template_metrics.csv", ",half_width\n0,1e-4\n").parent
    (tmp_path / "exports" / "empty").mkdir()
    assert discover(one) == [Source("mouse1", one, "csv")]
    assert discover(one.parent) == [Source("mouse1", one, "csv"), Source("mouse2", two, "csv")]


def test_analyzer_folders_are_named_by_the_folder_or_the_zarr_stem(tmp_path: Path) -> None:
    """Recognised by their marker file (spikeinterface_info.json) or ``.zarr``, without being opened."""
    binary = _table(tmp_path / "sessionA" / "spikeinterface_info.json", "{}").parent
    zarr = tmp_path / "sessionB.zarr"
    zarr.mkdir()
    assert discover(binary) == [Source("sessionA", binary, "analyzer")]
    assert discover(zarr) == [Source("sessionB", zarr, "analyzer")]


def test_only_the_needed_metrics_are_read_old_names_mapped_by_unit_id(tmp_path: Path) -> None:
    """A text column nobody needs is not even parsed; ``peak_trough_ratio`` becomes the current name, sign
    flipped (as SpikeInterface maps it); the rows are indexed by the unit ids as text."""
    path = _table(tmp_path / "m.csv", "unit_id,snr,peak_trough_ratio,notes,firing_rate\n"
                                      "7,5.5,0.25,looks fine,1\n12,2.0,-0.5,noisy,2\n")
    ids, metrics = read_csv_metrics(path, ["snr", "peak_after_to_trough_ratio"])
    assert ids.tolist() == ["7", "12"]
    assert list(metrics.columns) == ["snr", "peak_after_to_trough_ratio"]
    assert metrics.index.tolist() == ["7", "12"] and metrics.index.name == "unit_id"
    np.testing.assert_array_equal(metrics["snr"].to_numpy(), [5.5, 2.0])
    np.testing.assert_array_equal(metrics["peak_after_to_trough_ratio"].to_numpy(), [-0.25, 0.5])
    assert count_units(Source("m", path, "csv")) == 2


def test_a_needed_metric_that_is_not_a_number_names_the_file_column_and_unit(tmp_path: Path) -> None:
    path = _table(tmp_path / "m.tsv", "cluster_id\tsnr\tnotes\n3\t5.5\tok\n9\t4 uV\tok\n")
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        read_csv_metrics(path, ["snr"])
    assert str(excinfo.value).startswith(f"{path}: metric column 'snr' is not numeric: unit 9 has '4 uV'")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------


def test_predictions_are_written_as_given_into_a_new_folder(tmp_path: Path) -> None:
    table = pd.DataFrame({"recording": ["recA", "recA"], "unit_id": ["01", "x7"], "predicted_label": ["good", "mua"],
                          "confidence": [0.625, 0.5], "probability_good": [0.625, 0.5]})
    path = tmp_path / "out" / "deeper" / "predictions.csv"
    write_predictions(table, path)
    assert path.read_text() == ("recording,unit_id,predicted_label,confidence,probability_good\n"
                                "recA,01,good,0.625,0.625\nrecA,x7,mua,0.5,0.5\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["predictions.csv"]  # no temporary file left


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text("the previous predictions\n")

    def disk_full(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(UnitRefineError) as excinfo:
        _write_atomic(path, disk_full)
    assert str(excinfo.value).startswith(f"Could not write {path}: No space left on device. It was left as it was")
    assert snapshot(tmp_path) == {"predictions.csv": b"the previous predictions\n"}

    def interrupted(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # not turned into a user error, but cleaned up the same
        _write_atomic(path, interrupted)
    assert snapshot(tmp_path) == {"predictions.csv": b"the previous predictions\n"}


def test_phy_tsvs_hold_the_cluster_ids_labels_and_rounded_probabilities(tmp_path: Path) -> None:
    ids = pd.Series(["3", "10", "4.0"])
    written = write_phy(tmp_path, ids, pd.Series(["good", "noise", "mua"]), pd.Series([0.123456, 1.0, 0.5]))
    assert written == phy_files(tmp_path) == [tmp_path / f"cluster_{PHY_LABEL_FIELD}.tsv",
                                              tmp_path / f"cluster_{PHY_PROBABILITY_FIELD}.tsv"]
    assert written[0].read_text() == "cluster_id\tunitrefine_label\n3\tgood\n10\tnoise\n4\tmua\n"
    assert written[1].read_text() == "cluster_id\tunitrefine_probability\n3\t0.1235\n10\t1.0000\n4\t0.5000\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def test_the_phy_review_tsv_lists_only_queued_units_by_rank(tmp_path: Path) -> None:
    path = write_phy_review(tmp_path, pd.Series(["5", "6", "7", "8"]), pd.Series([True, False, True, True]),
                            pd.Series([3, 0, 1, 2]))
    assert path == phy_files(tmp_path, review=True)[-1] == tmp_path / f"cluster_{PHY_REVIEW_FIELD}.tsv"
    assert path.read_text() == "cluster_id\tunitrefine_review\n7\t1\n8\t2\n5\t3\n"


def test_unit_ids_that_are_not_integers_are_refused_before_any_tsv(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    for ids in (pd.Series(["1", "unit_b", "3"]), pd.Series(["1", "2.5", "3"])):
        bad = ids.iloc[1]
        with pytest.raises(UnitRefineError) as excinfo:
            write_phy(tmp_path, ids, pd.Series(["good"] * 3), pd.Series([0.9] * 3))
        assert str(excinfo.value) == (f"Unit ids ['{bad}'] are not integers, so they are not Phy cluster ids; "
                                      "phy_folder needs them.")
        with pytest.raises(UnitRefineError, match=f"Unit ids \\['{bad}'\\] are not integers"):
            write_phy_review(tmp_path, ids, pd.Series([True] * 3), pd.Series([1, 2, 3]))
    assert snapshot(tmp_path) == before


def test_the_phy_folder_is_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "params.py").write_text("dat_path = 'x.dat'\n")
    with caplog.at_level(logging.WARNING):
        check_phy_folder(tmp_path)
    assert caplog.text == ""
    (tmp_path / "params.py").unlink()
    with caplog.at_level(logging.WARNING):
        check_phy_folder(tmp_path)
    assert f"{tmp_path} has no params.py: is it a Phy folder?" in caplog.text
    (tmp_path / "cluster_group.tsv").write_text("cluster_id\tgroup\n")
    with pytest.raises(UnitRefineError) as excinfo:
        check_phy_folder(tmp_path / "cluster_group.tsv")
    assert str(excinfo.value) == (f"The Phy folder {tmp_path / 'cluster_group.tsv'} (phy_folder=) is a file: give "
                                  "the Phy folder that holds it.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster_group.tsv"]
