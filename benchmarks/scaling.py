"""Cost of a trial per component family as the number of units grows, and the 100k-unit target run.

    python benchmarks/scaling.py                  # 12 families x 1k, 10k, 100k units, then the target run
                                                  # (~20 min on 2 cores)
    python benchmarks/scaling.py --quick          # 3 families x 1k and 3k units, no target run (about a minute)
    python benchmarks/scaling.py --sizes 1000 10000 --families svc imputer=knn --no-limits --no-target
    python benchmarks/scaling.py --target-only    # only the target run

Data: metric tables generated from the curated recordings (``generated_metrics.py``: rows resampled per class with
a few per cent jitter, so each recording keeps its real NaN rates and missing metrics), 40 metrics, in recordings
of 188-785 units, labelled good / mua / noise; the task is the default ``sua_vs_all``, CV the default 5 folds
grouped by recording.

Per family and size, one trial in a fresh process (so its peak resident memory is its own): the data loaded as
``python -m unitrefine.train`` loads it, then the trial the search enqueues for that family first (middle-of-range
settings; imputer ``median``, scaler ``standard``, no resampler) cross-validated over the 5 folds, with
``search.unit_limits`` as configured (``--no-limits`` lifts them). A family is a classifier of
``conf/search_space/default.yaml``, or ``<slot>=<component>`` for an imputer, scaler or resampler (then with
logistic regression). Peak memory includes the loaded data and the libraries (about 300 MB).

Target run: ``python -m unitrefine.train`` on 100k generated units with ``search.n_trials=20`` and everything else
default (search space, 5-fold CV, 2 trials side by side, MLflow tracking into a temporary store): <= 10 minutes and
<= 4 GB on 2 cores. Writes ``benchmarks/results/scaling.md`` and ``scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import RESULTS, machine_line, write_result

CLASSIFIERS = ["logistic_regression", "random_forest", "extra_trees", "gradient_boosting", "hist_gradient_boosting",
               "mlp", "xgboost", "svc"]
OTHERS = ["imputer=knn", "imputer=iterative", "resampler=smote", "scaler=quantile"]
TARGET_UNITS, TARGET_TRIALS, TARGET_S, TARGET_MB = 100_000, 20, 600, 4096
N_METRICS = 40
#: Runs a command and prints its peak resident memory (a process of its own, so no earlier child counts).
_PEAK_WRAPPER = ("import json, resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
                 "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
                 "print(json.dumps({'rc': p.returncode, 'peak_mb': peak}))")


# ------------------------------------------------------------------------------------------------------------------
# One measurement, in its own process
# ------------------------------------------------------------------------------------------------------------------

def _trial_params(family: str) -> dict[str, Any]:
    """The enqueued trial of ``family``: its middle-of-range settings within the default search space."""
    from omegaconf import OmegaConf

    from unitrefine.config import compose_config
    from unitrefine.search.search_space import parse_search_space

    space = OmegaConf.to_container(compose_config([]).search_space)
    assert isinstance(space, dict)
    slot, _, name = family.rpartition("=")
    chosen = {"imputer": "median", "scaler": "standard", "resampler": "none",
              "classifier": name if not slot else "logistic_regression"}
    if slot:
        chosen[slot] = name
    restricted = {s: {c: space[s][c]} for s, c in chosen.items()}
    return parse_search_space(restricted).fixed_trials()[0]


def measure_one(data: Path, family: str, limits: bool) -> dict[str, Any]:
    """Load the generated dataset in ``data`` and run ``family``'s trial; its time, fitted units and memory."""
    import resource

    import optuna
    from omegaconf import OmegaConf

    from unitrefine.config import compose_config, validate_config
    from unitrefine.data.loading import load_dataset
    from unitrefine.search.evaluation import make_plan, scorer
    from unitrefine.search.objective import Objective
    from unitrefine.search.pipeline import unit_limit
    from unitrefine.search.search_space import parse_search_space

    started = time.perf_counter()
    cfg = compose_config([])
    cfg.dataset = OmegaConf.create(json.loads((data / "dataset.json").read_text()))
    tc = validate_config(cfg)
    table = load_dataset(tc.dataset, tc.task, tc.root_dir)
    plan = make_plan(table, tc.cv, tc.seed)
    part = table.subset(plan.train_index)
    load_s = time.perf_counter() - started
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = _trial_params(family)
    space = parse_search_space(tc.search_space)
    unit_limits = tc.search.unit_limits if limits else {}
    objective = Objective(space, part.X, part.y, plan.folds, scorer(tc.cv.scoring), tc.seed, unit_limits=unit_limits)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    fold_train = max(len(tr) for tr, _ in plan.folds)
    limit = unit_limit(space.spec_from_params(params), unit_limits)
    return {
        "family": family, "units": len(part), "metrics": part.X.shape[1], "state": trial.state.name.lower(),
        "trial_s": trial.duration.total_seconds(), "cv_score": trial.value, "load_s": load_s,
        "fit_units": min(fold_train, limit.units) if limit else fold_train, "fold_train_units": fold_train,
        "base_mb": base_mb, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "error": trial.user_attrs.get("error"),
    }


# ------------------------------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------------------------------

def make_data(root: Path, units: int, seed: int) -> Path:
    """Generate ``units`` units under ``root/n<units>`` once; the dataset config is in its ``dataset.json``."""
    from generated_metrics import write_dataset

    folder = root / f"n{units}"
    if not (folder / "dataset.json").is_file():
        recordings = write_dataset(folder, units, N_METRICS, seed=seed)
        (folder / "dataset.json").write_text(json.dumps(
            {"name": f"generated_{units}", "mode": "csv", "recordings": recordings}), encoding="utf-8")
    return folder


def run_measurement(data: Path, family: str, limits: bool, timeout_s: float) -> dict[str, Any]:
    """``measure_one`` in a fresh process, with a time limit."""
    cmd = [sys.executable, __file__, "--measure-one", str(data), family, *([] if limits else ["--no-limits"])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"family": family, "state": "timeout", "trial_s": timeout_s}
    if proc.returncode != 0:
        return {"family": family, "state": "error", "error": proc.stderr.strip().splitlines()[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def target_run(root: Path, seed: int, n_trials: int, units: int) -> dict[str, Any]:
    """``python -m unitrefine.train`` on ``units`` generated units, default settings but ``n_trials``."""
    from generated_metrics import write_dataset_config

    data = make_data(root, units, seed)
    recordings = json.loads((data / "dataset.json").read_text())["recordings"]
    conf = root / "conf"
    name = write_dataset_config(conf, recordings, name=f"generated_{units}")
    out = root / "target"
    cmd = [sys.executable, "-m", "unitrefine.train", "--config-dir", str(conf), f"dataset={name}",
           f"search.n_trials={n_trials}", f"experiment_name=scaling_{units}",
           f"tracking.uri=sqlite:///{out}/mlflow.db", f"tracking.artifact_location={out.as_uri()}/artifacts",
           f"output.folder={out}/model", f"search.storage={out}/study.journal"]
    log = root / "target.log"
    started = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *cmd], stdout=subprocess.PIPE, stderr=err,
                              text=True)
    wall = time.perf_counter() - started
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    text = log.read_text()
    if status["rc"] != 0:
        sys.stderr.write(text[-5000:])
        raise SystemExit(f"the target run failed (exit code {status['rc']})")
    searched = re.search(r"This worker searched for ([0-9.]+) s", text)
    counts = re.search(r"Study '.*?': (\{.*?\}) trials in", text)
    info = json.loads((out / "model" / "model_info.json").read_text())
    return {"units": units, "n_trials": n_trials, "wall_s": wall, "peak_mb": status["peak_mb"],
            "search_s": float(searched.group(1)) if searched else None, "counts": counts.group(1) if counts else "?",
            "best": info["best_configuration"], "cv_score": info["cv"]["best_score"],
            "unit_limits": info.get("unit_limits"),
            "subsampled": sorted(set(re.findall(r"Pipelines with (.+?) are fitted on", text)))}


# ------------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------------

def _cell(r: dict[str, Any] | None, key: str) -> str:
    if r is None:
        return ""
    if r["state"] == "timeout":
        return f"> {r['trial_s']:.0f} s (timeout)" if key == "trial_s" else "-"
    if r["state"] == "error":
        return "error"
    if key == "trial_s":
        note = f" ({r['fit_units'] // 1000}k fit)" if r["fit_units"] < r["fold_train_units"] else ""
        fail = " failed" if r["state"] == "fail" else ""
        return f"{r['trial_s']:.1f}{note}{fail}"
    return f"{r['peak_mb']:.0f}"


def table(results: list[dict[str, Any]], sizes: list[int], families: list[str], key: str) -> str:
    """A markdown table family x size of ``key`` (``trial_s`` or ``peak_mb``)."""
    by = {(r["family"], r["size"]): r for r in results}
    head = "| family | " + " | ".join(f"{s:,} units" for s in sizes) + " |"
    rows = [head, "|---|" + "---|" * len(sizes)]
    rows += [f"| {f} | " + " | ".join(_cell(by.get((f, s)), key) for s in sizes) + " |" for f in families]
    return "\n".join(rows)


def plot(results: list[dict[str, Any]], families: list[str], path: Path, limits: bool) -> None:
    """Log-log time per trial and peak memory against units, one line per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
    for f in families:
        rs = sorted((r for r in results if r["family"] == f and r["state"] in ("complete", "fail", "timeout")),
                    key=lambda r: r["size"])
        if not rs:
            continue
        line = ax_t.plot([r["size"] for r in rs], [r["trial_s"] for r in rs], marker="o", label=f)[0]
        for r in rs:
            if r["state"] == "timeout":
                ax_t.annotate("timeout", (r["size"], r["trial_s"]), textcoords="offset points", xytext=(4, 4),
                              fontsize=7, color=line.get_color())
        done = [r for r in rs if "peak_mb" in r]
        ax_m.plot([r["size"] for r in done], [r["peak_mb"] for r in done], marker="o", label=f, color=line.get_color())
    for ax, label in ((ax_t, "time per trial, 5-fold CV (s)"), (ax_m, "peak resident memory (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("units (searched)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.suptitle(f"unitrefine trial cost per family ({N_METRICS} metrics, 1 thread per fit, "
                 f"search.unit_limits {'on' if limits else 'off'})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(results: list[dict[str, Any]], target: dict[str, Any] | None, sizes: list[int], families: list[str],
           limits: bool, machine: str, command: str, name: str) -> Path:
    """Write the markdown (and the figure) to ``benchmarks/results/``."""
    from unitrefine.config import DEFAULT_UNIT_LIMITS

    png = RESULTS / f"{name}.png"
    if results:
        RESULTS.mkdir(exist_ok=True)
        plot(results, families, png, limits)
    limits_text = "the defaults " + json.dumps(DEFAULT_UNIT_LIMITS) if limits else "lifted (--no-limits)"
    sizes_text = ", ".join(f"{s:,}" for s in sizes)
    text = [f"# Scaling: cost of a trial per family, {sizes_text} units x {N_METRICS} metrics\n", machine,
            f"- command: `{command}`\n", f"- `search.unit_limits`: {limits_text}\n"]
    if target is not None:
        ok = target["wall_s"] <= TARGET_S and target["peak_mb"] <= TARGET_MB
        text.append(
            f"\n## Target run: {target['units']:,} units, {target['n_trials']} trials of the default search\n\n"
            f"- **wall time {target['wall_s']:.0f} s** (target <= {TARGET_S} s), of which the search "
            f"{target['search_s'] or float('nan'):.0f} s; **peak memory {target['peak_mb']:.0f} MB** (target <= "
            f"{TARGET_MB} MB): **{'met' if ok else 'NOT met'}**\n"
            f"- trials: {target['counts']}; best CV balanced accuracy {target['cv_score']:.4f} with {target['best']}\n"
            f"- subsampled in the search (search.unit_limits): {', '.join(target['subsampled']) or 'none'}; "
            f"limits that applied to the exported model: {target['unit_limits'] or 'none'}\n")
    if results:
        text.append("\n## Time per trial (s; 5-fold CV; `(Nk fit)`: fitted on N thousand units of each fold's "
                    "training part, by `search.unit_limits`)\n\n" + table(results, sizes, families, "trial_s") + "\n")
        text.append("\n## Peak resident memory of the measuring process (MB; data and libraries included)\n\n"
                    + table(results, sizes, families, "peak_mb") + "\n")
        loads = {r["size"]: r.get("load_s") for r in results if r.get("load_s") is not None}
        text.append("\nLoading the generated CSVs as training does: "
                    + ", ".join(f"{s:,} units {v:.1f} s" for s, v in sorted(loads.items())) + ".\n")
        text.append(f"\n![trial cost against units]({png.name})\n")
    return write_result(name, "".join(text))


def main(argv: list[str] | None = None) -> Path | None:
    """Parse options; measure (or, with ``--measure-one``, be one measurement)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--families", nargs="+", default=CLASSIFIERS + OTHERS,
                        help="classifier names, or <slot>=<component> (e.g. imputer=knn)")
    parser.add_argument("--no-limits", action="store_true", help="lift search.unit_limits")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per measurement (default 900)")
    parser.add_argument("--quick", action="store_true", help="3 families x 1k and 3k units, no target run")
    parser.add_argument("--no-target", action="store_true", help="skip the 100k-unit target run")
    parser.add_argument("--target-only", action="store_true", help="only the target run")
    parser.add_argument("--target-units", type=int, default=TARGET_UNITS)
    parser.add_argument("--target-trials", type=int, default=TARGET_TRIALS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure-one", nargs=2, metavar=("DATA", "FAMILY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_one:
        from unitrefine.process import prepare_command_process

        prepare_command_process()
        print(json.dumps(measure_one(Path(args.measure_one[0]), args.measure_one[1], not args.no_limits)))
        return None
    sizes, families = args.sizes, args.families
    if args.quick:
        sizes, families = [1_000, 3_000], ["logistic_regression", "svc", "imputer=knn"]
    machine = machine_line()
    results = []
    with tempfile.TemporaryDirectory(prefix="unitrefine-scaling-") as tmp:
        root = Path(tmp)
        for size in [] if args.target_only else sizes:
            data = make_data(root, size, args.seed)
            for family in families:
                r = {**run_measurement(data, family, not args.no_limits, args.timeout), "size": size}
                results.append(r)
                print(f"{size:>7} units  {family:24s} {_cell(r, 'trial_s'):>22} s/trial  {_cell(r, 'peak_mb'):>6} MB"
                      + (f"  {r.get('error')}" if r.get("error") else ""), flush=True)
        target = None
        if not (args.quick or args.no_target):
            print(f"target run: {args.target_units:,} units, {args.target_trials} trials ...", flush=True)
            target = target_run(root, args.seed, args.target_trials, args.target_units)
            print(f"target run: {target['wall_s']:.0f} s, {target['peak_mb']:.0f} MB", flush=True)
    name = "scaling" + ("_no_limits" if args.no_limits else "") + ("_quick" if args.quick else "") \
        + ("_target" if args.target_only else "")
    command = "python benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    return report(results, target, sizes, families, not args.no_limits, machine, command.strip(), name)


if __name__ == "__main__":
    written = main()
    if written is not None:
        print(written.read_text())
