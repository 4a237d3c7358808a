"""Wall time and peak memory of one training command, written as markdown to benchmarks/results/.

    python benchmarks/run_time.py +experiment=mouse_v1

Runs ``python -m unitrefine.train <overrides>`` in a fresh process with its own MLflow store, Optuna
storage and output folder under a temporary directory (the project's own store is not touched), and
records the machine's cores and memory next to the figures. Target for mouse_v1: under 10 minutes on 2 cores.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(overrides: list[str]) -> Path:
    """Run the command once; return the markdown file written."""
    with tempfile.TemporaryDirectory(prefix="unitrefine-bench-") as tmp:
        out = Path(tmp)
        cmd = [
            sys.executable, "-m", "unitrefine.train", *overrides,
            f"tracking.uri=sqlite:///{out}/mlflow.db", f"tracking.artifact_location={out.as_uri()}/artifacts",
            f"output.folder={out}/model", f"search.storage={out}/study.journal",
        ]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-5000:])
            raise SystemExit(f"training failed with exit code {proc.returncode}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        info = json.loads((out / "model" / "model_info.json").read_text())
    trials = re.search(r"Study '.*?': (\{.*?\}) trials in", proc.stderr)
    holdout = info.get("holdout") or {}
    per_rec = ", ".join(f"{r} {m['balanced_accuracy']:.3f}" for r, m in holdout.get("per_recording", {}).items())
    exported = f"ensemble of trials {[m['trial'] for m in info['ensemble']]}" if info.get("ensemble") else "single trial"
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    name = "_".join(o.split("=")[-1] for o in overrides if o.startswith("+experiment=")) or "default"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"run_time_{name}.md"
    path.write_text(
        f"# Wall time of `python -m unitrefine.train {' '.join(overrides)}`\n\n"
        f"- date: {dt.date.today()}; machine: {os.cpu_count()} cores, {mem_gb:.0f} GiB, {platform.platform()}\n"
        f"- wall time: **{wall:.0f} s**; peak resident memory of the training process: {peak_mb:.0f} MB\n"
        f"- trials: {trials.group(1) if trials else '?'}; best CV {info['cv']['scoring']}: {info['cv']['best_score']:.4f}\n"
        f"- held-out balanced accuracy: {holdout.get('balanced_accuracy', float('nan')):.4f} "
        f"({per_rec})\n"
        f"- exported: {exported}\n",
        encoding="utf-8",
    )
    return path


if __name__ == "__main__":
    print(main(sys.argv[1:]).read_text())
