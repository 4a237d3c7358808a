"""Process settings every command applies before it imports any numerical or tracking library."""

from __future__ import annotations

import logging
import os

# The name this project is installed under (pyproject.toml). The package index's `unitrefine` is another project
# (the UnitRefine curation GUI) whose import package is also `unitrefine`: the two cannot share an environment.
DISTRIBUTION = "unitrefine-automl"

log = logging.getLogger("unitrefine")


def prepare_command_process() -> None:
    """One thread per fit (set before any OpenMP/BLAS library loads) and quiet MLflow start-up.

    Parallelism comes from running trials side by side: nested OpenMP threads oversubscribe the cores and slow
    fits by orders of magnitude. MLflow configures its own log handler and download progress bars; keep them out
    of the commands' output. Values the user set already are kept.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    other = other_unitrefine()
    if other:
        log.warning("%s is installed in this environment too and also provides the `unitrefine` import package: "
                    "whichever was installed last overwrote the other's files. Install %s in an environment of its "
                    "own (e.g. `python -m venv .venv`) and %s in another.", other, DISTRIBUTION, other)


def other_unitrefine() -> str | None:
    """Another installed distribution providing the ``unitrefine`` import package (``"unitrefine 0.2.0"``), or None."""
    from importlib.metadata import packages_distributions, version

    others = [d for d in packages_distributions().get("unitrefine", [])
              if d.lower().replace("_", "-") != DISTRIBUTION]
    return f"{others[0]} {version(others[0])}" if others else None
