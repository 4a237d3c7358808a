"""Prediction: cold start of ``python -m unitrefine.predict`` on 50 units, and throughput on 1M units.

    python benchmarks/predict_latency.py                 # about 3 minutes on 2 cores
    python benchmarks/predict_latency.py --quick         # 100k units for the throughput, 3 cold starts (under a minute)
    python benchmarks/predict_latency.py --model experiments/mouse_v1/models/<run>

Model: by default one trained by ``python -m unitrefine.train +experiment=smoke`` (tracking off) into a temporary
folder (a random forest or a logistic regression on the 37 curated metrics); ``--model`` measures another folder.

Cold start: the wall time of ``python -m unitrefine.predict model=<folder> data=<csv> output=<csv>`` on the first 50
units of a curated recording, each run a fresh process (the median of ``--runs``); target <= 2 s. Beside it, the
floor the command cannot go below (the interpreter with the libraries loading a model needs: pandas, scikit-learn,
skops), and the modules the command imports that take longest (``python -X importtime``). The command must not
import mlflow, optuna or spikeinterface for a model folder and a CSV; that is checked.

Throughput: the same command on one generated CSV of 1M units x 40 metrics (``generated_metrics.py``: resampled
curated units, real NaN patterns): wall time, units per second and peak resident memory; and what a review queue
(``review=10%``) adds to it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import machine_line, write_result

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT / "experiments" / "mouse_v1" / "data" / "mouse1a_imec0" / "quality_metrics.csv"
TARGET_S = 2.0
#: Runs a command and prints its peak resident memory (a process of its own, so no earlier child counts).
_PEAK_WRAPPER = ("import json, resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
                 "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
                 "print(json.dumps({'rc': p.returncode, 'peak_mb': peak}))")
#: After a prediction in this process: which heavy libraries were imported.
_IMPORTED = """
import runpy, sys
sys.argv = ["unitrefine.predict", *sys.argv[1:]]
try:
    runpy.run_module("unitrefine.predict", run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
print(sorted({m.split(".")[0] for m in sys.modules} & {"mlflow", "optuna", "spikeinterface", "matplotlib", "xgboost",
                                                       "imblearn", "sqlalchemy"}))
"""


def train_model(folder: Path) -> Path:
    """A smoke model (tracking off) in ``folder``."""
    cmd = [sys.executable, "-m", "unitrefine.train", "+experiment=smoke", "tracking.enabled=false",
           f"output.folder={folder}", "search.storage=memory"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit("training the smoke model failed")
    return folder


def predict_cmd(model: Path, data: Path, output: Path) -> list[str]:
    """The command line measured."""
    return [sys.executable, "-m", "unitrefine.predict", f"model={model}", f"data={data}", f"output={output}",
            "overwrite=true"]


def timed(cmd: list[str]) -> float:
    """Wall time of ``cmd`` (which must succeed)."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return wall


def cold_start(model: Path, tmp: Path, runs: int) -> dict[str, object]:
    """Median wall time of the command on 50 units, the floor, the slowest imports, the heavy libraries loaded."""
    import pandas as pd

    data = tmp / "units50.csv"
    pd.read_csv(SAMPLE).head(50).to_csv(data, index=False)
    cmd = predict_cmd(model, data, tmp / "pred50.csv")
    timed(cmd)  # warm the file cache once: every measured run then reads the same cached files
    walls = [timed(cmd) for _ in range(runs)]
    floor = [timed([sys.executable, "-c", "import pandas, sklearn.base, skops.io"]) for _ in range(runs)]
    bare = [timed([sys.executable, "-c", "pass"]) for _ in range(runs)]
    proc = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], capture_output=True, text=True)
    imports = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit() \
                and not parts[2].startswith("  "):
            imports.append((int(parts[1]) / 1e6, parts[2].strip()))
    heavy = subprocess.run([sys.executable, "-c", _IMPORTED, *cmd[3:]], capture_output=True, text=True)
    heavy_found = heavy.stdout.strip().splitlines()[-1] if heavy.returncode == 0 else f"error: {heavy.stderr[-300:]}"
    return {"walls": walls, "median": statistics.median(walls), "floor": statistics.median(floor),
            "bare": statistics.median(bare), "imports": sorted(imports, reverse=True)[:8], "heavy": heavy_found}


def throughput(model: Path, tmp: Path, units: int) -> dict[str, float]:
    """Wall time and peak memory of the command on one generated CSV of ``units`` units."""
    from generated_metrics import write_dataset

    started = time.perf_counter()
    recording = write_dataset(tmp / "big", units, 40, seed=1, one_file=True)[0]
    generated = time.perf_counter() - started
    data = Path(recording["metrics"])
    cmd = predict_cmd(model, data, tmp / "pred_big.csv")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - started
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    if status["rc"] != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit("prediction on the large table failed")
    return {"units": units, "wall_s": wall, "units_per_s": units / wall, "peak_mb": status["peak_mb"],
            "csv_mb": data.stat().st_size / 2**20, "generate_s": generated, **review_overhead(cmd)}


def review_overhead(cmd: list[str], repeats: int = 3) -> dict[str, float]:
    """Median wall time of ``cmd`` without and with a review queue (``review=10%``), runs alternating."""
    plain, review = [], []
    for _ in range(repeats):
        plain.append(timed([*cmd, "overwrite=true"]))
        review.append(timed([*cmd, "overwrite=true", "review=10%"]))
    return {"plain_s": statistics.median(plain), "review_s": statistics.median(review)}


def main(argv: list[str] | None = None) -> Path:
    """Measure and write ``benchmarks/results/predict_latency.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: a smoke model trained here)")
    parser.add_argument("--runs", type=int, default=7, help="cold starts measured (default 7)")
    parser.add_argument("--units", type=int, default=1_000_000, help="units of the throughput table (default 1M)")
    parser.add_argument("--quick", action="store_true", help="3 cold starts, 100k units")
    args = parser.parse_args(argv)
    runs, units = (3, 100_000) if args.quick else (args.runs, args.units)
    machine = machine_line()
    with tempfile.TemporaryDirectory(prefix="unitrefine-predict-latency-") as name:
        tmp = Path(name)
        model = args.model.resolve() if args.model else train_model(tmp / "model")
        info = json.loads((model / "model_info.json").read_text())
        cold = cold_start(model, tmp, runs)
        print(f"cold start: median {cold['median']:.2f} s of {[round(w, 2) for w in cold['walls']]}", flush=True)
        big = throughput(model, tmp, units)
        print(f"{units:,} units: {big['wall_s']:.1f} s, {big['units_per_s']:,.0f} units/s, {big['peak_mb']:.0f} MB",
              flush=True)
    best = info.get("best_configuration", {})
    met = cold["median"] <= TARGET_S
    model_text = f"`{args.model}`" if args.model else "a `+experiment=smoke` model trained for the run"
    walls = ", ".join(f"{w:.2f}" for w in cold["walls"])
    text = (
        "# Prediction: cold start and throughput of `python -m unitrefine.predict`\n\n" + machine
        + f"- command: `python benchmarks/predict_latency.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n"
        + f"- model: {model_text}: {best.get('imputer')} / {best.get('scaler')} / {best.get('classifier')}, "
          f"{len(info.get('features', []))} features\n\n"
        + "## Cold start, 50 units\n\n"
        + f"- **median {cold['median']:.2f} s** over {runs} fresh processes ({walls}); "
          f"target <= {TARGET_S:.0f} s: **{'met' if met else 'NOT met'}**\n"
        + f"- floor: `python -c 'import pandas, sklearn.base, skops.io'` {cold['floor']:.2f} s (skops imports every "
          f"scikit-learn estimator to list its trusted types); the bare interpreter {cold['bare']:.2f} s\n"
        + f"- heavy libraries the command imported: {cold['heavy']} "
          "(mlflow, optuna and spikeinterface must not be there)\n"
        + "- slowest top-level imports (`-X importtime`, cumulative): "
        + ", ".join(f"{m} {s:.2f} s" for s, m in cold["imports"]) + "\n\n"
        + f"## Throughput, {big['units']:,} units x 40 metrics ({big['csv_mb']:.0f} MB CSV)\n\n"
        + f"- **{big['wall_s']:.1f} s** for the whole command (read, check, predict, write): "
          f"**{big['units_per_s']:,.0f} units/s**; peak resident memory **{big['peak_mb']:.0f} MB**\n"
        + f"- with a review queue (`review=10%`: the ranking, `needs_review`, `review_rank`): median "
          f"**{big['review_s']:.2f} s** against {big['plain_s']:.2f} s without, "
          f"**{100 * (big['review_s'] / big['plain_s'] - 1):+.1f} %** (3 runs each, alternating; target under +10 %)\n"
    )
    return write_result("predict_latency" + ("_quick" if args.quick else ""), text)


if __name__ == "__main__":
    print(main().read_text())
