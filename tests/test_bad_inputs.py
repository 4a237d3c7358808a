"""Bad inputs, training and prediction, in one table: each ends with one clear message and writes nothing.

Every case starts from a valid tiny dataset (three recordings) and a valid model folder, breaks one thing,
and runs the real entry point: ``train()`` in this process (the command line maps its UnitRefineError to exit
status 2, checked here for the cases marked ``cli``), the real ``python -m unitrefine.train`` /
``python -m unitrefine.predict`` in a subprocess, or :func:`unitrefine.export.folder.load_model_folder`. It must fail
with a message naming the file, column, unit or key (and what to do), and leave every file as it was: no
model folder, no MLflow store, no study journal, no predictions.

Decided, not errors (tested at the end): a UTF-8 byte-order mark, CRLF line ends and spaces around values
in metrics and labels files load as if they were not there.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_config, snapshot, write_recording

from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import load_model_folder
from unitrefine.run.training import train

Recs = list[dict[str, str]]


def make_recordings(root: Path) -> Recs:
    recs = []
    for i in range(3):
        files = write_recording(root / "data" / f"rec{i}", n_units=40, seed=300 + i)
        recs.append({"id": f"rec{i}", "subject": f"s{i}", **files})
    return recs


# ------------------------------------------------------------------------------------------ file edits
def edit(recording: int, kind: str, change: Callable[[str], str]) -> Callable[[Recs], Recs]:
    """Rewrite one recording's metrics or labels file through ``change``."""

    def apply(recs: Recs) -> Recs:
        path = Path(recs[recording][kind])
        path.write_bytes(change(path.read_text()).encode())
        return recs

    return apply


def set_row(line: int, value: str) -> Callable[[str], str]:
    """Replace line ``line`` (0 = header) of a table by ``value``."""

    def change(text: str) -> str:
        lines = text.splitlines()
        lines[line] = value
        return "\n".join(lines) + "\n"

    return change


def set_cell(line: int, column: int, value: str, sep: str = ",") -> Callable[[str], str]:
    def change(text: str) -> str:
        lines = text.splitlines()
        cells = lines[line].split(sep)
        cells[column] = value
        lines[line] = sep.join(cells)
        return "\n".join(lines) + "\n"

    return change


def relabel(mapping: dict[str, str]) -> Callable[[str], str]:
    """Labels file: replace whole label values."""

    def change(text: str) -> str:
        lines = text.splitlines()
        out = [lines[0]] + [
            "\t".join([u, mapping.get(g, g)]) for u, g in (line.split("\t") for line in lines[1:])
        ]
        return "\n".join(out) + "\n"

    return change


def same(recs: Recs) -> Recs:
    return recs


def duplicate_id(recs: Recs) -> Recs:
    return [recs[0], {**recs[1], "id": recs[0]["id"]}, recs[2]]


def missing_file(kind: str) -> Callable[[Recs], Recs]:
    def apply(recs: Recs) -> Recs:
        return [{**recs[0], kind: str(Path(recs[0][kind]).with_name("nope.csv"))}, *recs[1:]]

    return apply


# ------------------------------------------------------------------------------------------ training cases
# (id, change of the recordings, overrides, message regex; "{m0}"/"{l0}" stand for rec0's metrics/labels path)
TRAIN_CASES = [
    ("nan-inf-only-unit", edit(0, "metrics", set_row(3, "5,nan,inf,,-inf,NaN,")), [],
     r"Units 'rec0/5' have no finite metric at all"),
    ("metric-with-units", edit(0, "metrics", set_cell(2, 1, "12 uV")), [],
     r"{m0}: metric column 'snr' is not numeric: unit 3 has '12 uV'.*plain numbers"),
    ("truncated-metrics-csv", edit(0, "metrics", lambda t: t[: len(t) - 25]), [],
     r"The metrics file {m0} is malformed: its last line has \d of the header's 7 fields.*truncated"),
    ("mixed-case-labels", edit(1, "labels", relabel({"good": "Good", "mua": "MUA"})), [],
     r"cluster_group.tsv: label 'Good', 'MUA'.*case-sensitive: did you mean 'Good' -> 'good', 'MUA' -> 'mua'"),
    ("numeric-0-1-labels-textual-task", edit(0, "labels", relabel({"good": "1", "mua": "0", "noise": "0"})), [],
     r"{l0}: label '0', '1' \(first at unit \d+\) is not known to task 'sua_vs_all'.*choose another task"),
    ("duplicate-recording-id", duplicate_id, [], r"Recording ids \['rec0'\] appear more than once"),
    ("missing-metrics-file", missing_file("metrics"), [], r"The metrics file .*nope.csv does not exist"),
    ("missing-labels-file", missing_file("labels"), [], r"The labels file .*nope.csv does not exist"),
    ("empty-labels-file", edit(0, "labels", lambda t: ""), [], r"The labels file {l0} is empty"),
    ("header-only-metrics", edit(0, "metrics", lambda t: t.splitlines()[0] + "\n"), [],
     r"The metrics file {m0} has a header but no rows"),
    ("semicolon-metrics", edit(0, "metrics", lambda t: t.replace(",", ";")), [],
     r"The metrics file {m0} looks semicolon-separated"),
    ("labels-for-unknown-units", edit(0, "labels", lambda t: t + "999\tgood\n"), [],
     r"{l0}: labels for units '999' that are not in {m0}"),
    ("duplicate-unit-ids", edit(0, "metrics", lambda t: t + t.splitlines()[1] + "\n"), [],
     r"{m0}: duplicate unit ids in column 'cluster_id': '1'"),
    ("one-class-only", lambda recs: [edit(i, "labels", relabel({"good": "mua"}))(recs) and r
                                     for i, r in enumerate(recs)], [],
     r"no units of class \['good'\] under task 'sua_vs_all'"),
    ("metric-names-absent", same, ["dataset.metric_names=[snr,spike_width]"],
     r"Metrics 'spike_width' \(dataset.metric_names\) are in none of the metrics files"),
    ("wrong-type-override", same, ["search.n_trials=many"], r"Invalid configuration at key 'search.n_trials'"),
    ("wrong-type-bool-override", same, ["search.resume=perhaps"],
     r"search\.resume must be one of: true, false, strict \(got 'perhaps'\)"),
    ("unknown-config-key", same, ["+search.n_trails=5"],
     r"Invalid configuration at key 'search\.n_trails': there is no such setting \(did you mean search\.n_trials\?\)"),
    ("unknown-classifier", same, ["+search_space.classifier.random_forrest={}"],
     r"'random_forrest' is not an allowed classifier"),
    ("unknown-holdout-recording", same, ["cv.holdout_recordings=[rec9]"],
     r"cv\.holdout_recordings names \['rec9'\], which are not recordings of the dataset \['rec0', 'rec1', 'rec2'\]"),
    ("unsupported-storage", same, ["search.storage=mysql://u@127.0.0.1/db"],
     r"search.storage='mysql://u@127.0.0.1/db' is not supported.*postgresql://"),
    ("unreachable-postgresql", same, ["search.storage=postgresql://nobody@127.0.0.1:9/none"],
     r"Could not open the study storage postgresql://nobody@127.0.0.1:9/none .*server running"),
    ("heartbeat-longer-than-grace", same, ["search.heartbeat_s=30", "search.grace_period_s=10"],
     r"search.grace_period_s larger than it"),
]


@pytest.mark.parametrize(("change", "overrides", "match"), [pytest.param(*c[1:], id=c[0]) for c in TRAIN_CASES])
def test_bad_training_input_fails_clearly_and_writes_nothing(
    tmp_path: Path, change: Callable[[Recs], Recs], overrides: list[str], match: str
) -> None:
    recs = change(make_recordings(tmp_path))
    before = snapshot(tmp_path)
    pattern = match.replace("{m0}", re.escape(recs[0]["metrics"])).replace("{l0}", re.escape(recs[0]["labels"]))
    with pytest.raises(UnitRefineError, match=pattern):
        train(make_config(tmp_path, recs, ["search.n_trials=2", *overrides]))
    assert snapshot(tmp_path) == before, "a failed run must not write anything (no mlruns, no model, no journal)"


# ------------------------------------------------------------------------------------------ command line
def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)


def test_command_line_user_errors_exit_2_with_one_message_and_write_nothing(tmp_path: Path) -> None:
    """The same errors through the real command (one process per case): exit 2, no traceback, nothing written."""
    recs = make_recordings(tmp_path)
    edit(0, "metrics", lambda t: t[: len(t) - 25])(recs)
    listing = "dataset.recordings=[" + ",".join(f"{{id:{r['id']},metrics:'{r['metrics']}',labels:'{r['labels']}'}}"
                                                 for r in recs) + "]"
    common = ["+experiment=smoke", f"root={tmp_path}", "cv.holdout_recordings=[]", "cv.group_by=null"]
    cases = [
        ([*common, listing], 2, f"The metrics file {recs[0]['metrics']} is malformed: its last line"),
        ([*common, "search.n_trials=many"], 2, "Invalid configuration at key 'search.n_trials'"),
        (["+experiment=no_such_experiment", f"root={tmp_path}"], 2, "experiment/no_such_experiment"),
    ]
    before = snapshot(tmp_path)
    for args, code, message in cases:
        proc = run("unitrefine.train", *args, cwd=tmp_path)
        assert proc.returncode == code, (args, proc.stderr[-2000:])
        assert message in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------ prediction
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    result = train(make_config(root, make_recordings(root), ["search.n_trials=2", "tracking.enabled=false",
                                                              "output.folder=model"]))
    written = {p.name for p in result.model_folder.iterdir()}
    assert {"best_model.skops", "model_info.json", "training_data.csv"} <= written
    return result.model_folder


def copy_model(model_folder: Path, tmp_path: Path, change: Callable[[Path], None]) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    change(folder)
    return folder


def crafted_skops(folder: Path) -> None:
    """Replace the model by a skops file holding a type off the reviewed list, which calls a function."""
    import os

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    sio.dump(FunctionTransformer(func=os.system), folder / "best_model.skops")


LOAD_CASES = [
    ("two-skops-files", lambda f: shutil.copy(f / "best_model.skops", f / "other.skops"),
     r"must hold exactly one .skops file; it holds \['best_model.skops', 'other.skops'\]"),
    ("no-skops-file", lambda f: (f / "best_model.skops").unlink(), r"must hold exactly one .skops file; it holds none"),
    ("no-model-info", lambda f: (f / "model_info.json").unlink(), r"has no model_info.json"),
    ("model-info-not-json", lambda f: (f / "model_info.json").write_text("{not json"),
     r"model_info.json is not valid JSON"),
    ("untrusted-type-in-skops", crafted_skops,
     r"not on unitrefine's reviewed list: \['posix.system'\]\. It was not loaded"),
    ("model-folder-absent", lambda f: shutil.rmtree(f), r"Model folder .*model does not exist"),
]


@pytest.mark.parametrize(("change", "match"), [pytest.param(*c[1:], id=c[0]) for c in LOAD_CASES])
def test_bad_model_folder_is_refused(tmp_path: Path, model_folder: Path, change: Callable[[Path], None],
                                     match: str) -> None:
    folder = copy_model(model_folder, tmp_path, change)
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError, match=match):
        load_model_folder(folder)
    assert snapshot(tmp_path) == before


def _predict_data(tmp_path: Path, model_folder: Path, drop: str | None = None) -> Path:
    """A metrics CSV of the units the model was trained on (minus ``drop``), as prediction input."""
    data = pd.read_csv(model_folder / "training_data.csv")
    data = data[data["recording"] == "rec0"].drop(columns=["recording"])
    data = data.rename(columns={"unit_id": "cluster_id"})
    if drop:
        data = data.drop(columns=[drop])
    path = tmp_path / "input" / "quality_metrics.csv"
    path.parent.mkdir()
    data.to_csv(path, index=False)
    return path


PREDICT_CASES = [
    ("predict-input-missing-required-metric", "missing", r"lacks metrics \['snr'\] that model .* needs"),
    ("predict-metric-with-units", "units", r"metric column 'snr' is not numeric: unit \S+ has '4 uV'"),
    ("predict-two-skops-files", "two-skops", r"must hold exactly one .skops file"),
    ("predict-data-absent", "no-data", r"The data \S+/input/absent\.csv does not exist"),
]


@pytest.mark.parametrize(("case", "match"), [pytest.param(*c[1:], id=c[0]) for c in PREDICT_CASES])
def test_bad_prediction_input_exits_2_and_writes_no_predictions(tmp_path: Path, model_folder: Path, case: str,
                                                                match: str) -> None:
    if not Path(__file__).parents[1].joinpath("src", "unitrefine", "predict.py").is_file():
        pytest.skip("python -m unitrefine.predict does not exist yet")
    folder = copy_model(model_folder, tmp_path, lambda f: None)
    data = _predict_data(tmp_path, model_folder, drop="snr" if case == "missing" else None)
    if case == "units":
        table = pd.read_csv(data)
        table["snr"] = table["snr"].astype(str)
        table.loc[1, "snr"] = "4 uV"
        table.to_csv(data, index=False)
    elif case == "two-skops":
        shutil.copy(folder / "best_model.skops", folder / "copy.skops")
    elif case == "no-data":
        data = tmp_path / "input" / "absent.csv"
    before = snapshot(tmp_path)
    proc = run("unitrefine.predict", f"model={folder}", f"data={data}", f"output={tmp_path / 'out.csv'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search(match, proc.stderr), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------ decided: loads
def test_bom_crlf_and_spaces_in_labels_and_metrics_load_as_if_absent(tmp_path: Path) -> None:
    recs = make_recordings(tmp_path)
    clean = train(make_config(tmp_path / "clean", recs, ["search.n_trials=1", "tracking.enabled=false"]))
    for r in recs:
        for kind in ("metrics", "labels"):
            path = Path(r[kind])
            sep = "\t" if kind == "labels" else ","
            lines = [sep.join(f" {c} " for c in line.split(sep)) for line in path.read_text().splitlines()]
            path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    messy = train(make_config(tmp_path / "messy", recs, ["search.n_trials=1", "tracking.enabled=false"]))
    info = [json.loads((r.model_folder / "model_info.json").read_text()) for r in (clean, messy)]
    assert info[0]["trained_on"] == info[1]["trained_on"]  # same units, classes and data fingerprint
    # The very same table: unit ids, labels and metric values.
    tables = [pd.read_csv(r.model_folder / "training_data.csv") for r in (clean, messy)]
    pd.testing.assert_frame_equal(tables[1], tables[0])
