"""The README's quick start as a user runs it: from a directory outside the project, in real subprocesses.

The install check (``python -m unitrefine.train +experiment=smoke``) trains a model, and the README's ``predict``
line labels the tutorial's ``new_data.csv`` with it, as written (its ``data=`` and ``output=`` verbatim: the example
file is found in the project, the output lands in the working directory); only the model folder is the one just
trained, and MLflow and the model folder go to a temporary directory instead of the project.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

from unitrefine.config import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"


def readme_commands(module: str) -> list[list[str]]:
    """Every ``python -m <module>`` command of the README's bash blocks, as arguments (continuations joined,
    comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            args = shlex.split(line, comments=True)
            if args[:3] == ["python", "-m", module]:
                commands.append(args[3:])
    return commands


def run(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=600)


def test_install_check_and_predict_on_the_example_file_from_outside_the_project(tmp_path: Path) -> None:
    assert "+experiment=smoke" in README.read_text(encoding="utf-8")  # the install check the README names
    predict = [c for c in readme_commands("unitrefine.predict") if any("new_data.csv" in a for a in c)][0]
    assert not any(a.startswith("impute_missing") for a in predict)  # no extra option needed
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    assert not work.is_relative_to(PROJECT_ROOT)
    outputs = [f"tracking.uri=sqlite:///{out}/mlflow.db", f"tracking.artifact_location={out.as_uri()}/artifacts",
               f"output.folder={out}/model"]
    train = run("unitrefine.train", ["+experiment=smoke", *outputs], cwd=work)
    assert train.returncode == 0, train.stderr[-3000:]
    assert list(work.iterdir()) == []  # nothing written where the command ran
    args = [f"model={out / 'model'}" if a.startswith("model=") else a for a in predict]
    proc = run("unitrefine.predict", args, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = next(a.split("=", 1)[1] for a in predict if a.startswith("output="))
    assert sorted(p.name for p in work.iterdir()) == [output]
    predictions = pd.read_csv(work / output)
    assert len(predictions) == 50 and set(predictions["recording"]) == {"new_data"}
    assert set(predictions["predicted_label"]) <= {"good", "other"}
