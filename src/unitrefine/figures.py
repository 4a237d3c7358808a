"""Matplotlib for the figures a run saves: drawn off-screen unless the process chose a backend, saved and closed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

# Draw off-screen (figures are only saved), unless the process has already chosen a backend: a notebook's
# inline backend (MPLBACKEND, set by the kernel) or pyplot imported by the user. Switching it would stop
# their plots from showing.
if not os.environ.get("MPLBACKEND") and "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig: plt.Figure, path: Path) -> Path:
    """Lay out ``fig``, save it to ``path`` and close it; return ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
