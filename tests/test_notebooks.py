"""The tutorials in experiments/tutorials/ run top to bottom in a real Jupyter kernel, and are stored without outputs.

Each notebook is executed with nbclient in a kernel of this interpreter (a kernel spec registered in a temporary
``JUPYTER_PATH``, so neither a user's kernels nor a missing one matter), with ``UNITREFINE_TUTORIAL_DIR`` pointing
at a temporary folder: every output of the notebook goes there. nbclient raises on the first cell that errors;
shell cells (``%%bash``) raise when their command exits non-zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient
from nbformat import NotebookNode

from unitrefine.config import PROJECT_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "experiments" / "tutorials"
CSV_NOTEBOOK = "train_new_model_using_csv.ipynb"
ANALYZER_NOTEBOOK = "train_model_using_sorting_analyzer.ipynb"
KERNEL = "unitrefine-tutorials"
#: Each tutorial promises to run in under 3 minutes on 2 cores.
TIME_LIMIT_S = 180.0


def code_cells(nb: NotebookNode) -> list[NotebookNode]:
    """The notebook's code cells."""
    return [c for c in nb.cells if c.cell_type == "code"]


def outputs_of(nb: NotebookNode, kind: str) -> list[str]:
    """Every stream text (``kind="stream"``) or PNG (``kind="image/png"``) the executed notebook shows."""
    found = []
    for cell in code_cells(nb):
        for out in cell.get("outputs", []):
            if kind == "stream" and out.output_type == "stream":
                found.append(out.text)
            elif kind != "stream" and out.output_type in ("display_data", "execute_result") and kind in out.data:
                found.append(out.data[kind])
    return found


def project_outputs() -> set[str]:
    """Where runs write when nothing redirects them: the project's MLflow store, model folders, the tutorials folder."""
    bases = [PROJECT_ROOT / "mlruns", PROJECT_ROOT / "mlruns" / "artifacts", PROJECT_ROOT / "mlruns" / "optuna",
             NOTEBOOK_DIR, *PROJECT_ROOT.glob("experiments/*/models")]
    return {str(p.relative_to(PROJECT_ROOT)) for base in bases if base.is_dir() for p in base.iterdir()}


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JUPYTER_PATH holding one kernel spec: this interpreter with ipykernel."""
    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(root / "kernels" / KERNEL, overrides={"display_name": "unitrefine tutorials"})
    return root


def execute(name: str, work: Path, jupyter_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[NotebookNode, float]:
    """Execute ``experiments/tutorials/<name>`` in its folder; returns the executed notebook and the wall time.

    The executed copy is written to ``work`` (also when a cell fails) for a look at what went wrong.
    """
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("IPYTHONDIR", str(work / "ipython"))  # no user profile or startup files
    monkeypatch.setenv("UNITREFINE_TUTORIAL_DIR", str(work))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel picks its inline backend, as for a reader
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        nbformat.write(nb, work / name)
    return nb, time.perf_counter() - start


def check_csv_tutorial(nb: NotebookNode, work: Path) -> None:
    """Predictions for every unit of new_data.csv, the figures, and the registry's champion."""
    folder = work / "csv"
    predictions = pd.read_csv(folder / "model_predictions.csv")
    new_data = pd.read_csv(PROJECT_ROOT / "experiments" / "tutorial" / "data" / "new_data.csv")
    assert len(predictions) == len(new_data) == 50
    assert sorted(predictions["unit_id"]) == sorted(new_data["cluster_id"])
    assert set(predictions["predicted_label"]) <= {"good", "other"}
    assert {"api_model", "smoke_model", "smoke_model_2", "mlflow.db", "artifacts"} <= {p.name for p in folder.iterdir()}
    text = "".join(outputs_of(nb, "stream"))
    assert "-> promoted. models:/smoke@champion is v1" in text
    assert "models:/smoke@champion is version" in text
    assert len(outputs_of(nb, "image/png")) >= 6


def check_analyzer_tutorial(nb: NotebookNode, work: Path) -> None:
    """Predictions for every unit of the new analyzer that match its known labels; SpikeInterface agreed."""
    folder = work / "analyzers"
    predictions = pd.read_csv(folder / "new_recording_predictions.csv", dtype={"unit_id": str}).set_index("unit_id")
    truth = pd.read_csv(folder / "labels" / "new_recording_truth.tsv", sep="\t", dtype={"cluster_id": str})
    truth = truth.set_index("cluster_id")["group"]
    assert sorted(predictions.index) == sorted(truth.index)
    assert (predictions["predicted_label"] == truth.reindex(predictions.index)).mean() >= 0.8
    text = "".join(outputs_of(nb, "stream"))
    assert f"model_based_label_units agree on all {len(truth)} units" in text
    assert (folder / "model" / "best_model.skops").is_file() and (folder / "mlflow.db").is_file()
    assert len(outputs_of(nb, "image/png")) >= 4


CHECKS: dict[str, Callable[[NotebookNode, Path], None]] = {
    CSV_NOTEBOOK: check_csv_tutorial,
    ANALYZER_NOTEBOOK: check_analyzer_tutorial,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_is_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{name}: cells {dirty} hold outputs; clear them before committing"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert any("%matplotlib inline" in c.source for c in code_cells(nb)), "plots must render inline"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_runs_top_to_bottom(
    name: str, tmp_path: Path, jupyter_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = project_outputs()
    nb, seconds = execute(name, tmp_path, jupyter_path, monkeypatch)
    print(f"{name}: executed in {seconds:.0f} s")
    CHECKS[name](nb, tmp_path)
    assert project_outputs() == before, "the notebook wrote outside UNITREFINE_TUTORIAL_DIR"
    assert seconds < TIME_LIMIT_S, f"{name} took {seconds:.0f} s (the tutorials promise < {TIME_LIMIT_S:.0f} s)"
