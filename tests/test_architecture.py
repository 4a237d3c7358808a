"""The packages' layering and where each library lives (``[tool.importlinter]`` in pyproject.toml), checked by
import-linter on the real source, and shown to fail when a forbidden import is added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the ``unitrefine`` under ``src``, with the contracts of ``cwd/pyproject.toml``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"  # the lint-imports script
    return subprocess.run([sys.executable, "-c", command, "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the source and the contracts, to break."""
    tmp = tmp_path_factory.mktemp("layering")
    shutil.copytree(ROOT / "src" / "unitrefine", tmp / "src" / "unitrefine",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def test_the_source_keeps_every_contract() -> None:
    proc = lint_imports(ROOT / "src", ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.count("KEPT") == 4 and "BROKEN" not in proc.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("data/tables.py", "from unitrefine.model import estimate  # noqa", "commands > run > apply"),
        ("search/objective.py", "import mlflow  # noqa", "MLflow only in tracking"),
        ("apply/prediction.py", "import skops.io  # noqa", "skops only in the model-folder contract"),
        ("run/stages.py", "import optuna  # noqa", "Optuna only in the search"),
        ("tracking/trial_runs.py", "from optuna.trial import TrialState  # noqa", "Optuna only in the search"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(copy: Path, module: str, line: str, broken: str) -> None:
    path = copy / "src" / "unitrefine" / module
    original = path.read_text(encoding="utf-8")
    try:
        path.write_text(original + f"\n{line}\n", encoding="utf-8")
        proc = lint_imports(copy / "src", copy)
    finally:
        path.write_text(original, encoding="utf-8")
    assert proc.returncode != 0
    assert f"{broken}" in proc.stdout and "BROKEN" in proc.stdout.split(broken, 1)[1].splitlines()[0]


def test_the_names_users_import_come_from_the_top_level_package() -> None:
    import unitrefine
    from unitrefine.api import train_model
    from unitrefine.export.folder import load_model_folder
    from unitrefine.search.estimators import TRUSTED_TYPES

    assert (unitrefine.train_model, unitrefine.load_model_folder, unitrefine.TRUSTED_TYPES) == (
        train_model, load_model_folder, TRUSTED_TYPES)
    assert set(unitrefine.__all__) == {"TRUSTED_TYPES", "UnitRefineError", "load_model_folder", "train_model"}


def test_no_module_imports_itself_back() -> None:
    import grimp  # import-linter's import graph

    graph = grimp.build_graph("unitrefine")
    cycles = sorted({tuple(sorted((m, i))) for m in graph.modules for i in graph.find_modules_directly_imported_by(m)
                     if i.startswith("unitrefine.") and graph.chain_exists(importer=i, imported=m)})
    assert cycles == []
