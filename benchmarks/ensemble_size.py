"""How many trials the exported ensemble should hold: held-out accuracy, refit time and model size per bound.

    python benchmarks/ensemble_size.py [--task sua_vs_all] [--splits mouse1,mouse2,mouse3,mouse4]
                                       [--sizes 1,2,3,5,none]

For each split (one whole mouse left out, as in ``vs_spikeinterface.py``) the task's experiment searches once
on the other recordings, as a user would run it (search only: no estimate, a single-model export). Then, on
that same study, the ensemble is chosen again under each ``ensemble.max_members`` bound (1: the best trial
alone, with the tuned threshold; none: no bound, the experiment's default), refit on the searched recordings
as the export does, and scored on the left-out mouse. Every bound sees the same trials, so the comparison does
not depend on how many trials the machine finished in the search's time limit. Refit time matters because a
run refits the exported model once per training animal for its estimate and once more for the export.
Each split is cached as JSON under ``benchmarks/results/ensemble_size/`` (delete it to re-measure); the table
is written to ``benchmarks/results/ensemble_size_<task>.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_common import RESULTS, machine_line, write_result
from vs_spikeinterface import EXPERIMENTS, split_recordings

from unitrefine.process import prepare_command_process

CELLS = RESULTS / "ensemble_size"


def search_once(task: str, holdout: list[str], tmp: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """Run the experiment's search without ``holdout`` (and with ``extra`` overrides); return the overrides that
    reproduce its config."""
    overrides = [f"+experiment={EXPERIMENTS[task]}", f"dataset.exclude_recordings=[{','.join(holdout)}]",
                 "cv.holdout_recordings=[]", f"search.storage={tmp}/study.journal", *extra]
    cmd = [sys.executable, "-m", "unitrefine.train", *overrides, "tracking.enabled=false", f"output.folder={tmp}/model",
           "cv.estimate_new_recordings=false", "ensemble.rounds=0"]  # neither changes the search
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-5000:])
        raise SystemExit(f"training failed with exit code {proc.returncode}")
    return overrides


@dataclasses.dataclass(frozen=True)
class SearchedSplit:
    """One split searched as a user runs it: its config, data, finished study and left-out mouse's units."""

    cfg: Any
    data: Any
    searched: Any
    held: Any
    tmp: Path
    search_s: float


@contextmanager
def searched_split(task: str, holdout: list[str], prefix: str, extra: tuple[str, ...] = ()) -> Iterator[SearchedSplit]:
    """Search ``task`` without ``holdout`` (:func:`search_once`) in a temporary folder, which lives as long as the
    ``with`` block (the study is read from its journal there)."""
    import numpy as np
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from unitrefine.config import compose_config, validate_config
    from unitrefine.data.loading import load_dataset
    from unitrefine.run import stages

    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        tmp = Path(name)
        started = time.perf_counter()
        overrides = search_once(task, holdout, tmp, extra)
        search_s = time.perf_counter() - started
        cfg = validate_config(compose_config(overrides))
        storage = JournalStorage(JournalFileBackend(str(tmp / "study.journal")))
        (study_name,) = optuna.get_all_study_names(storage)
        data = stages.split(cfg, stages.load(cfg))
        searched = stages.searched_study(cfg, data, optuna.load_study(study_name=study_name, storage=storage))
        full = load_dataset(validate_config(compose_config(overrides[:1])).dataset, cfg.task, cfg.root_dir)
        held = full.subset(np.flatnonzero(full.units["recording"].isin(holdout)))
        yield SearchedSplit(cfg, data, searched, held, tmp, search_s)


def measure_split(task: str, split: str, sizes: list[int | None]) -> dict:
    """Search once without ``split``'s mouse, then export and score the ensemble under each bound in ``sizes``."""
    from unitrefine.export.folder import dump_model
    from unitrefine.run import stages
    from unitrefine.search.evaluation import balanced_accuracy

    holdout = split_recordings(split)
    load = os.getloadavg()[0]
    with searched_split(task, holdout, "unitrefine-ensemble-size-") as run:
        cfg, data, searched, held, tmp, search_s = run.cfg, run.data, run.searched, run.held, run.tmp, run.search_s
        n_complete = searched.counts.get("complete", 0)
        rows = []
        for size in sizes:
            bounded = dataclasses.replace(cfg, ensemble=dataclasses.replace(cfg.ensemble, max_members=size))
            final = stages.choose(bounded, searched, data)
            fit_started = time.perf_counter()
            model = final.fit(data.train)
            fit_s = time.perf_counter() - fit_started
            pred = model.predict(held.X[list(data.train.X.columns)])
            folder = tmp / f"size_{size}"
            folder.mkdir()
            rows.append({"max_members": size, "members": len(final.weights), "weights": final.weights,
                         "oof_score": final.threshold.oof_balanced_accuracy if final.threshold else
                         (final.selection.score if final.selection else None),
                         "held_out": balanced_accuracy(held.y, pred), "refit_s": fit_s,
                         "model_mb": dump_model(model, folder).stat().st_size / 2**20})
    return {"task": task, "split": split, "holdout": holdout, "n_complete": n_complete, "search_s": search_s,
            "rows": rows, "date": str(dt.date.today()),
            "load_average": f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores"}


def table(task: str) -> str:
    """Markdown table of every cached split of ``task``: one row per bound, mean over the splits."""
    cells = [json.loads(p.read_text()) for p in sorted(CELLS.glob(f"{task}_*.json"))]
    if not cells:
        return f"No cached splits for {task}.\n"
    splits = [c["split"] for c in cells]
    lines = [f"## {task}: left-out mouse balanced accuracy by `ensemble.max_members`", "",
             "| max_members | " + " | ".join(splits)
             + " | mean | members (per split) | refit s (mean) | model MB (mean) |",
             "|---|" + "---|" * (len(splits) + 4)]
    for i, row in enumerate(cells[0]["rows"]):
        per = [c["rows"][i] for c in cells]
        mean = sum(r["held_out"] for r in per) / len(per)
        lines.append(f"| {row['max_members'] if row['max_members'] is not None else 'none'} | "
                     + " | ".join(f"{r['held_out']:.3f}" for r in per) + f" | **{mean:.3f}** | "
                     + " ".join(str(r["members"]) for r in per)
                     + f" | {sum(r['refit_s'] for r in per) / len(per):.0f} | "
                     + f"{sum(r['model_mb'] for r in per) / len(per):.0f} |")
    lines += ["", "Completed trials (wall time of the search command, load average) per split: "
              + "; ".join(f"{c['split']} {c['n_complete']} ({c['search_s']:.0f} s, {c['load_average']})"
                          for c in cells), ""]
    return "\n".join(lines)


def main() -> None:
    """Measure the missing splits, then write the table."""
    prepare_command_process()  # one thread per fit here too
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sua_vs_all", choices=sorted(EXPERIMENTS))
    parser.add_argument("--splits", default="mouse1,mouse2,mouse3,mouse4")
    parser.add_argument("--sizes", default="1,2,3,5,none")
    args = parser.parse_args()
    sizes = [None if s == "none" else int(s) for s in args.sizes.split(",")]
    CELLS.mkdir(parents=True, exist_ok=True)
    for split in args.splits.split(","):
        path = CELLS / f"{args.task}_{split}.json"
        if not path.exists():
            path.write_text(json.dumps(measure_split(args.task, split, sizes), indent=1) + "\n", encoding="utf-8")
    header = "# Ensemble size: held-out accuracy, refit time and model size\n\n" + machine_line() + "\n"
    print(write_result(f"ensemble_size_{args.task}", header + table(args.task)))


if __name__ == "__main__":
    main()
