"""Everything a run can know before its search is checked first: each refusal names its key and writes nothing.

Each case breaks one thing of a valid tiny run (a real MLflow name check, the real file system) and asserts the
message (the config key, in the user's terms, and what to do) and that the project folder is exactly as before:
no MLflow store, no study journal, no model folder, no user file moved or renamed. The cases that go through
:func:`unitrefine.run.training.train` fail before any work; the others call :func:`unitrefine.run.preflight.preflight`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import make_config

from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import write_model_folder
from unitrefine.run.preflight import preflight
from unitrefine.run.training import train


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (and every folder and link) with its content."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = (
            b"<link>" + str(os.readlink(p)).encode() if p.is_symlink() else p.read_bytes() if p.is_file() else b"<dir>"
        )
    return out


def refused(tmp_path: Path, recs: list[dict[str, str]], overrides: list[str], run: bool = False,
            **changes: object) -> str:
    """The message of the refusal of the run (``run``: through :func:`train`), asserting nothing was written."""
    cfg = make_config(tmp_path, recs, ["search.n_trials=1", *overrides], **changes)
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as info:
        (train if run else preflight)(cfg)
    assert snapshot(tmp_path) == before, "a refused run must not write anything"
    assert not (tmp_path / "mlruns").exists()
    return str(info.value)


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A user's file; nothing can be created under it (even by root)."""
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    return path


# ------------------------------------------------------------------------------------------------------------ names


def test_an_experiment_name_with_a_slash_is_refused_before_the_search(tmp_path: Path, tiny_recordings) -> None:
    message = refused(tmp_path, tiny_recordings, [], run=True, experiment_name="my lab/v1")
    assert message.startswith("experiment_name='my lab/v1': it contains '/'")
    assert "experiments/<experiment_name>/" in message  # where the name is a folder
    assert "Names cannot contain '/' or ':')" in message  # MLflow's registry's own words
    assert "Choose another experiment_name, e.g. experiment_name=my_lab_v1." in message


@pytest.mark.parametrize(("name", "words"), [
    ("lab:v1", ["tracking.model_name is unset", "Names cannot contain '/' or ':'"]),
    ("x" * 501, ["MLflow refuses it as an experiment name", "exceeds the maximum length of 500"]),
    ("", ["is not a folder name", "Invalid experiment name"]),
])
def test_experiment_names_mlflow_refuses_are_refused(tmp_path: Path, tiny_recordings, name: str,
                                                     words: list[str]) -> None:
    message = refused(tmp_path, tiny_recordings, [], experiment_name=name)
    assert message.startswith(f"experiment_name='{name}': ")
    for w in words:
        assert w in message


def test_a_registered_model_name_mlflow_refuses_names_tracking_model_name(tmp_path: Path, tiny_recordings) -> None:
    message = refused(tmp_path, tiny_recordings, ["tracking.model_name='a/b'"])
    assert message.startswith("tracking.model_name='a/b': MLflow's registry refuses it")
    assert "set tracking.register=false" in message and "experiment_name" not in message
    # Not registering, the name is not a registered model's: a colon is then fine (a valid run writes nothing).
    cfg = make_config(tmp_path, tiny_recordings, ["tracking.register=false"], experiment_name="lab:v1")
    before = snapshot(tmp_path)
    preflight(cfg)
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------------------ output


def test_an_output_folder_that_is_a_file_is_refused_with_overwrite_and_never_moved(tmp_path: Path,
                                                                                 tiny_recordings) -> None:
    user_file = tmp_path / "r.csv"
    user_file.write_bytes(b"a,b\n1,2\n")
    message = refused(tmp_path, tiny_recordings, [f"output.folder={user_file}", "output.overwrite=true"], run=True)
    assert f"Output folder {user_file} is an existing file; it is not replaced" in message
    assert "output.overwrite" in message
    assert user_file.read_bytes() == b"a,b\n1,2\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no hidden .r.csv.old-*


def test_an_output_folder_that_is_a_link_is_never_replaced(tmp_path: Path, tiny_recordings) -> None:
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    message = refused(tmp_path, tiny_recordings, [f"output.folder={link}", "output.overwrite=true"])
    assert f"Output folder {link} is a symbolic link (to {target}); it is not replaced" in message
    assert link.is_symlink() and link.readlink() == target


def test_an_output_folder_that_cannot_be_made_is_refused(tmp_path: Path, tiny_recordings, a_file: Path) -> None:
    out = a_file / "model"
    message = refused(tmp_path, tiny_recordings, [f"output.folder={out}"], run=True)
    assert message == (f"output.folder={out} cannot be made: {a_file} is a file, not a folder. Choose an "
                       "output.folder where you can write.")
    assert a_file.read_text() == "mine\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders (tested under a file instead)")
def test_an_output_folder_in_a_read_only_folder_is_refused(tmp_path: Path, tiny_recordings) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        message = refused(tmp_path, tiny_recordings, [f"output.folder={locked / 'model'}"])
    finally:
        locked.chmod(0o755)
    assert f"output.folder={locked / 'model'} cannot be made: {locked} is not writable" in message


# ------------------------------------------------------------------------------------------------------------ stores


def test_an_unwritable_tracking_store_names_tracking_uri_not_search_storage(tmp_path: Path, tiny_recordings,
                                                                            a_file: Path) -> None:
    message = refused(tmp_path, tiny_recordings, [f"tracking.uri=sqlite:///{a_file}/mlruns/mlflow.db"], run=True)
    assert message == (f"The MLflow store of tracking.uri cannot be written: {a_file} is a file, not a folder. "
                       "Set tracking.uri to a store you can write to, e.g. sqlite:///<a folder you can write to>/"
                       "mlflow.db.")
    assert "search.storage" not in message  # the journal beside it is not the user's setting


def test_a_tracking_store_that_is_a_folder_is_refused(tmp_path: Path, tiny_recordings) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    message = refused(tmp_path, tiny_recordings, [f"tracking.uri=sqlite:///{folder}"])
    assert f"The MLflow store of tracking.uri cannot be written: {folder} is a folder, not a file." in message


def test_a_tracking_uri_mlflow_cannot_open_names_tracking_uri(tmp_path: Path, tiny_recordings) -> None:
    message = refused(tmp_path, tiny_recordings, ["tracking.uri=foo://lab/mlflow"], run=True)
    assert message.startswith("tracking.uri='foo://lab/mlflow' is not a store MLflow can open (scheme 'foo').")
    assert "sqlite:///path/to/mlflow.db" in message and "search.storage" not in message


@pytest.mark.parametrize("location", ["under_file", "foo://bucket/artifacts"])
def test_an_artifact_location_mlflow_cannot_write_names_tracking_artifact_location(
    tmp_path: Path, tiny_recordings, a_file: Path, location: str
) -> None:
    where = str(a_file / "artifacts") if location == "under_file" else location
    message = refused(tmp_path, tiny_recordings, [f"tracking.artifact_location='{where}'"])
    assert "tracking.artifact_location" in message
    assert (f"{a_file} is a file, not a folder" if location == "under_file" else "'foo://' locations") in message


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_an_unwritable_study_storage_names_search_storage(tmp_path: Path, tiny_recordings, a_file: Path,
                                                          kind: str) -> None:
    spec = f"{a_file}/study.journal" if kind == "journal" else f"sqlite:///{a_file}/study.db"
    message = refused(tmp_path, tiny_recordings, [f"search.storage='{spec}'"], run=True)
    assert message == (f"The study storage search.storage='{spec}' cannot be written: {a_file} is a file, not a "
                       "folder. Set search.storage to a location you can write to (or 'memory' for a study that is "
                       "not kept).")


def test_every_problem_is_listed_at_once(tmp_path: Path, tiny_recordings, a_file: Path) -> None:
    message = refused(tmp_path, tiny_recordings, [f"output.folder={a_file}", "tracking.uri=foo://x",
                                                  f"search.storage='{a_file}/s.journal'"], experiment_name="a:b")
    assert message.startswith("The run cannot start; nothing was written:\n  - experiment_name='a:b'")
    for key in ("Output folder", "tracking.uri='foo://x'", "The study storage search.storage="):
        assert f"\n  - {key}" in message


def test_a_valid_run_passes_and_the_check_writes_nothing(tmp_path: Path, tiny_recordings) -> None:
    cfg = make_config(tmp_path, tiny_recordings, [f"output.folder={tmp_path / 'deep' / 'model'}"])
    before = snapshot(tmp_path)
    preflight(cfg)
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------------------------ last step


def test_a_file_put_at_the_output_folder_during_the_run_is_not_moved(tmp_path: Path) -> None:
    """The model folder goes in place at the end: a file that appeared there meanwhile stays, the model does not."""
    folder = tmp_path / "model"

    def fill(staging: Path) -> None:
        (staging / "model_info.json").write_text("{}")
        folder.write_bytes(b"user data")  # e.g. another program, while the model was written

    with pytest.raises(UnitRefineError, match="is an existing file; it is not replaced"):
        write_model_folder(folder, fill, overwrite=True)
    assert folder.read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder, no .model.old-*
