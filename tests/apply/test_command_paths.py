"""Where the paths of ``predict``/``suggest``/``merge_review`` are (:mod:`unitrefine.apply.command_paths`), called
directly: inputs from the working directory then the project, outputs from the working directory, and the
refusals of ``output=`` before any work. The commands' own cases are in tests/apply/test_prediction.py."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from conftest import snapshot

from unitrefine.apply.command_paths import (
    check_not_input,
    check_writable,
    input_path,
    labels_inputs,
    output_path,
)
from unitrefine.config import PROJECT_ROOT
from unitrefine.errors import UnitRefineError


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory under tmp_path (not the project)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_a_relative_input_in_the_working_directory_wins_over_the_project(cwd: Path) -> None:
    assert (PROJECT_ROOT / "pyproject.toml").is_file()  # the name exists in both places
    (cwd / "pyproject.toml").write_text("mine\n")
    assert input_path("pyproject.toml", "data") == cwd / "pyproject.toml"
    assert input_path("./sub/../pyproject.toml", "data") == cwd / "pyproject.toml"  # normalised


def test_a_relative_input_missing_here_is_taken_from_the_project_and_logged(
    cwd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="unitrefine.apply.command_paths"):
        found = input_path("conf", "labels")
    assert found == PROJECT_ROOT / "conf"
    assert f"labels=conf is not in the working directory: using the project's {PROJECT_ROOT / 'conf'}" in caplog.text
    assert list(cwd.iterdir()) == []


def test_absolute_and_home_inputs(tmp_path: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An absolute path is taken as it is, even when missing (the caller names it); ``~`` is the home folder."""
    missing = tmp_path / "nowhere" / "m.csv"
    assert input_path(str(missing), "data") == missing
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.csv").write_text("x\n")
    assert input_path("~/m.csv", "data") == tmp_path / "m.csv"


def test_a_relative_input_found_nowhere_names_the_option_and_both_places(tmp_path: Path, cwd: Path) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        input_path("runs/phy_a", "phy_folder")
    message = str(excinfo.value)
    assert message.startswith("phy_folder=runs/phy_a does not exist: ")
    assert f"working directory ({cwd / 'runs' / 'phy_a'})" in message
    assert f"in the project ({PROJECT_ROOT / 'runs' / 'phy_a'})" in message
    assert snapshot(tmp_path) == before


def test_outputs_are_from_the_working_directory_only(
    tmp_path: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never from the project, even where the project has the path."""
    assert output_path("pyproject.toml") == cwd / "pyproject.toml"
    assert output_path("out/../p.csv") == cwd / "p.csv"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert output_path("~/p.csv") == tmp_path / "p.csv"
    assert list(cwd.iterdir()) == []


def test_an_output_that_is_an_input_under_another_name_is_refused(tmp_path: Path) -> None:
    """The same file through a symbolic link or a hard link is the input; a sibling folder sharing a name prefix
    is not inside the input folder."""
    data = tmp_path / "data"
    data.mkdir()
    table = data / "rec.csv"
    table.write_text("cluster_id,snr\n1,5\n")
    (tmp_path / "link.csv").symlink_to(table)
    os.link(table, tmp_path / "hard.csv")
    before = snapshot(tmp_path)
    for other in (tmp_path / "link.csv", tmp_path / "hard.csv"):
        with pytest.raises(UnitRefineError) as excinfo:
            check_not_input(other, files=[table], option="output")
        assert str(excinfo.value).startswith(f"output={other} is an input of this command ({table})")
    with pytest.raises(UnitRefineError) as excinfo:
        check_not_input(data / "sub" / "p.csv", folders=[data], option="review_output")
    assert str(excinfo.value).startswith(f"review_output={data / 'sub' / 'p.csv'} is inside {data}, an input")
    check_not_input(tmp_path / "data2" / "p.csv", files=[table], folders=[data])  # not inside data/
    check_not_input(tmp_path / "new.csv", files=[table, tmp_path / "missing.csv"], folders=[data])
    assert snapshot(tmp_path) == before


def test_labels_inputs_lists_every_file_a_labels_folder_may_be_read_from(tmp_path: Path) -> None:
    assert labels_inputs(tmp_path / "done.csv", ["recA"]) == [tmp_path / "done.csv"]
    assert labels_inputs(tmp_path, ["recA", "recB"]) == [
        tmp_path / "cluster_group.tsv",
        tmp_path / "recA.csv", tmp_path / "recA.tsv", tmp_path / "recA" / "cluster_group.tsv",
        tmp_path / "recB.csv", tmp_path / "recB.tsv", tmp_path / "recB" / "cluster_group.tsv",
    ]


def test_every_existing_output_is_named_and_none_is_touched(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("keep a\n")
    (tmp_path / "b.tsv").write_text("keep b\n")
    outputs = [tmp_path / "a.csv", tmp_path / "new" / "deeper" / "c.tsv", tmp_path / "b.tsv"]
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        check_writable(outputs, overwrite=False)
    assert str(excinfo.value) == (f"{tmp_path / 'a.csv'}, {tmp_path / 'b.tsv'} already exist(s). Choose another "
                                  "output, or set overwrite=true.")
    check_writable(outputs, overwrite=True)  # allowed, and the missing folders are not made by the check
    assert snapshot(tmp_path) == before


def test_an_output_of_another_option_is_named_by_that_option(tmp_path: Path) -> None:
    """Files a command writes into a folder the user gave (e.g. Phy's TSVs) are named with that option."""
    tsv = tmp_path / "phy" / "cluster_unitrefine_label.tsv"
    tsv.mkdir(parents=True)  # a folder where the TSV goes
    before = snapshot(tmp_path)
    with pytest.raises(UnitRefineError) as excinfo:
        check_writable([tsv], overwrite=True, option="phy_folder")
    assert str(excinfo.value) == (f"{tsv} (phy_folder=) is a folder, not a file; it is not replaced. Move that "
                                  "folder away, or choose another folder.")
    (tmp_path / "blocker").write_text("a file\n")
    with pytest.raises(UnitRefineError) as excinfo:
        check_writable([tmp_path / "blocker" / "x.tsv"], overwrite=False, option="phy_folder")
    assert str(excinfo.value).startswith(f"{tmp_path / 'blocker' / 'x.tsv'} (phy_folder=) cannot be written: "
                                         f"{tmp_path / 'blocker'} is a file, not a folder.")
    assert snapshot(tmp_path) == {**before, "blocker": b"a file\n"}
