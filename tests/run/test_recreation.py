"""Re-creating a run from its model folder or MLflow run: real Optuna, a real MLflow store in tmp, tiny data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_config, write_recording
from mlflow.tracking import MlflowClient
from sklearn.base import clone

from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import dump_model, load_model_folder
from unitrefine.run.recreation import (
    DataChanged,
    Recorded,
    find_record,
    recorded_config,
    recreate,
    reproducibility_warnings,
)

N_TRIALS = 4


@dataclass(frozen=True)
class Trained:
    """A tracked smoke-sized run: rec0-rec2 searched (grouped CV), rec3 held out, the export not refit."""

    root: Path
    folder: Path
    run_id: str
    uri: str
    data: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from unitrefine.run.training import train

    root = tmp_path_factory.mktemp("recorded")
    recordings = [
        {"id": f"rec{i}", "subject": f"s{i // 2}", **write_recording(root / "data" / f"rec{i}", 60, seed=100 + i)}
        for i in range(4)
    ]
    cfg = make_config(root, recordings, [f"search.n_trials={N_TRIALS}", "search.n_jobs=1", "cv.n_splits=3",
                                         "cv.group_by=recording", "cv.holdout_recordings=[rec3]",
                                         "cv.refit_on_all=false"])
    result = train(cfg)
    assert result is not None and result.run_id
    return Trained(root, result.model_folder, result.run_id, result.tracking_uri, {r["id"]: r for r in recordings})


def _store_state(t: Trained) -> tuple[int, int, list[tuple[str, int]]]:
    """Runs and registered versions in the MLflow store, and the recorded study's journal files (name, size)."""
    client = MlflowClient(t.uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    versions = client.search_model_versions()
    journals = sorted((p.name, p.stat().st_size) for p in (t.root / "mlruns").rglob("*.journal"))
    return len(runs), len(versions), journals


def _trial_configs(folder: Path) -> dict[int, dict]:
    board = pd.read_csv(folder / "model_accuracies.csv")
    return {int(r.trial): {"classifier": r.classifier, **json.loads(r.params)} for r in board.itertuples()}


@pytest.mark.parametrize("source", ["{run}", "models:/smoke@challenger"])
def test_recreated_from_its_run_is_identical_and_leaves_the_record_alone(
    trained: Trained, tmp_path: Path, source: str
) -> None:
    before = _store_state(trained)
    report = recreate(source.format(run=trained.run_id), tmp_path / "again", tracking_uri=trained.uri)
    assert report.identical, report.summary()
    assert report.differences == () and report.summary().endswith("Result: identical")
    assert report.run_id == trained.run_id and report.n_trials == N_TRIALS
    assert report.max_probability_difference == 0.0 and report.labels_differ == 0
    assert report.max_score_difference == 0.0 and report.max_holdout_difference == 0.0
    assert report.n_training_units == 180  # rec0-rec2: the export was not refit on the held-out rec3
    assert report.recreated_folder == tmp_path / "again"
    # The same trials, configuration by configuration, as the recorded leaderboard.
    assert _trial_configs(tmp_path / "again") == _trial_configs(trained.folder)
    assert len(_trial_configs(trained.folder)) == N_TRIALS
    # Not tracked, not registered, the recorded study not resumed.
    assert _store_state(trained) == before


def test_recreated_from_its_model_folder_is_identical_and_the_temporary_folder_goes(trained: Trained) -> None:
    report = recreate(str(trained.folder))
    assert report.identical, report.summary()
    assert report.max_probability_difference == 0.0 and report.recreated_folder is None
    assert report.run_id == trained.run_id  # from model_info.json; its tags (the whole data's fingerprint) read too


@contextmanager
def _edited(path: Path, edit: Callable[[pd.DataFrame], None]) -> Iterator[None]:
    """``path`` (a CSV/TSV) changed by ``edit`` for the duration, then restored byte for byte."""
    original = path.read_bytes()
    sep = "\t" if path.suffix == ".tsv" else ","
    df = pd.read_csv(path, sep=sep)
    edit(df)
    df.to_csv(path, sep=sep, index=False)
    try:
        yield
    finally:
        path.write_bytes(original)


def _snr(df: pd.DataFrame) -> None:
    df.loc[3, "snr"] = 99.5  # unit id 7


def _relabel(df: pd.DataFrame) -> None:
    df.loc[0, "group"] = "noise" if df.loc[0, "group"] != "noise" else "good"  # unit id 1


@pytest.mark.parametrize(
    ("recording", "file", "edit", "expected"),
    [
        ("rec1", "metrics", _snr, ["recording 'rec1'", "quality_metrics.csv", "1 value(s) changed", "unit 7 snr",
                                   "-> 99.5"]),
        # A held-out recording: outside the training units, caught by the run's whole-dataset fingerprint.
        ("rec3", "labels", _relabel, ["recording 'rec3'", "cluster_group.tsv", "1 unit(s) relabelled", "unit 1 '"]),
    ],
)
def test_changed_data_are_refused_before_any_training(
    trained: Trained, tmp_path: Path, recording: str, file: str, edit: Callable, expected: list[str]
) -> None:
    before = _store_state(trained)
    path = Path(trained.data[recording][file])
    with _edited(path, edit):
        for source in (str(trained.folder), trained.run_id):
            with pytest.raises(DataChanged) as err:
                recreate(source, tmp_path / "again", tracking_uri=trained.uri)
            message = str(err.value)
            assert "Nothing was trained" in message and str(path) in message
            assert all(e in message for e in expected), message
            assert not (tmp_path / "again").exists()
    assert _store_state(trained) == before


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{root}/no/such/folder", "there is no such folder, and it is not an MLflow run id"),
        ("0123456789abcdef0123456789abcdef", "There is no MLflow run 0123456789abcdef0123456789abcdef in sqlite:///"),
        ("models:/smoke@nope", "models:/smoke@nope is not in the registry"),
        ("{root}/data", "lacks ['config.yaml', 'model_info.json'"),
        ("{trial}", "is a trial (trial-0001) of the study run {run}: re-create source={run}"),
    ],
)
def test_bad_sources_give_a_clear_message(trained: Trained, tmp_path: Path, source: str, message: str) -> None:
    client = MlflowClient(trained.uri)
    trial = client.search_runs([client.get_run(trained.run_id).info.experiment_id],
                               "attributes.run_name = 'trial-0001'")[0].info.run_id
    fill = {"root": trained.root, "trial": trial, "run": trained.run_id}
    with pytest.raises(UnitRefineError) as err:
        recreate(source.format(**fill), tmp_path / "again", tracking_uri=trained.uri)
    assert message.format(**fill) in str(err.value)
    assert not isinstance(err.value, DataChanged) and not (tmp_path / "again").exists()


def test_a_missing_mlflow_store_is_an_error_not_a_new_store(tmp_path: Path) -> None:
    with pytest.raises(UnitRefineError, match="No MLflow store at"):
        recreate("0123456789abcdef0123456789abcdef", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_time_cap_and_several_workers_are_warned_about(trained: Trained, tmp_path: Path) -> None:
    recorded = find_record(str(trained.folder), trained.uri, tmp_path)
    cfg = recorded_config(recorded, tmp_path / "again")
    assert cfg.search.storage == "memory" and not cfg.tracking.enabled and cfg.output.folder == str(tmp_path / "again")
    assert cfg.seed == 42 and cfg.search.n_trials == N_TRIALS  # otherwise as recorded
    assert len(recorded.workers) == 1 and reproducibility_warnings(cfg, recorded) == []
    cfg.search.timeout_s = 30.0
    workers = ("node1-17-a1b2c3", "node1-18-d4e5f6", "node-2-40-0a0b0c")
    warnings = reproducibility_warnings(cfg, Recorded(recorded.source, recorded.folder, recorded.info, workers=workers))
    assert any("time cap (search.timeout_s=30)" in w and "cannot be reproduced exactly" in w for w in warnings)
    assert any("3 worker processes on 2 host(s)" in w for w in warnings)


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unitrefine.recreate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def _tampered_copy(trained: Trained, dest: Path) -> Path:
    """The recorded folder with trial 1's classifier and the exported model changed."""
    folder = shutil.copytree(trained.folder, dest)
    board = pd.read_csv(folder / "model_accuracies.csv")
    board.loc[board["trial"] == 1, "classifier"] = "another_classifier"
    board.to_csv(folder / "model_accuracies.csv", index=False)
    model, _ = load_model_folder(folder)
    units = pd.read_csv(folder / "training_data.csv").drop(columns=["recording", "unit_id"]).astype(np.float32)
    y = pd.read_csv(folder / "labels.csv")["class_code"].to_numpy()
    (folder / "best_model.skops").unlink()
    dump_model(clone(model).fit(units.iloc[::2], y[::2]), folder)  # fitted on half the units
    return folder


def test_the_command_exits_3_naming_what_differs(trained: Trained, tmp_path: Path) -> None:
    folder = _tampered_copy(trained, tmp_path / "tampered")
    proc = _run_cli(f"source={folder}", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Result: differs" in proc.stderr
    assert "trial 1: parameters differ (classifier another_classifier -> " in proc.stderr
    assert "probabilities on the 180 training units differ by up to" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_command_exits_4_on_changed_data_and_2_on_a_bad_source(trained: Trained, tmp_path: Path) -> None:
    with _edited(Path(trained.data["rec1"]["metrics"]), _snr):
        proc = _run_cli(f"source={trained.folder}", f"output={tmp_path / 'again'}", cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "Refusing to re-create" in proc.stderr and "unit 7 snr" in proc.stderr
    proc = _run_cli(f"source={tmp_path / 'nothing'}", cwd=tmp_path)
    assert proc.returncode == 2 and "there is no such folder" in proc.stderr
    assert "Traceback" not in proc.stderr and sorted(p.name for p in tmp_path.iterdir()) == []
