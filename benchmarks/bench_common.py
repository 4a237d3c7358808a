"""What every benchmark records next to its figures: the machine, the load on it, the code measured."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def memory_gib() -> float:
    """Physical memory of the machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def code_version() -> str:
    """The git commit of the ``unitrefine`` the benchmark's child processes import (``+dirty`` if changed).

    The checkout's path is not part of it: results are committed and must not name this machine's folders.
    """
    where = "import unitrefine, pathlib; print(pathlib.Path(unitrefine.__file__).parent)"
    probe = subprocess.run([sys.executable, "-c", where], capture_output=True, text=True, check=True)
    src = probe.stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=src, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=src, capture_output=True, text=True)
    if head.returncode != 0:
        return "(not a git checkout)"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine_line() -> str:
    """Date, cores, memory, platform and the load average when the benchmark started."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cores, "
            f"{memory_gib():.0f} GiB, {platform.platform()}, Python {platform.python_version()}\n"
            f"- load average at start (1, 5, 15 min): {load} — above ~0.5 the figures were measured under contention\n"
            f"- code: unitrefine {code_version()}\n")


def write_result(name: str, text: str) -> Path:
    """Write ``benchmarks/results/<name>.md``; return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    return path
