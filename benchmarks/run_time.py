"""Wall time per stage and peak memory of one training command, written as markdown to benchmarks/results/.

    python benchmarks/run_time.py [--keep-model DIR] +experiment=mouse_v1 [more overrides]

Runs ``python -m unitrefine.train <overrides>`` in a fresh process with its own MLflow store, Optuna
storage and output folder under a temporary directory (the project's own store is not touched), and records
the machine, its load and the code version next to the figures: end-to-end wall time, the seconds of every
stage (from the run's summary), everything after the search, peak memory, the size of the model folder and of
the MLflow store. ``--keep-model DIR`` copies the model folder there (e.g. to re-create it under load with
``python -m unitrefine.recreate source=DIR``). Targets (idle 2-core machine): at most 480 s end to end, at most
120 s after the search, at most 1.5 GB peak memory.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import machine_line, write_result

TARGETS = {"end to end": 480.0, "after the search": 120.0}
PEAK_TARGET_MB = 1536.0


def folder_mb(path: Path) -> float:
    """Total size of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def stage_seconds(stderr: str) -> dict[str, float]:
    """The stage durations the run's summary printed (``Stage times (s): load 0.4, ...``)."""
    line = re.search(r"Stage times \(s\): (.*)", stderr)
    if not line:
        raise SystemExit("The run printed no 'Stage times' line.")
    return {name: float(v) for name, v in (part.rsplit(" ", 1) for part in line.group(1).split(", "))}


def main(overrides: list[str], keep_model: Path | None = None) -> Path:
    """Run the command once; return the markdown file written."""
    header = machine_line()
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
        model_mb, store_mb = folder_mb(out / "model"), folder_mb(out / "artifacts")
        if keep_model is not None:
            shutil.copytree(out / "model", keep_model)
    stages = stage_seconds(proc.stderr)
    after = sum(v for k, v in stages.items() if k not in ("load", "split", "search"))
    measured = {"end to end": wall, "after the search": after}
    holdout = info.get("holdout") or {}
    per_rec = ", ".join(f"{r} {m['balanced_accuracy']:.3f}" for r, m in holdout.get("per_recording", {}).items())
    members = [m["trial"] for m in info["ensemble"] or []]
    exported = f"ensemble of trials {members}" if members else "single trial"
    estimate = info["estimate_new_recordings"]
    checks = [f"{k} {measured[k]:.0f} s (target <= {v:.0f} s: {'met' if measured[k] <= v else 'NOT met'})"
              for k, v in TARGETS.items()]
    checks.append(f"peak memory {peak_mb:.0f} MB (target <= {PEAK_TARGET_MB:.0f} MB: "
                  f"{'met' if peak_mb <= PEAK_TARGET_MB else 'NOT met'})")
    name = "_".join(o.split("=")[-1] for o in overrides if o.startswith("+experiment=")) or "default"
    text = (
        f"# Wall time of `python -m unitrefine.train {' '.join(overrides)}`\n\n{header}"
        f"- wall time: **{wall:.0f} s**; after the search: **{after:.0f} s**; peak resident memory of the training "
        f"process: **{peak_mb:.0f} MB**\n"
        f"- {'; '.join(checks)}\n"
        f"- seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()) + "\n"
        f"- trials: {info['search']['trial_counts']}; best CV {info['cv']['scoring']}: {info['cv']['best_score']:.4f}\n"
        f"- held-out balanced accuracy: {holdout.get('balanced_accuracy', float('nan')):.4f} ({per_rec})\n"
        f"- expected on new recordings: {estimate['balanced_accuracy']:.4f} ({estimate['source']})\n"
        f"- exported: {exported}; model folder {model_mb:.1f} MB, MLflow artifacts of the run {store_mb:.1f} MB\n"
    )
    return write_result(f"run_time_{name}", text)


if __name__ == "__main__":
    args = sys.argv[1:]
    keep = None
    if args[:1] == ["--keep-model"]:
        keep, args = Path(args[1]), args[2:]
    print(main(args, keep).read_text())
