"""What a person's review buys on a new animal: curated balanced accuracy by review budget and ranking.

    python benchmarks/review_budget.py [--tasks sua_vs_all,noise_vs_neural,three_class]
                                       [--splits mouse1,mouse2,mouse3,mouse4]

For each task and split (one whole mouse left out, as in ``vs_spikeinterface.py``) the task's experiment
searches once on the other mice, as a user runs it, and its exported model (best trial or ensemble, with its
threshold) is fitted on them. On the left-out mouse a person reviews a share of its units (0-30 %); their
labels (the curators') replace the model's on those units. Which units are reviewed is decided by a ranking:

* ``margin``: the model's uncertainty around its own decision (threshold-centred for binary models, top two
  classes for 3-class); what ``predict review=`` uses (:mod:`unitrefine.model.uncertainty`);
* ``weighted``: the same centred probabilities, as the expected balanced-accuracy gain of a review: the chance
  that the model's label is wrong, each other class weighted by one over the number of units the model gives
  it (an error in a rare class costs more balanced accuracy);
* ``disagreement``: the average KL divergence of a committee (the study's five best distinct trials, each
  fitted on the same mice) from its consensus;
* ``calibrated``: ``weighted`` on probabilities calibrated by isotonic regression on out-of-animal
  predictions (each training mouse predicted by a refit without it);
* ``conformal``: class-conditional conformal p-values calibrated on the same out-of-animal predictions; a
  unit is doubtful when a class other than the model's has a high p-value;
* ``random``: units drawn at random (the mean of 50 draws; of 2 where the model is retrained).

Each is scored three ways over the left-out mouse: the curated recording (reviewed units carry the person's
label, the rest the model's), the same after retraining the model on its training mice plus the reviewed units
(the rest relabelled by the retrained model; for ``margin``, ``calibrated`` and random review), and the model
alone on the units nobody reviewed (its own skill, not the person's). Per split the scores are cached as JSON
under ``benchmarks/results/review_budget/`` (delete one to re-measure); the tables go to
``benchmarks/results/review_budget.md``, the plot to ``benchmarks/results/review_budget.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import RESULTS, code_version, machine_line, write_result
from ensemble_size import searched_split
from vs_spikeinterface import EXPERIMENTS, split_recordings

from unitrefine.process import prepare_command_process

CELLS = RESULTS / "review_budget"
CACHE = Path(__file__).resolve().parent / ".cache" / "review_budget"  # raw predictions, not committed
BUDGETS = (0.0, 0.05, 0.10, 0.20, 0.30)
RANKINGS = ("margin", "weighted", "disagreement", "calibrated", "conformal", "random")
RETRAINED = ("margin", "calibrated")  # the rankings also measured with a retrained model (and random review)
COMMITTEE = 5
RANDOM_DRAWS, RANDOM_RETRAIN_DRAWS = 50, 2
TARGETS = {"sua_vs_all": (0.90, 2.0), "noise_vs_neural": (0.90, 2.0), "three_class": (0.83, 1.5)}


# ---------------------------------------------------------------- rankings (higher score: review sooner)
def centred(proba: np.ndarray, threshold: float | None) -> np.ndarray:
    """Class probabilities with a binary model's threshold moved to 0.5 (as ``predict review=`` ranks)."""
    from unitrefine.model.uncertainty import centre_on_threshold

    return centre_on_threshold(proba, threshold) if threshold is not None and proba.shape[1] == 2 else proba


def expected_gain(q: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Expected balanced-accuracy gain of reviewing each unit: ``sum_{c != predicted} q_c / n_c``, where ``n_c``
    is the number of units predicted as ``c`` (at least 1)."""
    counts = np.maximum(np.bincount(predicted, minlength=q.shape[1]), 1).astype(float)
    wrong = q.copy()
    wrong[np.arange(len(q)), predicted] = 0.0
    return (wrong / counts).sum(axis=1)


def committee_kl(members: list[np.ndarray]) -> np.ndarray:
    """Average KL divergence of each member's class probabilities from the committee's mean."""
    p = np.clip(np.stack(members), 1e-6, 1.0)
    mean = p.mean(axis=0)
    return (p * np.log(p / mean)).sum(axis=2).mean(axis=0)


def isotonic_calibrate(cal_proba: np.ndarray, cal_y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """One-vs-rest isotonic calibration fitted on (``cal_proba``, ``cal_y``), applied to ``proba``, renormalised."""
    from sklearn.isotonic import IsotonicRegression

    iso = [IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(cal_proba[:, c], cal_y == c)
           for c in range(proba.shape[1])]
    out = np.column_stack([f.predict(proba[:, c]) for c, f in enumerate(iso)])
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), 1.0 / proba.shape[1])


def conformal_doubt(cal_proba: np.ndarray, cal_y: np.ndarray, proba: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Largest class-conditional conformal p-value among the classes the model did not predict.

    Nonconformity of a unit for class ``c`` is ``1 - p_c``; its p-value for ``c`` is the share of calibration
    units of class ``c`` at least as nonconforming (with the usual +1).
    """
    pvals = np.zeros_like(proba)
    for c in range(proba.shape[1]):
        cal = np.sort(1.0 - cal_proba[cal_y == c, c])
        alpha = 1.0 - proba[:, c]
        pvals[:, c] = (len(cal) - np.searchsorted(cal, alpha, side="left") + 1) / (len(cal) + 1)
    pvals[np.arange(len(proba)), predicted] = -np.inf
    return pvals.max(axis=1)


def rankings(proba: np.ndarray, predicted: np.ndarray, threshold: float | None, cal_proba: np.ndarray,
             cal_y: np.ndarray, committee: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every deterministic ranking's score per unit of ``proba`` (the model's probabilities; its labels
    ``predicted``), calibrated on out-of-animal predictions ``cal_proba`` with true classes ``cal_y``."""
    from unitrefine.model.uncertainty import model_uncertainty

    cal_c, centred_p = centred(cal_proba, threshold), centred(proba, threshold)
    out = {
        "margin": model_uncertainty(proba, threshold),
        "weighted": expected_gain(centred_p, predicted),
        "calibrated": expected_gain(isotonic_calibrate(cal_c, cal_y, centred_p), predicted),
        "conformal": conformal_doubt(cal_c, cal_y, centred_p, predicted),
    }
    if committee is not None:
        out["disagreement"] = committee_kl([centred(m, threshold) for m in committee])
    return out


def printed_estimates(pred: dict[str, Any]) -> dict[str, Any]:
    """What the run's estimate would print per ranking: each training mouse scored curated by the refit without
    it, its ranking calibrated on the other training mice only; mean and 90 % prediction interval per budget."""
    from unitrefine.model.estimate import prediction_interval
    from unitrefine.model.uncertainty import curated_scores

    groups = pred["cal_groups"]
    per_group: dict[str, list[list[float]]] = {}
    for i, g in enumerate(groups):
        others = [o for j, o in enumerate(groups) if j != i]
        scores = rankings(g["proba"], g["predicted"], pred["threshold"], np.vstack([o["proba"] for o in others]),
                          np.concatenate([o["y"] for o in others]))
        for name, s in scores.items():
            per_group.setdefault(name, []).append(list(curated_scores(g["y"], g["predicted"], s, BUDGETS).values()))
    return {name: {"mean": np.mean(v, axis=0).tolist(),
                   "interval": [list(prediction_interval(col)) for col in np.asarray(v).T]}
            for name, v in per_group.items()}


# ---------------------------------------------------------------- measuring one split
def concat(a: Any, b: Any) -> Any:
    """Two UnitTables of the same classes, one after the other."""
    import pandas as pd

    from unitrefine.data.dataset import UnitTable

    assert a.classes == b.classes, (a.classes, b.classes)
    return UnitTable(pd.concat([a.X, b.X], ignore_index=True), np.concatenate([a.y, b.y]), a.classes,
                     pd.concat([a.units, b.units], ignore_index=True), a.metric_params)


def predictions(cfg: Any, searched: Any, final: Any, train: Any, held: Any) -> dict[str, Any]:
    """The exported model's, the committee's and the out-of-animal calibration predictions on ``held``."""
    from unitrefine.model.final_model import fit_spec
    from unitrefine.model.uncertainty import decision_threshold
    from unitrefine.progress import parallel_map

    specs, seen = [], set()
    for t in searched.ranked:
        spec = searched.space.spec_from_params(t.params)
        if repr(spec) not in seen:
            seen.add(repr(spec))
            specs.append(spec)
        if len(specs) == COMMITTEE:
            break
    subjects = sorted(train.units["subject"].unique())
    jobs: list[tuple[str, Any]] = [("final", None)] + [("member", s) for s in specs] + [("cal", s) for s in subjects]

    def fit(job: tuple[str, Any]) -> Any:
        kind, what = job
        if kind == "final":
            return final.fit(train)
        if kind == "member":
            return fit_spec(what, train, cfg.seed, cfg.search.unit_limits)
        inside = train.subset(np.flatnonzero(train.units["subject"].to_numpy() != what))
        outside = train.subset(np.flatnonzero(train.units["subject"].to_numpy() == what))
        model = final.fit(inside)
        return {"proba": model.predict_proba(outside.X), "y": outside.y,
                "predicted": np.searchsorted(model.classes_, model.predict(outside.X))}

    fitted = parallel_map(fit, jobs, cfg.search.n_jobs, "fits")
    model = fitted[0]
    cols = list(train.X.columns)
    cal = fitted[1 + len(specs):]
    return {
        "proba": model.predict_proba(held.X[cols]), "threshold": decision_threshold(model),
        "predicted": np.searchsorted(model.classes_, model.predict(held.X[cols])),
        "committee": [m.predict_proba(held.X[cols]) for m in fitted[1:1 + len(specs)]],
        "cal_groups": cal, "cal_proba": np.vstack([g["proba"] for g in cal]),
        "cal_y": np.concatenate([g["y"] for g in cal]),
    }


def scores_for(held: Any, predicted: np.ndarray, order: np.ndarray, budgets: tuple[float, ...],
               retrain: Any | None) -> dict[str, list[float | None]]:
    """Curated, retrained-curated and model-alone balanced accuracy for reviewing ``order``'s first units."""
    from sklearn.metrics import balanced_accuracy_score

    from unitrefine.model.uncertainty import review_count

    out: dict[str, list[float | None]] = {"curated": [], "retrained": [], "model_unreviewed": []}
    for b in budgets:
        k = review_count(b, len(held))
        reviewed = order[:k]
        rest = np.setdiff1d(np.arange(len(held)), reviewed)
        curated = predicted.copy()
        curated[reviewed] = held.y[reviewed]
        out["curated"].append(float(balanced_accuracy_score(held.y, curated)))
        out["model_unreviewed"].append(float(balanced_accuracy_score(held.y[rest], predicted[rest]))
                                       if len(np.unique(held.y[rest])) > 1 else None)
        if retrain is None or k == 0:
            out["retrained"].append(out["curated"][-1] if k == 0 else None)
        else:
            out["retrained"].append(float(balanced_accuracy_score(held.y, retrain(reviewed, curated))))
    return out


def measure_split(task: str, split: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Search without ``split``'s mouse; score every ranking's review of it at every budget."""
    from unitrefine.run import stages

    holdout = split_recordings(split)
    load = os.getloadavg()[0]
    with searched_split(task, holdout, "unitrefine-review-budget-", extra) as run:
        cfg, data, held, search_s = run.cfg, run.data, run.held, run.search_s
        final = stages.choose(cfg, run.searched, data)
        assert held.classes == data.table.classes, (held.classes, data.table.classes)
        pred = predictions(cfg, run.searched, final, data.table, held)
    save_cache(task, split, pred, held.y)
    results = score_rankings(cfg, final, data.table, held, pred)
    return {"task": task, "split": split, "holdout": holdout, "n_units": len(held), "budgets": list(BUDGETS),
            "ensemble_members": len(final.weights), "threshold": pred["threshold"], "committee": len(pred["committee"]),
            "calibration_units": len(pred["cal_y"]), "search_s": search_s, "overrides": list(extra),
            "results": results, "printed": printed_estimates(pred), "date": str(dt.date.today()),
            "code": code_version(),
            "load_average": f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores"}


def save_cache(task: str, split: str, pred: dict[str, Any], y: np.ndarray) -> None:
    """Keep the split's raw predictions (``benchmarks/.cache``, git-ignored) to try other rankings without a search."""
    CACHE.mkdir(parents=True, exist_ok=True)
    groups = {f"cal{i}_{k}": g[k] for i, g in enumerate(pred["cal_groups"]) for k in ("proba", "y", "predicted")}
    np.savez_compressed(CACHE / f"{task}_{split}.npz", proba=pred["proba"], predicted=pred["predicted"], y=y,
                        committee=np.stack(pred["committee"]), threshold=np.nan if pred["threshold"] is None
                        else pred["threshold"], **groups)


def score_rankings(cfg: Any, final: Any, train: Any, held: Any, pred: dict[str, Any]) -> dict[str, Any]:
    """Every ranking's scores per budget (:func:`scores_for`); random review averaged over its draws."""
    from unitrefine.model.uncertainty import review_order
    from unitrefine.progress import parallel_map

    predicted, cols = pred["predicted"], list(train.X.columns)

    def retrain_with(reviewed: np.ndarray, curated: np.ndarray) -> np.ndarray:
        model = final.fit(concat(train, held.subset(reviewed)))
        out = curated.copy()
        rest = np.setdiff1d(np.arange(len(held)), reviewed)
        out[rest] = np.searchsorted(model.classes_, model.predict(held.X[cols].iloc[rest]))
        return out

    scores = rankings(pred["proba"], predicted, pred["threshold"], pred["cal_proba"], pred["cal_y"], pred["committee"])
    orders = {name: review_order(scores[name]) for name in RANKINGS[:-1]}
    rng = np.random.default_rng(cfg.seed)
    draws = [rng.permutation(len(held)) for _ in range(RANDOM_DRAWS)]
    jobs = [(order, name in RETRAINED) for name, order in orders.items()]
    jobs += [(d, True) for d in draws[:RANDOM_RETRAIN_DRAWS]]
    done = parallel_map(lambda job: scores_for(held, predicted, job[0], BUDGETS, retrain_with if job[1] else None),
                        jobs, cfg.search.n_jobs, "rankings", unit="ranking")
    results: dict[str, Any] = dict(zip(orders, done))
    rand = [scores_for(held, predicted, d, BUDGETS, None) for d in draws]
    results["random"] = {
        "curated": np.mean([r["curated"] for r in rand], axis=0).tolist(),
        "model_unreviewed": np.mean([r["model_unreviewed"] for r in rand], axis=0).tolist(),
        "retrained": np.mean([r["retrained"] for r in done[len(orders):]], axis=0).tolist(),
    }
    return results


# ---------------------------------------------------------------- tables and plot
def cells_of(task: str) -> list[dict[str, Any]]:
    """The cached splits of ``task``, in split order."""
    return [json.loads(p.read_text()) for p in sorted(CELLS.glob(f"{task}_mouse*.json"))]


def mean_curve(cells: list[dict[str, Any]], ranking: str, kind: str) -> list[float | None]:
    """Mean over the splits of one ranking's scores per budget (None where a split has none)."""
    rows = [c["results"][ranking][kind] for c in cells]
    return [None if any(r[i] is None for r in rows) else float(np.mean([r[i] for r in rows]))
            for i in range(len(rows[0]))]


def fmt(v: float | None) -> str:
    """Three decimals, or a dash."""
    return "—" if v is None else f"{v:.3f}"


def task_table(task: str) -> str:
    """Markdown: the mean curves of every ranking, the per-mouse curated scores, and the targets."""
    cells = cells_of(task)
    if not cells:
        return f"## {task}\n\nNo cached splits.\n"
    budgets = cells[0]["budgets"]
    head = "| ranking | " + " | ".join(f"{b:.0%}" for b in budgets) + " |\n|---|" + "---|" * len(budgets)
    parts = [f"## {task} (`+experiment={EXPERIMENTS[task]}`), mean over {len(cells)} left-out mice "
             f"({', '.join(c['split'] for c in cells)})", ""]
    for kind, title in (("curated", "Curated recording (reviewed units: the person's label; the rest: the model's)"),
                        ("retrained", "Curated recording, the model retrained on its mice plus the reviewed units"),
                        ("model_unreviewed", "The model alone, on the units nobody reviewed")):
        parts += [f"**{title}.**", "", head]
        parts += [f"| {r} | " + " | ".join(fmt(v) for v in mean_curve(cells, r, kind)) + " |" for r in RANKINGS]
        parts.append("")
    i10 = budgets.index(0.10)
    base = mean_curve(cells, "margin", "curated")[0]
    rand_gain = mean_curve(cells, "random", "curated")[i10] - base
    target, ratio = TARGETS[task]
    lines = []
    for r in RANKINGS[:-1]:
        at10 = mean_curve(cells, r, "curated")[i10]
        gain = at10 - base
        lines.append(f"- {r}: {at10:.3f} at 10 % (target {target:.2f}: {'met' if at10 >= target else 'not met'}); "
                     f"gain {gain:+.3f} = {gain / rand_gain:.1f}x random review's {rand_gain:+.3f} "
                     f"(target {ratio:g}x: {'met' if gain >= ratio * rand_gain else 'not met'})")
    parts += ["**At a 10 % review budget** (gain over the model alone, " f"{base:.3f}):", "", *lines, ""]
    parts += estimate_table(cells)
    parts += ["**Per mouse, curated at 10 %:**", "", "| ranking | " + " | ".join(
        f"{c['split']} ({c['n_units']} units)" for c in cells) + " |", "|---|" + "---|" * len(cells)]
    parts += [f"| {r} | " + " | ".join(fmt(c["results"][r]["curated"][i10]) for c in cells) + " |" for r in RANKINGS]
    parts.append("")
    parts += ["Search per split (wall s, load): " + "; ".join(
        f"{c['split']} {c['search_s']:.0f} s ({c['load_average']}, code {c['code']})" for c in cells), ""]
    return "\n".join(parts)


def estimate_table(cells: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: per ranking and budget, the printed estimate against the left-out mouse's curated score."""
    budgets = cells[0]["budgets"]
    lines = ["**The run's printed estimate against the left-out mouse** (printed: what the run's estimate prints, "
             "the mean over the training mice, each curated by the refit without it; `calibrated` and `conformal` "
             "calibrated on the other training mice only; error: printed minus actual, mean over the splits; inside: "
             "the actual score within the printed 90 % interval; `margin` is the product's ranking):", "",
             "| ranking | review | actual | printed | mean error | inside |", "|---|---|---|---|---|---|"]
    for r in ("margin", "calibrated", "conformal"):
        for i, b in enumerate(budgets):
            actual = [c["results"][r]["curated"][i] for c in cells]
            printed = [c["printed"][r]["mean"][i] for c in cells]
            inside = sum(lo <= a <= hi for a, (lo, hi) in zip(actual, (c["printed"][r]["interval"][i] for c in cells)))
            lines.append(f"| {r} | {b:.0%} | {np.mean(actual):.3f} | {np.mean(printed):.3f} | "
                         f"{np.mean(printed) - np.mean(actual):+.3f} | {inside} of {len(cells)} |")
    return [*lines, ""]


def overall_estimate(tasks: list[str], ranking: str = "margin") -> str:
    """Markdown: the printed estimate against the left-out mouse over every cached cell of ``tasks``."""
    cells = [c for t in tasks for c in cells_of(t)]
    if not cells:
        return ""
    lines = [f"## The printed estimate over all {len(cells)} cells (`{ranking}`, the product's ranking)", "",
             "| review | mean error (printed - actual) | mean absolute error | inside the printed 90 % interval |",
             "|---|---|---|---|"]
    for i, b in enumerate(cells[0]["budgets"]):
        errors = [c["printed"][ranking]["mean"][i] - c["results"][ranking]["curated"][i] for c in cells]
        inside = sum(lo <= c["results"][ranking]["curated"][i] <= hi
                     for c in cells for lo, hi in [c["printed"][ranking]["interval"][i]])
        lines.append(f"| {b:.0%} | {np.mean(errors):+.3f} | {np.mean(np.abs(errors)):.3f} | {inside} of {len(cells)} |")
    return "\n".join([*lines, ""])


def plot(tasks: list[str], path: Path) -> None:
    """One panel per task: mean curated balanced accuracy by budget, every ranking; dashed: retrained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        cells = cells_of(task)
        if not cells:
            continue
        budgets = [100 * b for b in cells[0]["budgets"]]
        for r in RANKINGS:
            line, = ax.plot(budgets, mean_curve(cells, r, "curated"), marker="o", label=r)
            if r in ("margin", "random"):
                ax.plot(budgets, mean_curve(cells, r, "retrained"), ls="--", color=line.get_color(),
                        label=f"{r}, retrained")
        ax.set(title=f"{task} ({len(cells)} left-out mice)", xlabel="units reviewed (% of the mouse)",
               ylabel="curated balanced accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Measure the missing splits, then write the tables and the plot."""
    prepare_command_process()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(EXPERIMENTS))
    parser.add_argument("--splits", default="mouse1,mouse2,mouse3,mouse4")
    parser.add_argument("--cells", type=Path, default=CELLS, help="where the per-split JSON go")
    parser.add_argument("--override", action="append", default=[],
                        help="extra training override, e.g. search.n_trials=4 to try the script (use another --cells)")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    args.cells.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        for split in args.splits.split(","):
            path = args.cells / f"{task}_{split}.json"
            if not path.exists():
                cell = measure_split(task, split, tuple(args.override))
                path.write_text(json.dumps(cell, indent=1) + "\n", encoding="utf-8")
    if args.cells != CELLS:
        return
    header = ("# What a person's review buys: curated balanced accuracy on a left-out mouse\n\n" + machine_line()
              + "\nRegenerate with `python benchmarks/review_budget.py` (see its docstring for the rankings). Every "
              "score is balanced accuracy over the left-out mouse's units, scored against its curators' labels.\n\n")
    plot(tasks, RESULTS / "review_budget.png")
    body = "\n".join(task_table(t) for t in tasks) + "\n" + overall_estimate(tasks)
    print(write_result("review_budget", header + body))


if __name__ == "__main__":
    main()
