"""``python -m unitrefine.suggest`` as users run it: a real subprocess, real Hydra, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import snapshot, write_recording
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from unitrefine.export.folder import INFO_FILE, dump_model, write_json


def run_suggest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unitrefine.suggest", *args], cwd=cwd, capture_output=True, text=True, check=False,
        timeout=300,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A binary model folder (``model/``) and two recordings' metrics (``new/recA.csv``, ``new/recB.csv``)."""
    files = write_recording(tmp_path / "raw" / "train", n_units=80, seed=1, spread=2.5)
    X = pd.read_csv(files["metrics"]).drop(columns="cluster_id")
    X = X.rename(columns={"peak_to_valley": "peak_to_trough_duration"})
    y = (pd.read_csv(files["labels"], sep="\t")["group"] == "good").astype(int).to_numpy()
    model = Pipeline([("imputer", SimpleImputer(strategy="median")),
                      ("classifier", RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=1))])
    model.fit(X.astype("float32"), y)
    (tmp_path / "model").mkdir()
    dump_model(model, tmp_path / "model")
    write_json(tmp_path / "model" / INFO_FILE, {"label_conversion": {"0": "other", "1": "good"},
                                                "requirements": {"spikeinterface": "0.105.3"}, "metric_params": {}})
    (tmp_path / "new").mkdir()
    for name, seed in (("recA", 2), ("recB", 3)):
        metrics = write_recording(tmp_path / "raw" / name, n_units=25, seed=seed, spread=2.5)["metrics"]
        pd.read_csv(metrics).to_csv(tmp_path / "new" / f"{name}.csv", index=False)
    return tmp_path


def test_suggest_command_with_relative_paths_and_labels(workdir: Path) -> None:
    pd.DataFrame({"recording": "recA", "cluster_id": [1, 3], "group": ["good", "noise"]}).to_csv(
        workdir / "done.csv", index=False)
    proc = run_suggest("model=model", "data=new", "n=6", "labels=done.csv", "strategy=entropy", "output=out/next.csv",
                       cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Suggested 6 of 48 unlabelled units (2 already labelled) by entropy uncertainty" in proc.stderr
    got = pd.read_csv(workdir / "out" / "next.csv", dtype={"unit_id": str})
    assert list(got.columns) == ["recording", "unit_id", "rank", "score", "predicted_label", "probability_other",
                                 "probability_good"]
    assert got["rank"].tolist() == [1, 2, 3, 4, 5, 6] and (got["recording"].value_counts() == 3).all()
    assert not {("recA", "1"), ("recA", "3")} & set(zip(got["recording"], got["unit_id"]))
    # Hydra wrote nothing
    assert sorted(p.name for p in workdir.iterdir()) == ["done.csv", "model", "new", "out", "raw"]
    # The output exists now: refused without overwrite=true (exit 2, one line, file unchanged).
    before = (workdir / "out" / "next.csv").read_bytes()
    proc = run_suggest("model=model", "data=new", "output=out/next.csv", cwd=workdir)
    assert proc.returncode == 2 and "set overwrite=true" in proc.stderr and "Traceback" not in proc.stderr
    assert (workdir / "out" / "next.csv").read_bytes() == before


def test_user_errors_exit_2_with_one_clear_line_and_write_nothing(workdir: Path) -> None:
    before = snapshot(workdir)
    for args, message in (
        (["model=model", "data=nope", "output=p.csv"],
         f"data=nope does not exist: looked in the working directory ({workdir / 'nope'})"),
        (["model=model", "data=new", "output=p.csv", "strategy=margn"], "strategy must be one of margin"),
        (["model=model", "data=new", "output=p.csv", "labels=missing.csv"],
         f"labels=missing.csv does not exist: looked in the working directory ({workdir / 'missing.csv'})"),
        (["data=new", "output=p.csv"], "Set model=..."),
    ):
        proc = run_suggest(*args, cwd=workdir)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert snapshot(workdir) == before  # no p.csv, no Hydra outputs/, inputs as they were


def test_file_errors_name_the_file_and_write_nothing(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outputs are checked as predict checks them: a folder, a path under a file, an input (data, labels,
    the model folder), a damaged model file; relative paths from the working directory."""
    from unitrefine.apply.active import parse_suggest_config, suggest
    from unitrefine.errors import UnitRefineError

    monkeypatch.chdir(workdir)
    pd.DataFrame({"recording": "recA", "cluster_id": [1], "group": ["good"]}).to_csv(workdir / "done.csv", index=False)
    (workdir / "results").mkdir()
    (workdir / "broken").mkdir()
    (workdir / "broken" / INFO_FILE).write_bytes((workdir / "model" / INFO_FILE).read_bytes())
    (workdir / "broken" / "best_model.skops").write_bytes((workdir / "model" / "best_model.skops").read_bytes()[:100])
    cases = [
        ({"output": "results"}, f"output={workdir / 'results'} is a folder, not a file"),
        ({"output": "done.csv/p.csv"}, f"cannot be written: {workdir / 'done.csv'} is a file, not a folder"),
        ({"output": "new/recA.csv"}, f"output={workdir / 'new' / 'recA.csv'} is an input of this command"),
        ({"output": "done.csv", "labels": "done.csv"}, f"output={workdir / 'done.csv'} is an input of this command"),
        ({"output": "model/next.csv"}, f"is inside {workdir / 'model'}, an input of this command"),
        ({"output": "p.csv", "model": "broken/best_model.skops"},
         f"The model file {workdir / 'broken' / 'best_model.skops'} could not be read"),
        ({"output": "p.csv", "data": "newer"},
         f"data=newer does not exist: looked in the working directory ({workdir / 'newer'})"),
    ]
    for changes, message in cases:
        before = snapshot(workdir)
        options = {"model": "model", "data": "new", "overwrite": True, **changes}
        with pytest.raises(UnitRefineError) as excinfo:
            suggest(parse_suggest_config(options))
        assert message in str(excinfo.value), (changes, str(excinfo.value))
        assert snapshot(workdir) == before
