"""Tests for :mod:`unitrefine.data.dataset`: loading per-unit metrics and curation labels (CSV mode)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot
from omegaconf import OmegaConf

from unitrefine.config import PROJECT_ROOT, DatasetConfig, RecordingConfig, TaskConfig
from unitrefine.data.dataset import UnitTable
from unitrefine.data.loading import load_dataset
from unitrefine.errors import UnitRefineError

TASK = TaskConfig(
    name="sua_vs_all",
    classes=["other", "good"],
    mapping={"good": "good", "mua": "other", "noise": "other", "unsorted": None},
)

# A small valid recording: 4 units, 2 metrics, both classes present.
METRICS = "cluster_id,snr,firing_rate\n0,5.0,1.0\n1,3.0,2.0\n2,1.0,0.5\n3,4.0,3.0\n"
LABELS = "cluster_id\tgroup\n0\tgood\n1\tmua\n2\tnoise\n3\tgood\n"
M, L = "m.csv", "l.tsv"


# ----------------------------------------------------------------------------------------------- helpers
def write(path: Path, content: str | bytes) -> Path:
    """Write ``content`` byte-exactly (no newline translation) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def rec(rid: str, metrics: str, labels: str | None = None, subject: str | None = None) -> RecordingConfig:
    return RecordingConfig(id=rid, metrics=metrics, labels=labels, subject=subject)


def load(root: Path, *recs: RecordingConfig, **dataset_kw) -> UnitTable:
    return load_dataset(DatasetConfig(name="ds", recordings=list(recs), **dataset_kw), TASK, root)


def labels_tsv(labels: dict[int, str]) -> str:
    return "cluster_id\tgroup\n" + "".join(f"{u}\t{g}\n" for u, g in labels.items())


def random_metrics(ids: list[int], columns: list[str], seed: int) -> tuple[str, np.ndarray]:
    """A metrics CSV of seeded random values, and the values themselves."""
    values = np.random.default_rng(seed).normal(size=(len(ids), len(columns)))
    rows = [",".join([str(u), *(repr(float(v)) for v in row)]) for u, row in zip(ids, values)]
    return "\n".join([",".join(["cluster_id", *columns]), *rows]) + "\n", values


# ----------------------------------------------------------------------------------------------- unit ids
def test_empty_id_header_as_spikeinterface_writes_it(tmp_path: Path) -> None:
    write(tmp_path / M, ",snr,firing_rate\n7,5.0,1.0\n8,3.0,2.0\n9,1.0,0.5\n")
    write(tmp_path / L, labels_tsv({7: "good", 8: "mua", 9: "noise"}))
    t = load(tmp_path, rec("r1", M, L))
    assert t.units["unit_id"].tolist() == ["7", "8", "9"]
    assert list(t.X.columns) == ["snr", "firing_rate"]
    np.testing.assert_array_equal(t.X["snr"].to_numpy(), np.float32([5.0, 3.0, 1.0]))
    assert t.y.tolist() == [1, 0, 0]


@pytest.mark.parametrize("index_header", ["", "Unnamed: 0"], ids=["empty-header", "literal-unnamed"])
def test_old_pandas_index_before_cluster_id_is_dropped(tmp_path: Path, index_header: str) -> None:
    write(tmp_path / M, f"{index_header},cluster_id,snr\n0,10,5.0\n1,11,3.0\n2,12,1.0\n")
    write(tmp_path / L, labels_tsv({10: "good", 11: "mua", 12: "good"}))
    t = load(tmp_path, rec("r1", M, L))
    assert t.units["unit_id"].tolist() == ["10", "11", "12"]
    assert list(t.X.columns) == ["snr"]
    assert t.units["label"].tolist() == ["good", "mua", "good"]


def test_trailing_duplicated_cluster_id_is_not_a_feature(tmp_path: Path) -> None:
    write(tmp_path / M, "cluster_id,snr,firing_rate,cluster_id\n0,5.0,1.0,0\n1,3.0,2.0,1\n2,1.0,0.5,2\n")
    write(tmp_path / L, labels_tsv({0: "good", 1: "mua", 2: "noise"}))
    t = load(tmp_path, rec("r1", M, L))
    assert list(t.X.columns) == ["snr", "firing_rate"]
    assert t.units["unit_id"].tolist() == ["0", "1", "2"]


# ----------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    "source",
    ["phy-cluster_group-tsv", "csv-unit_id-label", "metrics-label_column"],
)
def test_label_sources_give_the_same_table(tmp_path: Path, source: str) -> None:
    labels = {0: "good", 1: "mua", 2: "noise", 3: "good"}
    if source == "phy-cluster_group-tsv":
        write(tmp_path / M, METRICS)
        write(tmp_path / "cluster_group.tsv", labels_tsv(labels))
        recording, kw = rec("r1", M, "cluster_group.tsv"), {}
    elif source == "csv-unit_id-label":
        write(tmp_path / M, METRICS)
        write(tmp_path / "labels.csv", "unit_id,label\n" + "".join(f"{u},{g}\n" for u, g in labels.items()))
        recording, kw = rec("r1", M, "labels.csv"), {}
    else:
        lines = METRICS.splitlines()
        body = [f"{line},{labels[int(line.split(',')[0])]}" for line in lines[1:]]
        write(tmp_path / M, "\n".join([lines[0] + ",quality", *body]) + "\n")
        recording, kw = rec("r1", M), {"label_column": "quality"}
    before = snapshot(tmp_path)
    t = load(tmp_path, recording, **kw)
    assert snapshot(tmp_path) == before, "loading must not write files"
    assert t.classes == ("other", "good")
    assert t.y.tolist() == [1, 0, 0, 1]
    assert t.units["label"].tolist() == ["good", "mua", "noise", "good"]
    assert list(t.X.columns) == ["snr", "firing_rate"]  # the label column is not a feature
    np.testing.assert_array_equal(t.X["firing_rate"].to_numpy(), np.float32([1.0, 2.0, 0.5, 3.0]))


def test_unlabelled_units_warned_and_dropped_and_null_mapped_labels_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / M, METRICS + "4,2.0,2.0\n5,6.0,1.5\n")
    write(tmp_path / L, labels_tsv({0: "good", 1: "mua", 2: "unsorted", 3: "good", 4: "noise"}))
    with caplog.at_level(logging.WARNING, logger="unitrefine.data"):
        t = load(tmp_path, rec("r1", M, L))
    assert t.units["unit_id"].tolist() == ["0", "1", "3", "4"]
    assert t.y.tolist() == [1, 0, 1, 0]
    assert t.units["label"].tolist() == ["good", "mua", "good", "noise"]  # unsorted (unit 2) is dropped
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 of 6 units have no label" in w and "'5'" in w for w in warnings), warnings


def test_bom_crlf_and_spaces_around_values(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    write(tmp_path / M, bom + b"cluster_id, snr ,firing_rate\r\n0, 5.0 ,1.0\r\n 1 ,3.0, 2.0\r\n2,1.0,0.5 \r\n")
    write(tmp_path / L, bom + b"cluster_id\tgroup\r\n 0 \t good \r\n1\tmua \r\n2 \t noise\r\n")
    write(tmp_path / "l.csv", bom + b"unit_id , label\r\n0 , good \r\n1, mua\r\n 2 ,noise \r\n")
    for labels in (L, "l.csv"):
        t = load(tmp_path, rec("r1", M, labels))
        assert list(t.X.columns) == ["snr", "firing_rate"]
        assert t.units["unit_id"].tolist() == ["0", "1", "2"]
        assert t.units["label"].tolist() == ["good", "mua", "noise"]
        assert t.y.tolist() == [1, 0, 0]
        np.testing.assert_array_equal(t.X.to_numpy(), np.float32([[5.0, 1.0], [3.0, 2.0], [1.0, 0.5]]))


# ----------------------------------------------------------------------------------------------- features
def test_old_spikeinterface_metric_names_are_renamed_and_ratio_sign_flipped(tmp_path: Path) -> None:
    write(
        tmp_path / M,
        "cluster_id,peak_to_valley,half_width,peak_trough_ratio\n0,0.5,0.2,-0.3\n1,0.7,0.25,0.4\n2,0.9,0.1,-1.5\n",
    )
    write(tmp_path / L, labels_tsv({0: "good", 1: "mua", 2: "good"}))
    t = load(tmp_path, rec("r1", M, L))
    assert list(t.X.columns) == ["peak_to_trough_duration", "trough_half_width", "peak_after_to_trough_ratio"]
    np.testing.assert_array_equal(t.X["peak_to_trough_duration"].to_numpy(), np.float32([0.5, 0.7, 0.9]))
    np.testing.assert_array_equal(t.X["trough_half_width"].to_numpy(), np.float32([0.2, 0.25, 0.1]))
    np.testing.assert_array_equal(t.X["peak_after_to_trough_ratio"].to_numpy(), np.float32([0.3, -0.4, 1.5]))


def test_old_and_new_metric_name_both_present_keeps_new(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / M, "cluster_id,peak_to_valley,peak_to_trough_duration\n0,9.0,0.5\n1,9.0,0.7\n")
    write(tmp_path / L, labels_tsv({0: "good", 1: "mua"}))
    with caplog.at_level(logging.WARNING, logger="unitrefine.data"):
        t = load(tmp_path, rec("r1", M, L))
    assert list(t.X.columns) == ["peak_to_trough_duration"]
    np.testing.assert_array_equal(t.X["peak_to_trough_duration"].to_numpy(), np.float32([0.5, 0.7]))
    assert any("has both 'peak_to_valley' and 'peak_to_trough_duration'" in r.getMessage() for r in caplog.records)


def test_metric_names_may_use_the_new_name_of_an_old_column(tmp_path: Path) -> None:
    write(tmp_path / M, "cluster_id,snr,peak_to_valley\n0,5.0,0.5\n1,3.0,0.7\n")
    write(tmp_path / L, labels_tsv({0: "good", 1: "mua"}))
    t = load(tmp_path, rec("r1", M, L), metric_names=["peak_to_trough_duration"])
    assert list(t.X.columns) == ["peak_to_trough_duration"]
    np.testing.assert_array_equal(t.X["peak_to_trough_duration"].to_numpy(), np.float32([0.5, 0.7]))


def test_column_missing_from_one_recording_is_nan_there_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "a.csv", "cluster_id,snr,drift\n0,5.0,0.1\n1,3.0,0.2\n")
    write(tmp_path / "b.csv", "cluster_id,snr\n0,4.0\n1,2.0\n2,1.0\n")
    write(tmp_path / "a.tsv", labels_tsv({0: "good", 1: "mua"}))
    write(tmp_path / "b.tsv", labels_tsv({0: "noise", 1: "good", 2: "mua"}))
    with caplog.at_level(logging.WARNING, logger="unitrefine.data"):
        t = load(tmp_path, rec("ra", "a.csv", "a.tsv"), rec("rb", "b.csv", "b.tsv"))
    assert list(t.X.columns) == ["snr", "drift"]
    in_b = (t.units["recording"] == "rb").to_numpy()
    assert in_b.tolist() == [False, False, True, True, True]
    assert t.X["drift"][in_b].isna().all()
    assert t.X["drift"][~in_b].notna().all()
    np.testing.assert_array_equal(t.X["snr"].to_numpy(), np.float32([5.0, 3.0, 4.0, 2.0, 1.0]))
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'rb'" in m and "drift" in m for m in messages), messages
    assert not any("'ra'" in m for m in messages), messages


def test_features_are_float32_and_infinities_become_nan(tmp_path: Path) -> None:
    write(tmp_path / M, "cluster_id,snr,firing_rate\n0,inf,1.0\n1,-inf,2.0\n2,3.5,1e40\n3,4.0,0.25\n")
    write(tmp_path / L, LABELS)
    t = load(tmp_path, rec("r1", M, L))
    assert all(dtype == np.float32 for dtype in t.X.dtypes)
    assert not np.isinf(t.X.to_numpy()).any()
    assert t.X["snr"].isna().tolist() == [True, True, False, False]
    # 1e40 overflows float32 to inf, which must also become NaN.
    assert t.X["firing_rate"].isna().tolist() == [False, False, True, False]
    assert t.X["snr"].iloc[2] == np.float32(3.5)


def test_metric_names_select_and_order_and_exclude_metrics_drops(tmp_path: Path) -> None:
    text, values = random_metrics([0, 1, 2, 3], ["snr", "firing_rate", "drift"], seed=0)
    write(tmp_path / M, text)
    write(tmp_path / L, LABELS)
    t = load(tmp_path, rec("r1", M, L), metric_names=["drift", "snr"])
    assert list(t.X.columns) == ["drift", "snr"]
    np.testing.assert_array_equal(t.X.to_numpy(), values[:, [2, 0]].astype(np.float32))
    t = load(tmp_path, rec("r1", M, L), exclude_metrics=["firing_rate"])
    assert list(t.X.columns) == ["snr", "drift"]
    np.testing.assert_array_equal(t.X.to_numpy(), values[:, [0, 2]].astype(np.float32))


def test_exclude_metrics_by_current_name_of_an_old_column(tmp_path: Path) -> None:
    write(tmp_path / M, "cluster_id,snr,peak_to_valley\n0,5.0,0.5\n1,3.0,0.7\n")
    write(tmp_path / L, labels_tsv({0: "good", 1: "mua"}))
    t = load(tmp_path, rec("r1", M, L), exclude_metrics=["peak_to_trough_duration"])
    assert list(t.X.columns) == ["snr"]


# ----------------------------------------------------------------------------------------------- UnitTable
def _two_recordings(root: Path, labels_b: dict[int, str] | None = None) -> UnitTable:
    text_a, _ = random_metrics([0, 1, 2, 3], ["snr", "firing_rate"], seed=1)
    text_b, _ = random_metrics([0, 1, 2], ["snr", "firing_rate"], seed=2)
    write(root / "a.csv", text_a)
    write(root / "b.csv", text_b)
    write(root / "a.tsv", labels_tsv({0: "good", 1: "mua", 2: "noise", 3: "good"}))
    write(root / "b.tsv", labels_tsv(labels_b or {0: "mua", 1: "good", 2: "mua"}))
    return load(root, rec("ra", "a.csv", "a.tsv", subject="s1"), rec("rb", "b.csv", "b.tsv"))


def test_fingerprint_equal_for_equal_data_and_changes_with_one_label(tmp_path: Path) -> None:
    first = _two_recordings(tmp_path / "x")
    again = _two_recordings(tmp_path / "y")  # same content, other folder
    assert first.fingerprint() == again.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", first.fingerprint())
    changed = _two_recordings(tmp_path / "z", labels_b={0: "mua", 1: "good", 2: "good"})
    assert changed.fingerprint() != first.fingerprint()
    # Same class after mapping ('noise' and 'mua' are both 'other'): y and X unchanged, fingerprint equal.
    same_class = _two_recordings(tmp_path / "w", labels_b={0: "noise", 1: "good", 2: "mua"})
    assert same_class.fingerprint() == first.fingerprint()


def test_fingerprint_changes_with_one_metric_value(tmp_path: Path) -> None:
    write(tmp_path / M, METRICS)
    write(tmp_path / L, LABELS)
    before = load(tmp_path, rec("r1", M, L)).fingerprint()
    write(tmp_path / M, METRICS.replace("2,1.0,0.5", "2,1.0,0.6"))
    assert load(tmp_path, rec("r1", M, L)).fingerprint() != before


def test_subset_groups_and_class_counts(tmp_path: Path) -> None:
    t = _two_recordings(tmp_path)
    assert len(t) == 7
    assert t.class_counts() == {"other": 4, "good": 3}
    assert list(t.class_counts()) == ["other", "good"]
    assert t.groups(None) is None
    assert t.groups("recording").tolist() == ["ra"] * 4 + ["rb"] * 3
    # A recording without a subject is its own subject.
    assert t.groups("subject").tolist() == ["s1"] * 4 + ["rb"] * 3

    s = t.subset(np.array([4, 0, 5]))
    assert len(s) == 3
    assert s.classes == t.classes
    assert s.units["recording"].tolist() == ["rb", "ra", "rb"]
    assert s.units["unit_id"].tolist() == ["0", "0", "1"]
    assert s.y.tolist() == [0, 1, 1]
    assert s.X.index.tolist() == [0, 1, 2] and s.units.index.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(s.X.to_numpy(), t.X.to_numpy()[[4, 0, 5]])
    assert s.class_counts() == {"other": 1, "good": 2}
    assert s.fingerprint() != t.fingerprint()


# ----------------------------------------------------------------------------------------------- real data
def test_tutorial_recording(tmp_path: Path) -> None:
    data = PROJECT_ROOT / "experiments" / "tutorial" / "data"
    t = load(PROJECT_ROOT, rec("tutorial", str(data / "quality_metrics.csv"), str(data / "cluster_group.tsv")))
    assert len(t) == 796
    assert t.class_counts() == {"other": 734, "good": 62}
    assert "Unnamed: 0" not in t.X.columns and "snr" in t.X.columns
    assert t.units["unit_id"].is_unique


def test_mouse_base_dataset_nine_recordings() -> None:
    path = PROJECT_ROOT / "conf" / "dataset" / "mouse_base.yaml"
    dataset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DatasetConfig), OmegaConf.load(path)))
    assert isinstance(dataset, DatasetConfig) and len(dataset.recordings) == 9
    t = load_dataset(dataset, TASK, PROJECT_ROOT)
    assert len(t) == 4420
    assert t.units.groupby("recording").ngroups == 9
    assert set(t.groups("subject")) == {"mouse1", "mouse2", "mouse3", "mouse4"}
    assert "peak_to_trough_duration" in t.X.columns and "peak_to_valley" not in t.X.columns
    assert "peak_after_to_trough_ratio" in t.X.columns and "peak_trough_ratio" not in t.X.columns
    assert not any(c.startswith("cluster_id") or c.startswith("Unnamed") for c in t.X.columns)
    assert all(dtype == np.float32 for dtype in t.X.dtypes)
    assert not np.isinf(t.X["snr"].to_numpy()).any()
    assert not np.isinf(t.X.to_numpy()).any()
    # mouse4_imec1 has 'inf' snr values in its file: they must have become NaN.
    assert t.X["snr"][t.units["recording"] == "mouse4_imec1"].isna().any()
    assert set(np.unique(t.y)) == {0, 1}


# ----------------------------------------------------------------------------------------------- bad input
def bad(case_id: str, match: str, files: dict[str, str | bytes | None] | None = None,
        recs: tuple[tuple[str, str, str | None], ...] = (("r1", M, L),), marks=(), **dataset_kw):
    """One bad-input case: files to write over the valid defaults (None: absent), recordings, config, match.

    In ``match``, ``{m}`` and ``{l}`` stand for the escaped full paths of ``m.csv`` and ``l.tsv``.
    """
    return pytest.param({M: METRICS, L: LABELS, **(files or {})}, recs, dataset_kw, match, id=case_id, marks=marks)


BAD_INPUTS = [
    bad("missing-metrics-file", r"The metrics file {m} does not exist", files={M: None}),
    bad("missing-labels-file", r"The labels file {l} does not exist", files={L: None}),
    bad("empty-metrics-file-0-bytes", r"The metrics file {m} is empty", files={M: ""}),
    bad("empty-labels-file-0-bytes", r"The labels file {l} is empty", files={L: b""}),
    bad("blank-lines-only", r"The metrics file {m} is empty", files={M: "\n\n"}),
    bad("header-only", r"The metrics file {m} has a header but no rows", files={M: "cluster_id,snr,firing_rate\n"}),
    bad("semicolon-delimited-csv", r"The metrics file {m} looks semicolon-separated",
        files={M: METRICS.replace(",", ";")}),
    bad("comma-separated-tsv", r"The labels file {l} looks comma-separated", files={L: LABELS.replace("\t", ",")}),
    bad("utf16-labels", r"The labels file {l} is not UTF-8", files={L: LABELS.encode("utf-16")}),
    bad("no-unit-id-column", r"{m}: no unit-id column.*'unit', 'snr'", files={M: "unit,snr\n0,1.0\n1,2.0\n"}),
    bad("duplicate-unit-ids", r"{m}: duplicate unit ids in column 'cluster_id': '1'",
        files={M: METRICS + "1,9.0,9.0\n"}),
    bad("duplicate-label-ids", r"{l}: duplicate unit ids in column 'cluster_id': '2'", files={L: LABELS + "2\tmua\n"}),
    bad("empty-unit-id", r"{m}: column 'cluster_id' has empty unit ids on lines 3",
        files={M: METRICS.replace("\n1,", "\n,")}),
    bad("labels-for-units-not-in-metrics", r"{l}: labels for units '9' that are not in {m}",
        files={L: LABELS + "9\tgood\n"}),
    bad("unknown-label-value", r"{l}: label 'great' \(first at unit 1\) is not known to task 'sua_vs_all'",
        files={L: LABELS.replace("mua", "great")}),
    bad("mixed-case-label", r"{l}: label 'Good'.*case-sensitive: did you mean 'Good' -> 'good'",
        files={L: LABELS.replace("3\tgood", "3\tGood")}),
    bad("numeric-labels-textual-task", r"{l}: label '0', '1' .*not known to task 'sua_vs_all'",
        files={L: labels_tsv({0: "1", 1: "0", 2: "0", 3: "1"})}),
    bad("empty-label-in-label-column", r"{m} column 'quality': units '2' have no label",
        files={M: "cluster_id,snr,quality\n0,1.0,good\n1,2.0,mua\n2,3.0,\n"}, recs=(("r1", M, None),),
        label_column="quality"),
    bad("only-one-class", r"Dataset 'ds' has no units of class \['good'\] under task 'sua_vs_all'",
        files={L: labels_tsv({0: "mua", 1: "noise", 2: "mua", 3: "noise"})}),
    bad("non-numeric-metric", r"{m}: metric column 'snr' is not numeric: unit 1 has '12 uV'",
        files={M: METRICS.replace("1,3.0,", "1,12 uV,")}),
    bad("all-nan-column-every-recording", r"Metric columns 'drift' are empty \(all NaN or inf\) in every recording",
        files={M: "cluster_id,snr,drift\n0,1.0,\n1,2.0,inf\n2,3.0,\n3,4.0,\n",
               "m2.csv": "cluster_id,snr,drift\n0,1.0,\n1,2.0,-inf\n", "l2.tsv": labels_tsv({0: "good", 1: "mua"})},
        recs=(("r1", M, L), ("r2", "m2.csv", "l2.tsv"))),
    bad("unit-with-no-finite-metric", r"Units 'r1/2' have no finite metric",
        files={M: METRICS.replace("2,1.0,0.5", "2,inf,")}),
    bad("ragged-row-more-fields", r"The metrics file {m} is malformed \(.*line 3, saw 4\)",
        files={M: METRICS.replace("1,3.0,2.0", "1,3.0,2.0,7.0")}),
    bad("ragged-first-row-more-fields", r"The metrics file {m} is malformed",
        files={M: METRICS.replace("0,5.0,1.0", "0,5.0,1.0,7.0")}),
    bad("trailing-comma-on-every-row", r"The metrics file {m} is malformed",
        files={M: METRICS.replace("\n", ",\n").replace("firing_rate,\n", "firing_rate\n")}),
    bad("duplicate-recording-ids", r"Recording ids \['r1'\] appear more than once in dataset 'ds'",
        recs=(("r1", M, L), ("r1", M, L))),
    bad("metric-names-in-no-file", r"Metrics 'spike_width' \(dataset.metric_names\) are in none of the metrics files",
        metric_names=["snr", "spike_width"]),
    bad("everything-excluded", r"Dataset 'ds' has no metric columns left", exclude_metrics=["snr", "firing_rate"]),
    bad("labels-three-columns-none-named", r"{l}: cannot tell which column holds the labels among 'a', 'b'",
        files={L: "cluster_id\ta\tb\n0\tgood\tx\n1\tmua\ty\n"}),
    bad("no-labels-and-no-label-column", r"Recording 'r1' has no labels: .*dataset.label_column",
        recs=(("r1", M, None),)),
    bad("label-column-not-in-table", r"{m}: no label column 'quality' \(dataset.label_column\)",
        recs=(("r1", M, None),), label_column="quality"),
]


@pytest.mark.parametrize(("files", "recs", "dataset_kw", "match"), BAD_INPUTS)
def test_bad_input_raises_clear_error(
    tmp_path: Path,
    files: dict[str, str | bytes | None],
    recs: tuple[tuple[str, str, str | None], ...],
    dataset_kw: dict,
    match: str,
) -> None:
    for name, content in files.items():
        if content is not None:
            write(tmp_path / name, content)
    before = snapshot(tmp_path)
    pattern = match.replace("{m}", re.escape(str(tmp_path / M))).replace("{l}", re.escape(str(tmp_path / L)))
    with pytest.raises(UnitRefineError, match=pattern):
        load(tmp_path, *(rec(rid, m, lab) for rid, m, lab in recs), **dataset_kw)
    assert snapshot(tmp_path) == before, "loading must not write or change files"
