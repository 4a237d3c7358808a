"""Reading the user's tables (:mod:`unitrefine.data.tables`): silent data problems become a clear error or a warning
naming the file, the column and the units, at training (``load_dataset``) and at prediction (``predict``)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny_models import fit_model, write_unlabelled
from conftest import run_predict, snapshot

from unitrefine.config import DatasetConfig, RecordingConfig, TaskConfig
from unitrefine.data.dataset import UnitTable
from unitrefine.data.loading import load_dataset
from unitrefine.errors import UnitRefineError

TASK = TaskConfig(name="sua_vs_all", classes=["other", "good"],
                  mapping={"good": "good", "mua": "other", "noise": "other", "unsorted": None})
LABELS = "cluster_id\tgroup\n0\tgood\n1\tmua\n2\tnoise\n3\tgood\n"
OTHER = "cluster_id,snr,firing_rate\n0,5.0,1.0\n1,3.0,2.0\n2,1.0,0.5\n3,4.0,3.0\n"


def write_two(root: Path, metrics: str) -> list[RecordingConfig]:
    """Recording 'r1' (``metrics``) and 'r2' (a valid table), with the same labels."""
    (root / "m.csv").write_text(metrics)
    (root / "ok.csv").write_text(OTHER)
    (root / "l.tsv").write_text(LABELS)
    return [RecordingConfig(id="r1", metrics="m.csv", labels="l.tsv"),
            RecordingConfig(id="r2", metrics="ok.csv", labels="l.tsv")]


def train_two(root: Path, metrics: str) -> UnitTable:
    return load_dataset(DatasetConfig(name="ds", recordings=write_two(root, metrics)), TASK, root)


def refused(root: Path, metrics: str) -> str:
    """The message loading refuses ``metrics`` with; loading must leave every file as it was."""
    recs = write_two(root, metrics)
    before = snapshot(root)
    with pytest.raises(UnitRefineError) as err:
        load_dataset(DatasetConfig(name="ds", recordings=recs), TASK, root)
    assert snapshot(root) == before
    return str(err.value)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny three-class model on snr, isi_violations_ratio, firing_rate, presence_ratio, amplitude_median,
    peak_to_trough_duration."""
    return fit_model(tmp_path_factory.mktemp("tables_model") / "model", "three_class")


def new_data(root: Path, n: int = 12) -> Path:
    """One recording of ``n`` unlabelled units the model can score, ``root/new/rec.csv``."""
    return write_unlabelled(root / "new", {"rec": (n, 3)}) / "rec.csv"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------------------ duplicate columns
@pytest.mark.parametrize(("header", "shown"), [
    ("cluster_id,snr,firing_rate,snr", r"'snr' 2 times \(columns 2, 4: 'snr', 'snr'"),
    ("cluster_id,snr,firing_rate, SNR ", r"'snr' 2 times \(columns 2, 4: 'snr', ' SNR '"),
    ("cluster_id,snr,Firing_Rate,firing_rate", r"'Firing_Rate' 2 times \(columns 3, 4"),
], ids=["exact", "case-and-spaces", "case"])
def test_duplicate_column_at_training_names_file_and_column(tmp_path: Path, header: str, shown: str) -> None:
    body = "".join(f"{u},{u + 1.0},2.0,{u + 3.0}\n" for u in range(4))
    message = refused(tmp_path, header + "\n" + body)
    assert re.match(re.escape(f"The metrics file {tmp_path / 'm.csv'} has the column") + " " + shown, message), message


def test_duplicate_column_at_prediction_is_an_error_and_writes_nothing(tmp_path: Path, model: Path) -> None:
    data = new_data(tmp_path)
    df = pd.read_csv(data)
    df.insert(2, "snr_copy", df["snr"] + 1)
    df.rename(columns={"snr_copy": "snr"}).to_csv(data, index=False)
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError, match=re.escape(f"The metrics file {data} has the column 'snr' 2 times")):
        run_predict(model=model, data=data.parent, output=tmp_path / "p.csv")
    assert snapshot(tmp_path) == before


def test_repeated_id_column_must_repeat_the_ids(tmp_path: Path) -> None:
    table = train_two(tmp_path, "cluster_id,snr,cluster_id\n0,1.0,0\n1,2.0,1\n2,3.0,2\n3,4.0,3\n")
    assert list(table.X.columns) == ["snr", "firing_rate"]  # the echo is dropped, not a feature
    message = refused(tmp_path, "cluster_id,snr,cluster_id\n0,1.0,0\n1,2.0,1\n2,3.0,7\n3,4.0,3\n")
    assert message == (f"{tmp_path / 'm.csv'}: the column 'cluster_id' appears twice with different values (first at "
                       "unit 2). Keep one of them.")


# ------------------------------------------------------------------------------------------ separators
@pytest.mark.parametrize(("text", "message"), [
    ("cluster_id;snr;firing_rate\n0;5,0;1,0\n1;3,5;2\n2;1;0,5\n3;4;3\n",
     "looks semicolon-separated with decimal commas (e.g. '5,0')"),
    ("cluster_id\tsnr\tfiring_rate\n0\t5,25\t1\n1\t3\t2\n2\t1\t0\n3\t4\t3\n",
     "looks tab-separated with decimal commas (e.g. '5,25')"),
    ("cluster_id\tsnr\tfiring_rate\n0\t5.0\t1\n1\t3\t2\n2\t1\t0\n3\t4\t3\n",
     "looks tab-separated, but a .csv-extension file is read as comma-separated"),
], ids=["semicolon-decimal-comma", "tab-decimal-comma", "tab-in-csv"])
def test_other_separator_or_decimal_commas_are_named_not_called_ragged(tmp_path: Path, text: str, message: str) -> None:
    refusal = refused(tmp_path, text)
    assert refusal.startswith(f"The metrics file {tmp_path / 'm.csv'} {message}"), refusal
    assert "comma-separated" in refusal and "ragged" not in refusal


def test_decimal_comma_in_a_comma_separated_file_is_named(tmp_path: Path) -> None:
    message = refused(tmp_path, 'cluster_id,snr,firing_rate\n0,5.0,1\n1,"3,5",2\n2,1,0.5\n3,4,3\n')
    assert message.startswith(f"{tmp_path / 'm.csv'}: metric column 'snr' is not numeric: unit 1 has '3,5' (a decimal "
                              "comma? Numbers need a decimal point)"), message


# ------------------------------------------------------------------------------------------ values lost to NaN
def test_values_beyond_float32_and_inf_warn_with_units_at_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        table = train_two(tmp_path, "cluster_id,snr,firing_rate\n0,1e39,1.0\n1,3.0,-1e308\n2,inf,0.5\n3,4.0,3.0\n")
    assert table.X["snr"].isna().tolist()[:4] == [True, False, True, False]  # as SpikeInterface: float32, inf -> NaN
    warned = warnings_of(caplog)
    where = f"Recording 'r1' ({tmp_path / 'm.csv'}): "
    assert any(w.startswith(where + "metric 'snr' has 2 values that are infinite or beyond float32's range")
               and "units '0', '2'" in w for w in warned), warned
    assert any(w.startswith(where + "metric 'firing_rate' has 1 values") and "units '1'" in w for w in warned), warned
    assert not any("'r2'" in w for w in warned), warned


def test_metric_empty_for_a_recording_warns_at_training(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        table = train_two(tmp_path, "cluster_id,snr,firing_rate\n0,,1.0\n1,,2.0\n2,,0.5\n3,,3.0\n")
    assert table.X["snr"][table.units["recording"] == "r1"].isna().all()
    warned = warnings_of(caplog)
    assert any(w.startswith(f"Recording 'r1' ({tmp_path / 'm.csv'}): metric 'snr' has no usable value for any of its "
                            "4 units") and "imputed" in w for w in warned), warned


def test_metric_empty_or_beyond_float32_warns_at_prediction(
    tmp_path: Path, model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = new_data(tmp_path, n=12)
    df = pd.read_csv(data)
    df["snr"] = np.nan
    df["firing_rate"] = df["firing_rate"].astype(object)
    df.loc[[2, 5], "firing_rate"] = ["1e39", "inf"]
    df.to_csv(data, index=False)
    with caplog.at_level(logging.WARNING):
        result = run_predict(model=model, data=data, output=tmp_path / "p.csv")
    assert len(result.predictions) == 12
    warned = warnings_of(caplog)
    where = f"{data} (model {model}): "
    assert any(w.startswith(where + "metric 'snr' has no usable value for any of its 12 units") for w in warned), warned
    ids = df["cluster_id"].astype(str).tolist()
    assert any(w.startswith(where + "metric 'firing_rate' has 2 values that are infinite or beyond float32's range")
               and f"'{ids[2]}', '{ids[5]}'" in w for w in warned), warned
