"""Held-out balanced accuracy and wall time: unitrefine against SpikeInterface's ``train_model``.

    python benchmarks/vs_spikeinterface.py --holdout mouse3a_imec0,mouse3b_imec0,mouse3c_imec0 [--task sua_vs_all]

Both are trained on the mouse_v1 recordings minus the held-out ones and scored on the held-out ones.
SpikeInterface runs with its defaults (4 imputers x 3 scalers x random forest, RandomizedSearchCV 25 x 5-fold,
its own 80/20 split of the given units); unitrefine runs ``+experiment=mouse_v1`` with the same recordings
held out. Writes ``benchmarks/results/vs_spikeinterface_<task>_<holdout>.md``. SpikeInterface's trainer
takes tens of minutes per split on 2 cores; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def spikeinterface_score(holdout: list[str], task: str, tmp: Path) -> tuple[float, dict[str, float], float]:
    """Train SpikeInterface's default trainer on the other recordings; score it on ``holdout``."""
    from sklearn.metrics import balanced_accuracy_score
    from spikeinterface.curation import train_model

    from unitrefine.config import compose_config, validate_config
    from unitrefine.data import load_dataset

    cfg = validate_config(compose_config(["+experiment=mouse_v1", f"task={task}", "dataset.exclude_metrics=[]"]))
    table = load_dataset(cfg.dataset, cfg.task, cfg.root_dir)
    held = table.units["recording"].isin(holdout).to_numpy()
    paths, labels = [], []
    for rec in dict.fromkeys(table.units["recording"][~held]):
        part = table.units["recording"].to_numpy() == rec
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
    y, recs = table.y[held], table.units["recording"].to_numpy()[held]
    per = {r: float(balanced_accuracy_score(y[recs == r], pred[recs == r])) for r in holdout}
    return float(balanced_accuracy_score(y, pred)), per, wall


def unitrefine_score(holdout: list[str], task: str, tmp: Path) -> tuple[float, dict[str, float], float]:
    """Run the mouse_v1 experiment with ``holdout`` held out; its own held-out report."""
    cmd = [sys.executable, "-m", "unitrefine.train", "+experiment=mouse_v1", f"task={task}",
           f"cv.holdout_recordings=[{','.join(holdout)}]", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
           f"tracking.artifact_location={tmp.as_uri()}/artifacts", f"output.folder={tmp}/ur_model",
           f"search.storage={tmp}/study.journal"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    report = json.loads((tmp / "ur_model" / "model_info.json").read_text())["holdout"]
    return report["balanced_accuracy"], {r: m["balanced_accuracy"] for r, m in report["per_recording"].items()}, wall


def main() -> None:
    """Run both on one split and write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holdout", required=True, help="comma-separated recording ids to hold out")
    parser.add_argument("--task", default="sua_vs_all")
    args = parser.parse_args()
    holdout = args.holdout.split(",")
    with tempfile.TemporaryDirectory(prefix="unitrefine-vs-si-") as tmp:
        ours = unitrefine_score(holdout, args.task, Path(tmp))
        theirs = spikeinterface_score(holdout, args.task, Path(tmp))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        f"# unitrefine vs SpikeInterface `train_model`: {args.task}, held out {', '.join(holdout)}", "",
        f"{dt.date.today()}; {os.cpu_count()} cores, {mem:.0f} GiB", "",
        "| trainer | held-out balanced accuracy | per recording | wall time (s) |", "|---|---|---|---|",
    ]
    for name, (ba, per, wall) in (("unitrefine mouse_v1", ours), ("SpikeInterface train_model (defaults)", theirs)):
        lines.append(f"| {name} | {ba:.4f} | {', '.join(f'{r} {v:.3f}' for r, v in per.items())} | {wall:.0f} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"vs_spikeinterface_{args.task}_{'_'.join(holdout)}.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(out.read_text())


if __name__ == "__main__":
    main()
