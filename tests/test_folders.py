"""Output folders written atomically (:mod:`unitrefine.folders`): staged beside their place, renamed into it only
on success; a user's file, link or non-model folder is never moved, renamed or replaced."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from unitrefine.errors import UnitRefineError
from unitrefine.folders import check_output_folder, staged_folder, write_folder

MARKER = "model_info.json"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden staging folders included) with a file's bytes (None for a folder)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def fill_model(folder: Path) -> None:
    (folder / MARKER).write_text('{"new": true}', encoding="utf-8")
    (folder / "best_model.skops").write_bytes(b"new model")


def test_a_new_folder_appears_only_when_its_block_ends_and_no_staging_folder_is_left(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "model"
    with staged_folder(folder, overwrite=False, marker=MARKER) as staging:
        fill_model(staging)
        assert staging.parent == folder.parent and staging.name.startswith(".model.partial-")
        assert not folder.exists()  # nothing at the user's path while the folder is written
    assert snapshot(tmp_path / "out") == {"model": None, f"model/{MARKER}": b'{"new": true}',
                                          "model/best_model.skops": b"new model"}


@pytest.mark.parametrize("error", [RuntimeError("fit failed"), KeyboardInterrupt()])
def test_an_error_or_ctrl_c_while_writing_leaves_the_old_folder_as_it_was(tmp_path: Path,
                                                                           error: BaseException) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / MARKER).write_text('{"old": true}', encoding="utf-8")
    before = snapshot(tmp_path)

    def fail(staging: Path) -> None:
        fill_model(staging)
        raise error

    with pytest.raises(type(error)) as excinfo:
        write_folder(folder, fail, overwrite=True, marker=MARKER)
    assert excinfo.value is error  # the error itself, not another raised while cleaning up
    assert snapshot(tmp_path) == before  # old folder intact, staging folder removed


def test_overwrite_replaces_a_model_folder_whole(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / MARKER).write_text('{"old": true}', encoding="utf-8")
    (folder / "stale.csv").write_text("old", encoding="utf-8")
    assert write_folder(folder, fill_model, overwrite=True, marker=MARKER) == folder
    assert snapshot(tmp_path) == {"model": None, f"model/{MARKER}": b'{"new": true}',
                                  "model/best_model.skops": b"new model"}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_users_file_at_the_output_path_is_never_replaced(tmp_path: Path, overwrite: bool) -> None:
    user_file = tmp_path / "model"
    user_file.write_bytes(b"the user's notes")
    before = snapshot(tmp_path)
    message = rf"Output folder {re.escape(str(user_file))} is an existing file; it is not replaced \(whatever"
    with pytest.raises(UnitRefineError, match=message):  # with or without overwrite
        write_folder(user_file, fill_model, overwrite=overwrite, marker=MARKER)
    assert snapshot(tmp_path) == before


def test_a_symbolic_link_is_never_replaced_nor_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / MARKER).write_text("{}", encoding="utf-8")
    link = tmp_path / "model"
    os.symlink(target, link)
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError, match=r"is a symbolic link \(to .*elsewhere\); it is not replaced"):
        write_folder(link, fill_model, overwrite=True, marker=MARKER)
    assert snapshot(tmp_path) == before and link.is_symlink()


def test_a_folder_of_other_files_is_not_a_model_folder_and_is_refused_before_any_work(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "figure.png").write_bytes(b"png")
    before = snapshot(tmp_path)
    called: list[Path] = []
    message = rf"{re.escape(str(folder))} holds files but no {MARKER}: it is not a model folder"
    with pytest.raises(UnitRefineError, match=message):
        write_folder(folder, called.append, overwrite=True, marker=MARKER)
    assert not called and snapshot(tmp_path) == before
    # Without a marker (folders unitrefine itself made, such as generated recordings) it may be replaced, whole.
    check_output_folder(folder, overwrite=True)
    assert write_folder(folder, fill_model, overwrite=True) == folder
    assert snapshot(tmp_path) == {"results": None, f"results/{MARKER}": b'{"new": true}',
                                  "results/best_model.skops": b"new model"}


def test_a_file_put_at_the_output_path_while_writing_is_kept_and_the_staging_folder_goes(tmp_path: Path) -> None:
    folder = tmp_path / "model"

    def fill_then_user_writes(staging: Path) -> None:
        fill_model(staging)
        folder.write_bytes(b"written by the user meanwhile")

    with pytest.raises(UnitRefineError, match="is an existing file; it is not replaced"):
        write_folder(folder, fill_then_user_writes, overwrite=True, marker=MARKER)
    assert snapshot(tmp_path) == {"model": b"written by the user meanwhile"}
