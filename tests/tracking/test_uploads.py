"""Uploading a folder to a run (:func:`unitrefine.tracking.uploads.upload_folder`): what MLflow reads back is the
folder, subfolders in place, under the artifact path asked for, and the log says how much moved."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow.artifacts
import pytest
from mlflow.tracking import MlflowClient

from unitrefine.tracking import uploads
from unitrefine.tracking.uploads import upload_folder


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, MlflowClient, str]:
    """A real SQLite store with one experiment: its URI, a client and the experiment id."""
    root = tmp_path_factory.mktemp("uploads")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("uploads", artifact_location=(root / "artifacts").as_uri())


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The messages :mod:`unitrefine.tracking.uploads` logged."""
    return [r.getMessage() for r in caplog.records if r.name == uploads.log.name]


def write_folder(folder: Path) -> dict[str, bytes]:
    """A folder of three files, one two levels down; the files by relative path."""
    files = {"best_model.skops": bytes(range(256)) * 40, "model_info.json": b'{"label_conversion": {}}',
             "plots/cv/scores.csv": b"trial,score\n0,0.5\n"}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def read_back(uri: str, run_id: str, artifact_path: str | None, dest: Path) -> dict[str, bytes]:
    """Every file of the run under ``artifact_path``, downloaded with MLflow, by path relative to it."""
    root = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(dest),
                                                    tracking_uri=uri))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("artifact_path", ["model_folder", "runs/0/model_folder", None])
def test_the_run_holds_the_folder_under_the_artifact_path_with_subfolders_in_place(
    store: tuple[str, MlflowClient, str], tmp_path: Path, artifact_path: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uri, client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    files = write_folder(tmp_path / "folder")
    before = {p: p.read_bytes() for p in (tmp_path / "folder").rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="unitrefine.tracking.uploads"):
        upload_folder(client, run_id, tmp_path / "folder", artifact_path)

    assert read_back(uri, run_id, artifact_path, tmp_path / "download") == files
    top = {f.path for f in client.list_artifacts(run_id, artifact_path)}
    prefix = f"{artifact_path}/" if artifact_path else ""
    assert top == {f"{prefix}best_model.skops", f"{prefix}model_info.json", f"{prefix}plots"}
    assert [f.path for f in client.list_artifacts(run_id, f"{prefix}plots/cv")] == [f"{prefix}plots/cv/scores.csv"]
    total = sum(len(data) for data in files.values())
    assert logged(caplog)[0] == (f"Uploading 3 files ({total / 1e6:.1f} MB) from {tmp_path / 'folder'} "
                                  f"to MLflow run {run_id}.")
    assert logged(caplog)[1].startswith(f"Uploaded 3 files ({total / 1e6:.1f} MB) in ")
    assert {p: p.read_bytes() for p in (tmp_path / "folder").rglob("*") if p.is_file()} == before  # left as it was


def test_megabytes_in_the_log_are_the_folder_s_bytes(
    store: tuple[str, MlflowClient, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri, client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "big.bin").write_bytes(bytes(1_250_000))
    (tmp_path / "folder" / "small.bin").write_bytes(bytes(300_000))
    with caplog.at_level(logging.INFO, logger="unitrefine.tracking.uploads"):
        upload_folder(client, run_id, tmp_path / "folder", "blobs")
    assert "Uploading 2 files (1.6 MB)" in logged(caplog)[0] and "Uploaded 2 files (1.6 MB) in" in logged(caplog)[1]
    assert {f.path: f.file_size for f in client.list_artifacts(run_id, "blobs")} == {
        "blobs/big.bin": 1_250_000, "blobs/small.bin": 300_000}


def test_an_empty_folder_uploads_nothing_and_says_so(
    store: tuple[str, MlflowClient, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="unitrefine.tracking.uploads"):
        upload_folder(client, run_id, tmp_path / "empty", "model_folder")
    assert client.list_artifacts(run_id) == []
    assert logged(caplog)[0].startswith("Uploading 0 files (0.0 MB)")
    assert logged(caplog)[1].startswith("Uploaded 0 files (0.0 MB) in ")


def test_an_upload_above_the_progress_bar_size_stores_the_same_files(
    store: tuple[str, MlflowClient, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the bar on (not shown here: no terminal), the files and the log lines are the same."""
    uri, client, experiment = store
    monkeypatch.setattr(uploads, "BAR_BYTES", 1)
    run_id = client.create_run(experiment).info.run_id
    files = write_folder(tmp_path / "folder")
    with caplog.at_level(logging.INFO, logger="unitrefine.tracking.uploads"):
        upload_folder(client, run_id, tmp_path / "folder", "model_folder")
    assert read_back(uri, run_id, "model_folder", tmp_path / "download") == files
    assert [m.split(" (")[0] for m in logged(caplog)] == ["Uploading 3 files", "Uploaded 3 files"]
