"""Process settings every command applies before it imports any numerical or tracking library."""

from __future__ import annotations

import os


def prepare_command_process() -> None:
    """One thread per fit (set before any OpenMP/BLAS library loads) and quiet MLflow start-up.

    Parallelism comes from running trials side by side: nested OpenMP threads on 2 cores slow fits a
    hundredfold. MLflow configures its own log handler and download progress bars; keep them out of the
    commands' output. Values the user set already are kept.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
