"""Uploading a folder to a run's artifacts, with what it moved and how long it took (and a progress bar)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

#: Uploads at least this large show a progress bar (on a terminal).
BAR_BYTES = 20 * 2**20


def upload_folder(client: MlflowClient, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
    """Upload every file under ``folder`` to run ``run_id``, logging how many files and MB, and how long it took.

    Uploads of at least :data:`BAR_BYTES` show a progress bar (in bytes, with the file being uploaded) on a
    terminal; log lines written meanwhile go through the bar, not over it.

    Parameters
    ----------
    client : MlflowClient
    run_id : str
    folder : Path
        Its subfolders keep their place under ``artifact_path``.
    artifact_path : str, optional
        Where in the run's artifacts (None: at their root).
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    sizes = [p.stat().st_size for p in files]
    total = sum(sizes)
    log.info("Uploading %d files (%.1f MB) from %s to MLflow run %s.", len(files), total / 1e6, folder, run_id)
    started = time.perf_counter()
    with logging_redirect_tqdm(), tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="upload", leave=False,
        disable=True if total < BAR_BYTES else None,  # None: shown on a terminal only
    ) as bar:
        for path, size in zip(files, sizes, strict=True):
            bar.set_postfix_str(path.name, refresh=False)
            parts = [artifact_path, path.parent.relative_to(folder).as_posix()]
            destination = "/".join(p for p in parts if p and p != ".") or None
            client.log_artifact(run_id, str(path), destination)
            bar.update(size)
    log.info("Uploaded %d files (%.1f MB) in %.1f s.", len(files), total / 1e6, time.perf_counter() - started)
