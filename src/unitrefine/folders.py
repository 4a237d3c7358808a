"""Output folders written atomically: staged beside their place, renamed into it at the end; a user's file or
folder is never moved, renamed or replaced."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from unitrefine.errors import UnitRefineError


def check_output_folder(folder: Path, overwrite: bool, marker: str | None = None) -> None:
    """Fail before any work if ``folder`` may not be written: it exists (without ``overwrite``), or ``overwrite``
    may not replace it. A file is never replaced; with a ``marker`` (e.g. ``model_info.json``) a folder of other
    files is not either (without one: folders unitrefine itself made, such as generated recordings). A symbolic
    link is never replaced: only a real folder is ever renamed aside, and only at the last step of
    :func:`staged_folder`."""
    if folder.is_symlink():
        raise UnitRefineError(f"Output folder {folder} is a symbolic link (to {folder.readlink()}); it is not "
                              "replaced. Set output.folder to the folder itself, or choose another output.folder.")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UnitRefineError(f"Output folder {folder} is an existing file; it is not replaced (whatever "
                              "output.overwrite says). Choose another output.folder (a folder to create).")
    if not overwrite:
        raise UnitRefineError(
            f"Output folder {folder} already exists. Choose another output.folder, or set output.overwrite=true."
        )
    if marker is not None and any(folder.iterdir()) and not (folder / marker).is_file():
        raise UnitRefineError(f"Output folder {folder} holds files but no {marker}: it is not a model folder, and "
                              "output.overwrite only replaces model folders. Choose another output.folder.")


@contextmanager
def staged_folder(folder: Path, overwrite: bool, marker: str | None = None) -> Iterator[Path]:
    """A staging folder next to ``folder``, renamed into place when the ``with`` block ends without an error.

    On an error or an interruption the staging folder is removed and ``folder`` is left as it was, so no
    half-written (or half-registered) model folder is ever seen. With ``overwrite``, an existing model folder
    is replaced only at that last rename (see :func:`check_output_folder` for ``marker``).
    """
    check_output_folder(folder, overwrite, marker)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        check_output_folder(folder, overwrite, marker)  # a file or a link is refused: never renamed aside
        if folder.is_dir() and not folder.is_symlink():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            folder.rename(old)
            staging.rename(folder)
            shutil.rmtree(old)
        else:
            staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_folder(folder: Path, fill: Callable[[Path], None], overwrite: bool, marker: str | None = None) -> Path:
    """Write a folder atomically: ``fill(staging_dir)`` writes its files (:func:`staged_folder`).

    Returns
    -------
    Path
        ``folder``.
    """
    with staged_folder(folder, overwrite, marker) as staging:
        fill(staging)
    return folder
