"""Held-out balanced accuracy, wall time and peak memory: unitrefine against SpikeInterface's ``train_model``.

    python benchmarks/vs_spikeinterface.py [--splits mouse1,mouse2,mouse3,mouse4]
                                           [--tasks sua_vs_all,noise_vs_neural,three_class]
                                           [--only spikeinterface|unitrefine] [--parallel 1]

Each split leaves one whole mouse (all its recordings) out of the 9 shipped ``mouse_v1`` recordings; both
trainers learn from the other recordings and are scored on the left-out ones. SpikeInterface runs with its
defaults (4 imputers x 3 scalers x random forest, RandomizedSearchCV 25 x 5-fold, its own 80/20 split of
the given units, ``n_jobs=1``); unitrefine runs the task's experiment (``mouse_v1``, ``mouse_noise_v1``,
``mouse_3class_v1``, both cores) with the split's recordings excluded (``dataset.exclude_recordings``) and
its own held-out recordings released to the search, and its exported model is scored on the split; the table also
shows the estimate for new recordings that run printed, to check that it is honest. Every (trainer, task, split)
cell runs in its own process and is cached as JSON under ``benchmarks/results/vs_spikeinterface/``
(SpikeInterface's trainer takes about half an hour per cell on one core), so an interrupted benchmark resumes;
delete a JSON to re-measure it. The table of all cached cells is written to ``benchmarks/results/vs_spikeinterface.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = RESULTS / "vs_spikeinterface"
EXPERIMENTS = {"sua_vs_all": "mouse_v1", "noise_vs_neural": "mouse_noise_v1", "three_class": "mouse_3class_v1"}
TRAINERS = ("unitrefine", "spikeinterface")


def split_recordings(subject: str) -> list[str]:
    """The shipped recordings of one mouse (``mouse3`` -> mouse3a_imec0, mouse3b_imec0, mouse3c_imec0)."""
    from unitrefine.config import compose_config, validate_config

    recs = [r.id for r in validate_config(compose_config(["+experiment=mouse_v1"])).dataset.recordings
            if r.subject == subject]
    if not recs:
        raise SystemExit(f"no mouse_v1 recording has subject {subject!r} (conf/dataset/mouse_base.yaml)")
    return recs


def spikeinterface_cell(task: str, holdout: list[str], tmp: Path) -> dict:
    """Train SpikeInterface's default trainer on the other recordings; score it on ``holdout``."""
    from sklearn.metrics import balanced_accuracy_score
    from spikeinterface.curation import train_model

    from unitrefine.config import compose_config, validate_config
    from unitrefine.data.loading import load_dataset

    cfg = validate_config(compose_config(["+experiment=mouse_v1", f"task={task}", "dataset.exclude_metrics=[]",
                                              "threshold.tune=false"]))
    table = load_dataset(cfg.dataset, cfg.task, cfg.root_dir)
    recs = table.units["recording"].to_numpy()
    held = table.units["recording"].isin(holdout).to_numpy()
    paths, labels = [], []
    for rec in dict.fromkeys(recs[~held]):
        part = recs == rec
        path = tmp / f"{rec}.csv"
        table.X[part].set_index(table.units["unit_id"][part]).to_csv(path)
        paths.append(str(path))
        labels.append(table.y[part].tolist())
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SpikeInterface's trainer warns on every fit; local to this call
        trainer = train_model(mode="csv", metrics_paths=paths, labels=labels, folder=str(tmp / "si_model"),
                              metric_names=list(table.X.columns), overwrite=True, seed=42, verbose=False)
    wall = time.perf_counter() - started
    pred = trainer.best_pipeline.predict(table.X[held])
    y = table.y[held]
    per = {r: float(balanced_accuracy_score(y[recs[held] == r], pred[recs[held] == r])) for r in holdout}
    return {"balanced_accuracy": float(balanced_accuracy_score(y, pred)), "per_recording": per, "wall_s": wall,
            "cores_used": 1}


def unitrefine_cell(task: str, holdout: list[str], tmp: Path, extra: tuple[str, ...] = ()) -> dict:
    """Run the task's experiment without ``holdout`` at all, then score its exported model on ``holdout``.

    The experiment runs as a user would run it on the 7 recordings left: its own held-out recordings are
    released to the search (holding out a second mouse would leave 4 recordings, too few for grouped CV; the
    estimate does not need them), it prints its estimate for new recordings (leave-one-animal-out refits of
    the exported model) and exports the model refit on all of them. That estimate and the score on the
    left-out mouse, which the run never saw, show whether the estimate is honest.
    """
    from sklearn.metrics import balanced_accuracy_score

    from unitrefine.config import compose_config, validate_config
    from unitrefine.data.loading import load_dataset
    from unitrefine.export.folder import load_model_folder
    from unitrefine.model.estimate import REVIEW_BUDGETS
    from unitrefine.model.uncertainty import curated_scores, decision_threshold, model_uncertainty

    experiment = EXPERIMENTS[task]
    overrides = [f"+experiment={experiment}", f"dataset.exclude_recordings=[{','.join(holdout)}]",
                 "cv.holdout_recordings=[]"]
    cmd = [sys.executable, "-m", "unitrefine.train", *overrides, f"tracking.uri=sqlite:///{tmp}/mlflow.db",
           f"tracking.artifact_location={tmp.as_uri()}/artifacts", f"output.folder={tmp}/ur_model",
           f"search.storage={tmp}/study.journal", *extra]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"unitrefine training failed with exit code {proc.returncode}")
    model, info = load_model_folder(tmp / "ur_model")
    cfg = validate_config(compose_config([f"+experiment={experiment}"]))
    table = load_dataset(cfg.dataset, cfg.task, cfg.root_dir)
    held = table.units["recording"].isin(holdout).to_numpy()
    recs, y = table.units["recording"].to_numpy()[held], table.y[held]
    X = table.X.loc[held, info["features"]]
    pred = model.predict(X)
    per = {r: float(balanced_accuracy_score(y[recs == r], pred[recs == r])) for r in holdout}
    # What a person's review of the units the model is least sure of buys on this mouse, beside what the run
    # printed it would buy (its estimate's review-budget curve).
    uncertain = model_uncertainty(model.predict_proba(X), decision_threshold(model))
    curated = curated_scores(y, pred, uncertain, REVIEW_BUDGETS)
    return {"balanced_accuracy": float(balanced_accuracy_score(y, pred)), "per_recording": per, "wall_s": wall,
            "cores_used": 2, "printed_estimate": info["estimate_new_recordings"]["balanced_accuracy"],
            "estimated_on": list(info["estimate_new_recordings"]["per_group"]),
            "printed_per_group": info["estimate_new_recordings"]["per_group"],
            "ensemble_members": len(info["ensemble"] or [None]),
            "curated_by_review_budget": {str(f): v for f, v in curated.items()},
            "printed_review_budget": info["estimate_new_recordings"].get("review_budget") or [],
            "model_mb": sum(f.stat().st_size for f in (tmp / "ur_model").glob("*.skops")) / 2**20}


def run_cell(trainer: str, task: str, split: str, at_once: int) -> dict:
    """Measure one cell in this process and write its JSON (called through ``--cell``).

    ``at_once`` is how many cells the benchmark measured side by side; it is recorded with the load average.
    """
    load = os.getloadavg()[0]
    holdout = split_recordings(split)
    with tempfile.TemporaryDirectory(prefix="unitrefine-vs-si-") as tmp:
        cell = (unitrefine_cell if trainer == "unitrefine" else spikeinterface_cell)(task, holdout, Path(tmp))
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    cell.update(trainer=trainer, task=task, split=split, holdout=holdout, peak_rss_mb=peak / 1024,
                date=str(dt.date.today()), conditions=(
                    f"{at_once} cell(s) measured at once; load average {load:.1f} at the start, "
                    f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores"))
    CELLS.mkdir(parents=True, exist_ok=True)
    (CELLS / f"{trainer}_{task}_{split}.json").write_text(json.dumps(cell, indent=1) + "\n", encoding="utf-8")
    return cell


def _interval(cell: dict | None) -> str:
    """The estimate's 90% prediction interval for one new mouse, for cells that recorded the per-mouse scores."""
    from unitrefine.model.estimate import GroupEstimate

    if not cell or "printed_per_group" not in cell:
        return ""
    low, high = GroupEstimate("subject", cell["printed_per_group"], len(cell["printed_per_group"])).interval()
    inside = "inside" if low <= cell["balanced_accuracy"] <= high else "outside"
    return f" (90% interval {low:.3f}-{high:.3f}: score {inside})"


def review_budget_table(cells: list[dict]) -> list[str]:
    """What a person's review of the units the model is least sure of bought on each left-out mouse, against what
    the run printed beforehand (its estimate's review-budget curve): mean, mean error, interval coverage."""
    lines = []
    for task in EXPERIMENTS:
        ours = [c for c in cells
                if c["trainer"] == "unitrefine" and c["task"] == task and c.get("printed_review_budget")]
        if not ours:
            continue
        lines += [f"## {task}: curated balanced accuracy on the left-out mouse by review budget", "",
                  "The share of the mouse's units a person reviews, most uncertain first (`predict review=`); their "
                  "labels replace the model's. Scored over all the mouse's units: the curated recording, not the "
                  "model alone. \"Printed\": the run's own estimate beforehand (leave-one-mouse-out refits).", "",
                  "| review | " + " | ".join(c["split"] for c in ours) + " | mean | printed mean | mean error "
                  "| inside the printed 90% interval |", "|---|" + "---|" * (len(ours) + 4)]
        for i, point in enumerate(ours[0]["printed_review_budget"]):
            f = str(point["review_fraction"])
            actual = [c["curated_by_review_budget"][f] for c in ours]
            printed = [c["printed_review_budget"][i] for c in ours]
            errors = [p["balanced_accuracy"] - a for p, a in zip(printed, actual)]
            inside = sum(p["interval"][0] <= a <= p["interval"][1] for p, a in zip(printed, actual))
            printed_mean = sum(p["balanced_accuracy"] for p in printed) / len(printed)
            lines.append(f"| {float(f):.0%} | " + " | ".join(f"{a:.3f}" for a in actual)
                         + f" | **{sum(actual) / len(actual):.3f}** | {printed_mean:.3f}"
                         f" | {sum(errors) / len(errors):+.3f} | {inside} of {len(ours)} |")
        lines.append("")
    return lines


def table() -> str:
    """Markdown of every cached cell: per task, one row per split and the mean over splits."""
    cells = [json.loads(p.read_text()) for p in sorted(CELLS.glob("*.json"))]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = ["# unitrefine vs SpikeInterface `train_model`, leaving one whole mouse out", "",
             f"Machine: {os.cpu_count()} cores, {mem:.0f} GiB. Balanced accuracy on the left-out mouse's "
             "recordings (neither trainer saw them); wall time of the whole training; peak resident memory of "
             "the largest process. SpikeInterface: its defaults (one core); unitrefine: the task's experiment "
             "(both cores). \"Its printed estimate\": the balanced accuracy that unitrefine's run printed as its "
             "expectation for new recordings (leave-one-mouse-out refits on the training mice); its mean error "
             "is estimate minus score, above 0 when the estimate was optimistic. Regenerate with "
             "`python benchmarks/vs_spikeinterface.py`; how each cell was measured "
             "is listed at the end.", ""]
    for task in EXPERIMENTS:
        rows = {(c["split"], c["trainer"]): c for c in cells if c["task"] == task}
        splits = sorted({s for s, _ in rows})
        if not splits:
            continue
        lines += [f"## {task} (`+experiment={EXPERIMENTS[task]}`)", "",
                  "| left out | unitrefine | its printed estimate | SpikeInterface | unitrefine wall (s) "
                  "| SpikeInterface wall (s) | unitrefine peak (MB) | SpikeInterface peak (MB) |",
                  "|---|---|---|---|---|---|---|---|"]
        for split in splits:
            ur, si = rows.get((split, "unitrefine")), rows.get((split, "spikeinterface"))
            fmt = lambda c, k, f: format(c[k], f) if c and c.get(k) is not None else "—"  # noqa: E731
            lines.append(f"| {split} ({len((ur or si)['holdout'])} recordings) "
                         f"| {fmt(ur, 'balanced_accuracy', '.3f')} "
                         f"| {fmt(ur, 'printed_estimate', '.3f')}{_interval(ur)} "
                         f"| {fmt(si, 'balanced_accuracy', '.3f')} "
                         f"| {fmt(ur, 'wall_s', '.0f')} | {fmt(si, 'wall_s', '.0f')} | {fmt(ur, 'peak_rss_mb', '.0f')} "
                         f"| {fmt(si, 'peak_rss_mb', '.0f')} |")
        both = [s for s in splits if (s, "unitrefine") in rows and (s, "spikeinterface") in rows]
        if len(both) > 1:
            mean = {(t, k): sum(rows[(s, t)][k] for s in both) / len(both)
                    for t in TRAINERS for k in ("balanced_accuracy", "wall_s")}
            errors = [rows[(s, "unitrefine")]["printed_estimate"] - rows[(s, "unitrefine")]["balanced_accuracy"]
                      for s in both]
            lines.append(f"| **mean of {len(both)} splits** | **{mean['unitrefine', 'balanced_accuracy']:.3f}** "
                         f"| mean error {sum(errors) / len(errors):+.3f} (mean abs. "
                         f"{sum(map(abs, errors)) / len(errors):.3f}) "
                         f"| **{mean['spikeinterface', 'balanced_accuracy']:.3f}** "
                         f"| {mean['unitrefine', 'wall_s']:.0f} | {mean['spikeinterface', 'wall_s']:.0f} | | |")
        lines.append("")
    lines += review_budget_table(cells)
    lines += ["## How each cell was measured", ""]
    lines += [f"- {c['trainer']} / {c['task']} / {c['split']} ({c['date']}): {c.get('conditions', 'not recorded')}"
              for c in cells]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure the missing cells (each in a fresh process), then rewrite the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", default="mouse1,mouse2,mouse3,mouse4",
                        help="comma-separated mice to leave out, one split each")
    parser.add_argument("--tasks", default=",".join(EXPERIMENTS))
    parser.add_argument("--only", choices=TRAINERS, help="measure one trainer's cells only")
    parser.add_argument("--parallel", type=int, default=1, help="cells measured at once (each in its own process)")
    parser.add_argument("--cell", nargs=4, metavar=("TRAINER", "TASK", "SPLIT", "AT_ONCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        run_cell(*args.cell[:3], int(args.cell[3]))
        return
    todo = [(t, task, s) for task in args.tasks.split(",") for s in args.splits.split(",")
            for t in ([args.only] if args.only else TRAINERS) if not (CELLS / f"{t}_{task}_{s}.json").exists()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def measure(cell: tuple[str, str, str]) -> None:
        subprocess.run([sys.executable, __file__, "--cell", *cell, str(args.parallel)], check=True, env=env)

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        list(pool.map(measure, todo))
    out = RESULTS / "vs_spikeinterface.md"
    out.write_text(table(), encoding="utf-8")
    print(out.read_text())


if __name__ == "__main__":
    main()
