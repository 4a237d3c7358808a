"""Active vs random choice of the units to label: held-out balanced accuracy against the number of labels.

    python benchmarks/active_learning.py [--quick] [--task sua_vs_all] [--seeds 5] [--initial 20] [--batch 20]
                                         [--rounds 15] [--decision tuned|half] [--jobs 2] [--out benchmarks/results]

A simulated curator on the 9 shipped ``mouse_v1`` recordings (loaded with unitrefine's own loaders,
``+experiment=mouse_v1``; ``--task`` picks another task). Each split leaves one whole mouse out as the test
set; the other mice's units are the pool a curator labels. Both strategies start from the same small random
labelled seed (``--initial`` units, at least two of each class); then, round by round, ``--batch`` more units
are labelled: **active** picks them with ``unitrefine.suggest``'s own ranking
(:func:`unitrefine.apply.active.rank_candidates`: margin uncertainty of the current model, round-robin over the
pool's recordings), **random** picks them uniformly. After every round the model is refitted on the labels so
far and scored on the left-out mouse.

The model is a fixed pipeline from unitrefine's estimator registry (median imputer -> random forest, 200 trees,
balanced class weights, one thread), not a search: a full Optuna search per round (minutes each) would make
the simulation hours long; the search would raise both curves, not change who labels better. The same pipeline
fitted on the whole pool gives the ceiling. On a binary task the model decides, as the exported model does, at a
threshold tuned on its labelled units (here their out-of-bag predictions), and active selection ranks the margin
around that threshold, as ``unitrefine.suggest`` does (``--decision half``: at 0.5). Results (a markdown table and
a PNG of the curves) go to ``benchmarks/results/active_learning.{md,png}``; ``--quick`` (one split, one seed, three
rounds, 50 trees) checks the script in seconds and writes to a temporary folder unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from unitrefine.process import prepare_command_process

prepare_command_process()  # one thread per fit, set before numpy loads: parallelism comes from processes

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

if TYPE_CHECKING:
    from imblearn.pipeline import Pipeline

    from unitrefine.data.dataset import UnitTable

RESULTS = Path(__file__).resolve().parent / "results"
#: strategy -> how active selection spreads over recordings (None: random selection)
STRATEGIES = {"random": None, "active": "round_robin", "active_no_spread": "none"}
COLOURS = {"random": "tab:grey", "active": "tab:blue", "active_no_spread": "tab:orange"}


@dataclass(frozen=True)
class Setting:
    """One simulation: which mouse is left out, the seed, and the labelling budget."""

    task: str
    test_subject: str
    seed: int
    initial: int
    batch: int
    rounds: int
    n_trees: int
    decision: str


def load_table(task: str) -> UnitTable:
    """The mouse_v1 recordings as training sees them (features, classes, recording and subject of every unit)."""
    from unitrefine.config import compose_config, validate_config
    from unitrefine.data.loading import load_dataset

    # threshold.tune (mouse_v1 tunes it) is for binary tasks only, and the simulation's model decides at argmax.
    cfg = validate_config(compose_config(["+experiment=mouse_v1", f"task={task}", "threshold.tune=false"]))
    return load_dataset(cfg.dataset, cfg.task, cfg.root_dir)


def make_model(n_trees: int, seed: int) -> Pipeline:
    """Median imputer -> random forest (balanced class weights, one thread, out-of-bag predictions), built from
    unitrefine's registry."""
    from unitrefine.search.pipeline import build_pipeline
    from unitrefine.search.search_space import Choice

    spec = {"imputer": Choice("median", {}), "scaler": Choice("none", {}), "resampler": Choice("none", {}),
            "classifier": Choice("random_forest", {"n_estimators": n_trees})}
    return build_pipeline(spec, seed).set_params(classifier__oob_score=True)


def fit_and_decide(model: Pipeline, X: pd.DataFrame, y: np.ndarray, decision: str) -> float | None:
    """Fit ``model``; return the threshold on P(class 1) it decides at (None: argmax).

    ``decision="tuned"`` on a binary task: the threshold with the best balanced accuracy on the labelled units'
    out-of-bag probabilities (each unit predicted by the trees that did not see it), as ``threshold.tune`` chooses
    it on out-of-fold predictions; ``"half"``, or more than two classes: argmax.
    """
    from unitrefine.model.threshold import tune_threshold

    model.fit(X, y)
    if decision != "tuned" or y.max() > 1:
        return None
    oob = model.named_steps["classifier"].oob_decision_function_[:, 1]
    seen = ~np.isnan(oob)  # a unit every tree drew has no out-of-bag prediction
    return tune_threshold(y[seen], oob[seen], "balanced_accuracy", 0.9).value


def predict_at(model: Pipeline, X: pd.DataFrame, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of ``X`` and the classes decided at ``threshold`` (argmax when None)."""
    proba = model.predict_proba(X)
    return proba, proba.argmax(axis=1) if threshold is None else (proba[:, 1] >= threshold).astype(int)


def initial_labels(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random positions of the pool holding at least two units of every class (redrawn until they do)."""
    n_classes = int(y.max()) + 1
    for _ in range(1000):
        pick = rng.choice(len(y), size=n, replace=False)
        if (np.bincount(y[pick], minlength=n_classes) >= 2).all():
            return pick
    raise SystemExit(f"could not draw {n} initial labels with two of each class; raise --initial")


def simulate(s: Setting) -> list[dict]:
    """Both strategies on one split and seed; one row per (strategy, number of labels)."""
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    from unitrefine.apply.active import rank_candidates
    from unitrefine.search.evaluation import balanced_accuracy

    table = load_table(s.task)
    subjects = table.units["subject"].to_numpy()
    pool_idx, test_idx = np.flatnonzero(subjects != s.test_subject), np.flatnonzero(subjects == s.test_subject)
    X, y = table.X.iloc[pool_idx].reset_index(drop=True), table.y[pool_idx]
    X_test, y_test = table.X.iloc[test_idx], table.y[test_idx]
    recordings = table.units["recording"].to_numpy()[pool_idx]
    classes = list(table.classes)
    rng = np.random.default_rng([s.seed, sorted(set(subjects)).index(s.test_subject)])
    start = initial_labels(y, s.initial, rng)
    rows = []
    with threadpool_limits(limits=1):
        for strategy, spread in STRATEGIES.items():
            labelled = np.zeros(len(y), dtype=bool)
            labelled[start] = True
            pick_rng = np.random.default_rng([s.seed, 7])
            for r in range(s.rounds + 1):
                started = time.perf_counter()
                model = make_model(s.n_trees, s.seed)
                threshold = fit_and_decide(model, X[labelled], y[labelled], s.decision)
                fit_s = time.perf_counter() - started
                proba_test, pred = predict_at(model, X_test, threshold)
                rows.append({"task": s.task, "test_subject": s.test_subject, "seed": s.seed, "strategy": strategy,
                             "round": r, "n_labels": int(labelled.sum()),
                             "balanced_accuracy": balanced_accuracy(y_test, pred),
                             "balanced_accuracy_argmax": balanced_accuracy(y_test, proba_test.argmax(axis=1)),
                             "threshold": threshold, "labelled_share_class1": float((y[labelled] == 1).mean()),
                             "roc_auc": roc_auc_score(y_test, proba_test[:, 1]) if len(classes) == 2 else np.nan,
                             "fit_s": fit_s})
                if r == s.rounds:
                    break
                free = np.flatnonzero(~labelled)
                if spread is None:
                    chosen = pick_rng.choice(free, size=min(s.batch, len(free)), replace=False)
                else:
                    proba = model.predict_proba(X.iloc[free])
                    candidates = pd.DataFrame({"recording": recordings[free], "unit_id": free.astype(str),
                                               "predicted_label": np.asarray(classes)[proba.argmax(axis=1)]})
                    for j, c in enumerate(classes):
                        candidates[f"probability_{c}"] = proba[:, j]
                    ranked = rank_candidates(candidates, classes, s.batch, "margin", spread, threshold)
                    chosen = ranked["unit_id"].astype(int).to_numpy()
                labelled[chosen] = True
    return rows


def ceiling(task: str, test_subject: str, n_trees: int, seed: int, decision: str) -> dict:
    """The same pipeline fitted on every unit of the pool (all labels), deciding the same way."""
    from threadpoolctl import threadpool_limits

    from unitrefine.search.evaluation import balanced_accuracy

    table = load_table(task)
    test = (table.units["subject"] == test_subject).to_numpy()
    with threadpool_limits(limits=1):
        model = make_model(n_trees, seed)
        threshold = fit_and_decide(model, table.X[~test], table.y[~test], decision)
    return {"test_subject": test_subject, "n_pool": int((~test).sum()), "n_test": int(test.sum()),
            "balanced_accuracy": balanced_accuracy(table.y[test], predict_at(model, table.X[test], threshold)[1])}


def labels_to_reach(curve: pd.Series, target: float) -> float:
    """The fewest labels from which ``curve`` (indexed by labels) stays at or above ``target``; NaN if it ends below."""
    above = (curve.sort_index() >= target - 1e-12).to_numpy()
    if not above[-1]:
        return float("nan")
    below = np.flatnonzero(~above)
    return float(curve.sort_index().index[below[-1] + 1 if len(below) else 0])


def summarise(rows: pd.DataFrame, ceilings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean curves (over splits, then seeds); per split and for the mean, the labels from which each active variant
    stays at or above random's final score."""
    per_split = rows.groupby(["test_subject", "strategy", "n_labels"])["balanced_accuracy"].mean()
    # Average over splits within each seed, then the spread over seeds (mice differ in difficulty; seeds in luck).
    by_seed = rows.groupby(["strategy", "seed", "n_labels"], as_index=False)["balanced_accuracy"].mean()
    curves = by_seed.groupby(["strategy", "n_labels"])["balanced_accuracy"].agg(["mean", "std"]).unstack("strategy")
    budget = rows["n_labels"].max()
    top = ceilings.set_index("test_subject")["balanced_accuracy"]
    curve_sets = [(subject, {k: per_split.loc[(subject, k)] for k in STRATEGIES}, float(top.loc[subject]))
                  for subject in sorted(rows["test_subject"].unique())]
    curve_sets.append(("mean", {k: curves[("mean", k)] for k in STRATEGIES}, float(top.mean())))
    reach = []
    for subject, c, ceil in curve_sets:
        target = float(c["random"].loc[budget])
        row = {"test_subject": subject, **{f"{k}_final": float(c[k].loc[budget]) for k in STRATEGIES}}
        row.update({f"{k}_labels_to_stay_at_random_final": labels_to_reach(c[k], target)
                    for k in STRATEGIES if k != "random"})
        reach.append({**row, "ceiling_all_labels": ceil})
    return curves, pd.DataFrame(reach)


def plot(rows: pd.DataFrame, ceilings: pd.DataFrame, path: Path) -> None:
    """One panel per left-out mouse plus the mean: mean +- std over seeds of both strategies, and the ceiling."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subjects = sorted(rows["test_subject"].unique())
    panels = [*subjects, "mean"] if len(subjects) > 1 else subjects
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        part = rows if panel == "mean" else rows[rows["test_subject"] == panel]
        if panel == "mean":  # average over splits first, then spread over seeds
            part = part.groupby(["strategy", "seed", "n_labels"], as_index=False)["balanced_accuracy"].mean()
        for strategy, colour in COLOURS.items():
            g = part[part["strategy"] == strategy].groupby("n_labels")["balanced_accuracy"]
            mean, std = g.mean(), g.std().fillna(0.0)
            ax.plot(mean.index, mean.to_numpy(), color=colour, label=strategy, marker=".", lw=1.5)
            ax.fill_between(mean.index, (mean - std).to_numpy(), (mean + std).to_numpy(), color=colour, alpha=0.2, lw=0)
        top = ceilings["balanced_accuracy"].mean() if panel == "mean" else \
            float(ceilings.set_index("test_subject").loc[panel, "balanced_accuracy"])
        ax.axhline(top, color="k", ls="--", lw=1, label="all pool labels")
        ax.set_title(f"{panel} left out" if panel != "mean" else "mean over splits")
        ax.set_xlabel("labelled units")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("balanced accuracy (left-out mouse)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (cells as they print)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def decision_text(rows: pd.DataFrame) -> str:
    """How the simulated model decides, for the markdown."""
    if rows["threshold"].isna().all():
        return "argmax of the class probabilities"
    return ("at the threshold on P(class 1) with the best balanced accuracy on the labelled units' out-of-bag "
            "predictions (as `threshold.tune` ships mouse_v1's model), and active selection ranks the margin around "
            "that threshold (as `unitrefine.suggest` does for a thresholded model); `--decision half` decides at 0.5")


def last_round(rows: pd.DataFrame) -> str:
    """Binary tasks: what each strategy had labelled by the last round and how it scored at 0.5 and at its threshold."""
    if rows["threshold"].isna().all():
        return ""
    last = rows[rows["n_labels"] == rows["n_labels"].max()]
    g = last.groupby("strategy")[["labelled_share_class1", "threshold", "balanced_accuracy", "balanced_accuracy_argmax",
                                  "roc_auc"]]
    df = g.mean().reindex(list(STRATEGIES)).reset_index()
    df.columns = ["strategy", "share of class 1 among labelled units", "threshold (mean)",
                  "balanced accuracy at it", "balanced accuracy at 0.5", "ROC AUC (any threshold)"]
    df = df.map(lambda v: f"{v:.3f}" if isinstance(v, float) else v)
    return ("## At the last round (mean over splits and seeds)\n\n" + markdown_table(df) + "\n\n"
            "Random selection's share of class 1 is the pool's, up to chance; the balanced accuracy at 0.5 is what the "
            "same models score without their threshold; the ROC AUC on the left-out mouse is how well they rank its "
            "units, whatever the threshold.\n\n")


def _fmt_labels(v: float, budget: int) -> str:
    return "not within the budget" if np.isnan(v) else f"{int(v)} ({v / budget:.0%})"


def write_markdown(path: Path, png: Path, args: argparse.Namespace, rows: pd.DataFrame, ceilings: pd.DataFrame,
                   wall_s: float, load: tuple[float, float]) -> None:
    """Date, machine, settings, the mean curves, and the labels each active variant needs per split."""
    curves, reach = summarise(rows, ceilings)
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    budget = int(rows["n_labels"].max())
    table = pd.DataFrame({"labels": curves.index})
    for k in STRATEGIES:
        table[k] = [f"{m:.3f}" + ("" if np.isnan(sd) else f" ± {sd:.3f}")
                    for m, sd in zip(curves[("mean", k)], curves[("std", k)])]
    reach_fmt = reach.copy()
    for c in reach_fmt.columns:
        if c.endswith("_labels_to_stay_at_random_final"):
            reach_fmt[c] = reach_fmt[c].map(lambda v: _fmt_labels(v, budget))
        elif c.endswith("_final") or c == "ceiling_all_labels":
            reach_fmt[c] = reach_fmt[c].map(lambda v: f"{v:.3f}")
    reach_fmt.columns = [c.replace("_labels_to_stay_at_random_final", ": labels to stay >= random final")
                         .replace("_final", " final").replace("ceiling_all_labels", "all pool labels")
                         .replace("test_subject", "left out") for c in reach_fmt.columns]
    mean_row = reach.iloc[-1]
    n_reach = mean_row["active_labels_to_stay_at_random_final"]
    verdict = (f"On the mean curve, active selection reaches random selection's final score "
               f"({mean_row['random_final']:.3f} at {budget} labels) at **{int(n_reach)} labels** and stays at or "
               f"above it ({n_reach / budget:.0%} of random's labels)."
               if not np.isnan(n_reach) else
               f"On the mean curve, active selection does **not** end at or above random selection's final score "
               f"({mean_row['random_final']:.3f} at {budget} labels).")
    per_split = reach.iloc[:-1]["active_labels_to_stay_at_random_final"]
    text = f"""# Active vs random labelling (`{args.command}`)

- date: {dt.date.today()}; machine: {os.cpu_count()} cores, {mem_gb:.0f} GiB, {platform.platform()};
  {args.jobs} worker processes
- wall time: {wall_s:.0f} s; load average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f}
  (above the core count: other work shared the machine, so the wall time is not clean; the scores do not depend on it)
- data: `mouse_v1` (9 recordings, 4 mice), task `{args.task}`; each split leaves one whole mouse out as the test set;
  the other mice's units are the pool a simulated curator labels (their curated labels are revealed when chosen)
- start: {args.initial} random labels (at least two per class; the same for every strategy); then {args.rounds} rounds
  of {args.batch} labels, to {budget}; {args.seeds} seeds per split
- `active`: `unitrefine.apply.active.rank_candidates`, what `unitrefine.suggest` runs (margin uncertainty of the current
  model, round-robin over the pool's recordings); `active_no_spread`: the same ranking without the round-robin;
  `random`: uniform over the unlabelled pool
- the model after each round: median imputer -> random forest ({args.trees} trees, balanced class weights, one thread)
  built from unitrefine's estimator registry, not a search: an Optuna search per round would take hours, and would
  lift every curve rather than change which units are worth labelling
- decision: {decision_text(rows)}
- ceiling: the same model fitted on every unit of the pool

{verdict} Per split it does so in {int(per_split.notna().sum())} of {len(per_split)} (the split's curve averaged
over seeds; "reaches" means at that number of labels and at every later one).

## Balanced accuracy on the left-out mouse against labels (mean over splits; ± std over seeds)

{markdown_table(table)}

## Per split: final scores, and the labels from which each active variant stays at random's final score

{markdown_table(reach_fmt)}

{last_round(rows)}
![curves]({png.name})
"""
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> Path:
    """Run the simulation; return the markdown file written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one split, one seed, three rounds, 50 trees")
    parser.add_argument("--task", default="sua_vs_all")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--decision", choices=("tuned", "half"), default="tuned",
                        help="binary tasks: decide at a threshold tuned on the labelled units' out-of-bag predictions "
                             "(as threshold.tune ships it; active selection ranks around it, as suggest does) or at "
                             "0.5")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--splits", default=None, help="comma-separated mice to leave out (default: every mouse)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results)")
    args = parser.parse_args(argv)
    args.command = " ".join(["python benchmarks/active_learning.py", *(argv if argv is not None else sys.argv[1:])])
    if args.quick:
        args.seeds, args.rounds, args.trees = 1, 3, 50
    out = args.out or (Path(tempfile.mkdtemp(prefix="unitrefine-active-")) if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    subjects = sorted(load_table(args.task).units["subject"].unique())
    if args.splits:
        subjects = [s for s in args.splits.split(",") if s]
    elif args.quick:
        subjects = subjects[:1]
    settings = [Setting(args.task, subj, seed, args.initial, args.batch, args.rounds, args.trees, args.decision)
                for subj in subjects for seed in range(args.seeds)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = pd.DataFrame([row for part in pool.map(simulate, settings) for row in part])
        ceilings = pd.DataFrame(list(pool.map(ceiling, [args.task] * len(subjects), subjects,
                                              [args.trees] * len(subjects), [0] * len(subjects),
                                              [args.decision] * len(subjects))))
    wall = time.perf_counter() - started
    stem = "active_learning" if args.task == "sua_vs_all" else f"active_learning_{args.task}"
    rows.to_csv(out / f"{stem}.csv", index=False)
    png = out / f"{stem}.png"
    plot(rows, ceilings, png)
    md = out / f"{stem}.md"
    write_markdown(md, png, args, rows, ceilings, wall, (load_before, os.getloadavg()[0]))
    return md


if __name__ == "__main__":
    print(main(sys.argv[1:]).read_text())
