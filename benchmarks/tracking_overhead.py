"""MLflow tracking overhead: the same seeded study with tracking on and off, as a share of the search time.

    python benchmarks/tracking_overhead.py            # 50 and 200 trials, 3 runs of each mode
                                                      # (about 8 minutes on 2 cores)
    python benchmarks/tracking_overhead.py --quick    # 10 trials, 1 run of each mode (about a minute)

Every run is ``python -m unitrefine.train +experiment=smoke search.n_trials=N`` in a fresh process with its own
temporary MLflow store (SQLite, as by default), Optuna journal file and output folder; the two modes differ only in
``tracking.enabled`` (the Optuna storage is the same journal file in both). The smoke experiment (three small
curated recordings searched with 3-fold CV over logistic regression and small random forests) makes trials cheap, a
few tenths of a second, so the relative cost of one nested MLflow run per trial is close to its worst case here.
With ``search.n_jobs=1`` (the default here) the seeded study runs the same trials in both modes, which is checked
from the leaderboards; the runs of the two modes alternate so that drifting load hits both alike.

Search time is what the worker logs ("This worker searched for X s": its trials and, with tracking, until their
nested runs are written). Overhead = median search time with tracking / median without - 1; target <= 5 %. The
worker also logs the CPU time its process used while searching: its difference between the modes is tracking's CPU
cost, which other processes on the machine inflate less than the wall time (the load average is recorded). The
command's wall time is reported too: it adds tracking's one-off costs (creating the SQLite store, the parent run,
logging and registering the model, uploading the model folder), which do not grow with the number of trials.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from bench_common import machine_line, write_result

TARGET = 0.05


@dataclass(frozen=True)
class Run:
    """One training command's figures."""

    n_trials: int
    tracking: bool
    search_s: float
    search_cpu_s: float
    wall_s: float
    counts: str
    scores: tuple[float, ...]


def run_once(n_trials: int, tracking: bool, n_jobs: int, folder: Path) -> Run:
    """Train once into ``folder`` (a fresh MLflow store, journal and output folder); return its figures."""
    cmd = [
        sys.executable, "-m", "unitrefine.train", "+experiment=smoke", f"search.n_trials={n_trials}",
        f"search.n_jobs={n_jobs}", f"tracking.enabled={str(tracking).lower()}",
        f"tracking.uri=sqlite:///{folder}/mlflow.db", f"tracking.artifact_location={folder.as_uri()}/artifacts",
        f"output.folder={folder}/model", f"search.storage={folder}/study.journal",
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"training failed with exit code {proc.returncode}: {' '.join(cmd)}")
    searched = re.search(r"This worker searched for ([0-9.]+) s .*?CPU time of the process ([0-9.]+) s", proc.stderr)
    counts = re.search(r"Study '.*?': (\{.*?\}) trials in", proc.stderr)
    if searched is None:
        raise SystemExit("the training log has no 'This worker searched for' line: is this unitrefine too old?")
    board = pd.read_csv(folder / "model" / "model_accuracies.csv").sort_values("trial")
    scores = tuple(round(float(v), 6) for v in board["cv_score"].fillna(-1.0))
    return Run(n_trials, tracking, float(searched.group(1)), float(searched.group(2)), wall,
               counts.group(1) if counts else "?", scores)


def measure(trials: list[int], repeats: int, n_jobs: int) -> list[Run]:
    """Alternate tracking off/on (and which goes first) ``repeats`` times for each trial count."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="unitrefine-tracking-overhead-") as tmp:
        for n in trials:
            for r in range(repeats):
                for tracking in ((False, True) if r % 2 == 0 else (True, False)):
                    folder = Path(tmp) / f"n{n}-r{r}-{'on' if tracking else 'off'}"
                    run = run_once(n, tracking, n_jobs, folder)
                    print(f"{n} trials, tracking {'on ' if tracking else 'off'}: search {run.search_s:.1f} s "
                          f"(CPU {run.search_cpu_s:.1f} s), "
                          f"wall {run.wall_s:.1f} s, {run.counts}", flush=True)
                    runs.append(run)
    return runs


def summarise(runs: list[Run], n_jobs: int) -> tuple[str, bool]:
    """The markdown table and overhead lines; whether every trial count meets the target."""
    lines = ["| trials | tracking | search time per run (s) | median search (s) | per trial (ms) | "
             "search CPU per trial (ms) | median wall (s) |", "|---|---|---|---|---|---|---|"]
    verdicts, met = [], True
    for n in sorted({r.n_trials for r in runs}):
        med, cpu = {}, {}
        for tracking in (False, True):
            rs = [r for r in runs if r.n_trials == n and r.tracking == tracking]
            med[tracking] = statistics.median(r.search_s for r in rs)
            cpu[tracking] = statistics.median(r.search_cpu_s for r in rs)
            wall = statistics.median(r.wall_s for r in rs)
            lines.append(f"| {n} | {'on' if tracking else 'off'} | {', '.join(f'{r.search_s:.1f}' for r in rs)} | "
                         f"{med[tracking]:.1f} | {1000 * med[tracking] / n:.0f} | {1000 * cpu[tracking] / n:.0f} | "
                         f"{wall:.1f} |")
        overhead = med[True] / med[False] - 1
        same = len({r.scores for r in runs if r.n_trials == n}) == 1
        met &= overhead <= TARGET
        wall_on = statistics.median(r.wall_s for r in runs if r.n_trials == n and r.tracking)
        wall_off = statistics.median(r.wall_s for r in runs if r.n_trials == n and not r.tracking)
        verdicts.append(
            f"- **{n} trials: overhead {100 * overhead:+.1f} % of the search time** "
            f"({1000 * (med[True] - med[False]) / n:+.0f} ms per trial; target <= {100 * TARGET:.0f} %: "
            f"{'met' if overhead <= TARGET else 'NOT met'}); CPU time of the search "
            f"{100 * (cpu[True] / cpu[False] - 1):+.1f} % ({1000 * (cpu[True] - cpu[False]) / n:+.0f} ms per trial); "
            f"whole command {wall_on - wall_off:+.1f} s "
            f"({100 * (wall_on / wall_off - 1):+.0f} %, one-off costs included); "
            f"{'the same trials and scores in every run' if same else 'trial scores differ between runs (n_jobs > 1?)'}"
        )
    header = f"search.n_jobs={n_jobs}; trial states of the last run: {runs[-1].counts}\n\n"
    return header + "\n".join(lines) + "\n\n" + "\n".join(verdicts) + "\n", met


def main(argv: list[str] | None = None) -> Path:
    """Run the measurements and write ``benchmarks/results/tracking_overhead[_<tag>].md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[50, 200], help="trial budgets (default 50 200)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode per budget (default 3)")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="search.n_jobs (default 1: the same trials in both modes)")
    parser.add_argument("--quick", action="store_true", help="10 trials, one run of each mode")
    parser.add_argument("--tag", default="", help="suffix of the results file (e.g. to keep a run of older code)")
    args = parser.parse_args(argv)
    trials, repeats = ([10], 1) if args.quick else (args.trials, args.repeats)
    machine = machine_line()
    runs = measure(trials, repeats, args.n_jobs)
    table, met = summarise(runs, args.n_jobs)
    name = "tracking_overhead" + (f"_{args.tag}" if args.tag else "") + ("_quick" if args.quick else "")
    given = " ".join(argv if argv is not None else sys.argv[1:])
    return write_result(name, (
        "# MLflow tracking overhead: `+experiment=smoke`, tracking on vs off\n\n"
        + machine
        + f"- command: `python benchmarks/tracking_overhead.py {given}`\n"
        + f"- target: tracking adds <= {100 * TARGET:.0f} % to the search time: **{'met' if met else 'NOT met'}**\n\n"
        + table
    ))


if __name__ == "__main__":
    print(main().read_text())
