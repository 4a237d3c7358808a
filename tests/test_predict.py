"""``python -m unitrefine.predict`` as users run it: a real subprocess, real Hydra, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import copy_recordings


def run_predict(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unitrefine.predict", *args], cwd=cwd, capture_output=True, text=True, check=False,
        timeout=300,
    )


def test_predict_on_an_analyzer_with_relative_paths(tmp_path: Path, synthetic_bank: Path, synthetic_models) -> None:
    copy_recordings(synthetic_bank, tmp_path, [4])
    proc = run_predict(f"model={synthetic_models['three_class']}", "data=r4/analyzer", "output=out/predictions.csv",
                       "phy_folder=r4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Predicted 10 units of 1 recording(s)" in proc.stderr
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"unit_id": str})
    assert len(predictions) == 10 and set(predictions["recording"]) == {"analyzer"}  # the folder's name
    phy = pd.read_csv(tmp_path / "r4" / "cluster_unitrefine_label.tsv", sep="\t", dtype={"cluster_id": str})
    assert dict(zip(phy["cluster_id"], phy["unitrefine_label"])) == dict(zip(predictions["unit_id"],
                                                                             predictions["predicted_label"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r4"]  # Hydra wrote nothing into the cwd


def test_user_errors_exit_2_with_one_clear_line_and_write_nothing(tmp_path: Path, synthetic_models) -> None:
    pd.DataFrame({"cluster_id": [1, 2], "snr": [5.0, 9.0]}).to_csv(tmp_path / "m.csv", index=False)
    model = f"model={synthetic_models['three_class']}"
    for args, message in (
        ([model, "data=m.csv", "output=p.csv"], f"{tmp_path / 'm.csv'} lacks metrics ['num_spikes'"),
        ([model, "data=nope.csv", "output=p.csv"],
         f"data=nope.csv does not exist: looked in the working directory ({tmp_path / 'nope.csv'})"),
        (["data=m.csv", "output=p.csv"], "Set model=..."),
    ):
        proc = run_predict(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]  # nothing written (no p.csv, no Hydra outputs/)


def test_review_budget_from_the_command_line(tmp_path: Path) -> None:
    from _tiny_models import fit_model, write_unlabelled

    fit_model(tmp_path / "model", "three_class")
    write_unlabelled(tmp_path / "new", {"recA": (30, 11), "recB": (20, 12)})
    proc = run_predict("model=model", "data=new", "output=p.csv", "review=10%", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Review queue (review=10%, 10 % of the units): 5 of 50 units need review" in proc.stderr
    assert pd.read_csv(tmp_path / "p.csv")["needs_review"].sum() == 5
    for value, message in (("150%", "review=150% is over 100 %"), ("-1", "review=-1 is negative"),
                           ("51", "review=51 asks for more units than data=new holds (50)"), ("lots", "not a number")):
        before = {p: p.read_bytes() if p.is_file() else None for p in sorted(tmp_path.rglob("*"))}
        proc = run_predict("model=model", "data=new", "output=q.csv", f"review={value}", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert {p: p.read_bytes() if p.is_file() else None for p in sorted(tmp_path.rglob("*"))} == before


def test_file_errors_exit_2_naming_the_file_and_change_nothing(tmp_path: Path) -> None:
    """A truncated model file, and output= the data file (with the model given as its .skops file), from the
    command line: one line naming the file, exit status 2, every file as it was (more cases: test_prediction)."""
    from _tiny_models import fit_model, write_unlabelled

    fit_model(tmp_path / "model", "three_class")
    write_unlabelled(tmp_path / "new", {"recA": (20, 11)})
    (tmp_path / "broken").mkdir()
    for name in ("model_info.json", "best_model.skops"):
        content = (tmp_path / "model" / name).read_bytes()
        (tmp_path / "broken" / name).write_bytes(content if name.endswith(".json") else content[: len(content) // 2])
    snapshot = {p: p.read_bytes() if p.is_file() else None for p in sorted(tmp_path.rglob("*"))}
    for args, message in (
        (["model=broken", "output=p.csv"],
         f"The model file {tmp_path / 'broken' / 'best_model.skops'} could not be read"),
        (["model=model/best_model.skops", "output=new/recA.csv", "overwrite=true"],
         f"output={tmp_path / 'new' / 'recA.csv'} is an input of this command"),
    ):
        proc = run_predict(*args, "data=new/recA.csv", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert {p: p.read_bytes() if p.is_file() else None for p in sorted(tmp_path.rglob("*"))} == snapshot
