"""Where the paths given to ``predict``, ``suggest`` and ``merge_review`` are, checked before any work.

**Inputs** (``data=``, ``model=``, ``labels=``, ``review=``, ``predictions=``, ``phy_folder=``): an absolute path is
taken as it is; a relative one from the directory the command is run from when it exists there, else from the
project root (the folder holding ``conf/``), so the project's example paths (``experiments/...``) work from any
directory, as ``unitrefine.train`` finds its configured files. Neither: an error naming both places.

**Outputs** (``output=``): relative to the directory the command is run from. Before any work an output must be
a file name (not a folder), in a folder that exists or can be made and written, not an input of the command,
and not exist unless ``overwrite=true``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from unitrefine.config import PROJECT_ROOT
from unitrefine.errors import UnitRefineError

log = logging.getLogger(__name__)


def input_path(value: str, option: str) -> Path:
    """Where the input ``option=value`` is: absolute as given; relative from the working directory, else the project.

    Parameters
    ----------
    value : str
        The path as the user gave it (``~`` is expanded).
    option : str
        The option's name, for the messages (``data``, ``model``, ...).

    Returns
    -------
    Path
        The resolved path. An absolute path that does not exist is returned as it is (the caller's check names it).

    Raises
    ------
    UnitRefineError
        A relative path that exists neither in the working directory nor in the project; the message gives both.
    """
    path = Path(value).expanduser()
    if path.is_absolute():
        return path.resolve()
    here = (Path.cwd() / path).resolve()
    if here.exists():
        return here
    project = (PROJECT_ROOT / path).resolve()
    if project.exists():
        log.info("%s=%s is not in the working directory: using the project's %s.", option, value, project)
        return project
    raise UnitRefineError(
        f"{option}={value} does not exist: looked in the working directory ({here}) and in the project ({project}). "
        "Give a path from the directory you run the command from, or an absolute path."
    )


def output_path(value: str) -> Path:
    """Where the output ``value`` goes: relative paths are taken from the working directory."""
    return (Path.cwd() / Path(value).expanduser()).resolve()


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_input(output: Path, files: Iterable[Path] = (), folders: Iterable[Path] = (),
                    option: str = "output") -> None:
    """An output must not be an input: one of ``files``, or anything inside one of ``folders``.

    Raises
    ------
    UnitRefineError
        Naming the output and the input it would overwrite.
    """
    for path in files:
        if _same(output, path):
            raise UnitRefineError(f"{option}={output} is an input of this command ({path}); inputs are never "
                                  "overwritten. Choose another output file.")
    for folder in folders:
        if output.is_relative_to(folder):
            raise UnitRefineError(f"{option}={output} is inside {folder}, an input of this command, which is only "
                                  "read. Choose an output file outside it.")


def labels_inputs(path: Path, recordings: Sequence[str]) -> list[Path]:
    """Every file a labels file or folder may be read from (the layouts of
    :func:`unitrefine.data.labelled.read_unit_labels`): the file itself, or a folder's ``cluster_group.tsv`` and
    ``<recording>.csv``/``.tsv``/``/cluster_group.tsv``."""
    if not path.is_dir():
        return [path]
    return [path / "cluster_group.tsv", *(path / f"{r}{s}" for r in recordings
                                          for s in (".csv", ".tsv", "/cluster_group.tsv"))]


def _named(path: Path, option: str) -> str:
    return f"{option}={path}" if option == "output" else f"{path} ({option}=)"


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor)


def check_writable(paths: Iterable[Path], overwrite: bool, option: str = "output") -> None:
    """Fail before any work unless every output file of ``paths`` can be written.

    Each must not be a folder, must not exist unless ``overwrite``, and its folder must exist as a writable folder
    or be creatable (its nearest existing parent is a writable folder, not a file).

    Raises
    ------
    UnitRefineError
        Naming the file and what to do.
    """
    paths = list(paths)
    for path in paths:
        if path.is_dir():
            what = (f"Give the file to write, e.g. output={path / 'predictions.csv'}." if option == "output"
                    else "Move that folder away, or choose another folder.")
            raise UnitRefineError(f"{_named(path, option)} is a folder, not a file; it is not replaced. {what}")
        parent = _nearest_existing(path)
        if not parent.is_dir():
            raise UnitRefineError(f"{_named(path, option)} cannot be written: {parent} is a file, not a folder. "
                                  f"Choose an output in a folder.")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UnitRefineError(f"{_named(path, option)} cannot be written: no permission to write in {parent}. "
                                  "Choose an output in a folder you can write to.")
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise UnitRefineError(f"{', '.join(existing)} already exist(s). Choose another output, or set overwrite=true.")
