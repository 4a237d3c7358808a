"""Which ideas help on a new animal: each candidate improvement measured leaving one whole mouse out.

    python benchmarks/candidates.py [--tasks sua_vs_all,noise_vs_neural,three_class] [--quick]

For every task and every mouse of the 9 shipped ``mouse_v1`` recordings (4 splits), a fixed pipeline is trained on
the other mice and scored (balanced accuracy) on the left-out mouse, with and without each candidate of issue 8:

- population-relative features (per recording: percentile rank, robust z-score), added to or replacing the raw
  metrics;
- missing-value indicators (one column per metric that had NaNs in training: a metric absent from a whole
  recording becomes a feature of its own);
- a soft-voting ensemble of three different families (random forest, XGBoost, logistic regression on
  quantile-scaled metrics), as the search's ensemble step builds from its best trials;
- a decision threshold tuned on out-of-fold predictions of held-out *recordings* (binary tasks).

Fixed pipelines rather than full searches keep the 4 x 3 x 8 configurations to minutes and isolate each idea; they are
the configurations the mouse_v1 search keeps choosing. Writes ``benchmarks/results/candidates.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold, cross_val_predict

from unitrefine.config import compose_config, validate_config
from unitrefine.data.dataset import UnitTable
from unitrefine.data.loading import load_dataset
from unitrefine.model.threshold import tune_threshold
from unitrefine.search.pipeline import build_pipeline
from unitrefine.search.search_space import Choice

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("sua_vs_all", "noise_vs_neural", "three_class")
SEED = 0


def spec(imputer: str, scaler: str, classifier: str, **params: object) -> dict[str, Choice]:
    """A pipeline spec in unitrefine's own terms (components from its allowlist)."""
    return {"imputer": Choice(imputer, {}), "scaler": Choice(scaler, {}), "resampler": Choice("none", {}),
            "classifier": Choice(classifier, dict(params))}


def forest(n_trees: int) -> dict[str, Choice]:
    """The random forest the search most often ranks first on this data."""
    return spec("median", "none", "random_forest", n_estimators=n_trees, max_depth=None, min_samples_leaf=3,
                max_features="sqrt", class_weight="balanced_subsample")


def family_members(n_trees: int) -> list[dict[str, Choice]]:
    """Three different families for the soft vote."""
    return [forest(n_trees),
            spec("median", "none", "xgboost", n_estimators=n_trees, max_depth=4, learning_rate=0.05, subsample=0.8,
                 colsample_bytree=0.7, min_child_weight=2.0, reg_lambda=1.0),
            spec("median", "quantile", "logistic_regression", C=1.0)]


def population_features(X: pd.DataFrame, recordings: np.ndarray, how: str) -> pd.DataFrame:
    """Each metric relative to the other units of the same recording: percentile rank and robust z-score.

    A metric constant within a recording has no robust z-score there (NaN, imputed downstream).
    """
    groups = X.groupby(recordings)
    rank = groups.rank(pct=True).add_suffix("_rank")
    med = groups.transform("median")
    iqr = groups.transform(lambda c: c.quantile(0.75) - c.quantile(0.25)).replace(0, np.nan)
    robust = ((X - med) / iqr).add_suffix("_robust_z")
    relative = pd.concat([rank, robust], axis=1).astype("float32")
    return relative if how == "replace" else pd.concat([X, relative], axis=1)


def fit_proba(specs: list[dict[str, Choice]], X: pd.DataFrame, y: np.ndarray, X_test: pd.DataFrame,
              indicators: bool = False) -> np.ndarray:
    """Mean predicted probabilities of the pipelines in ``specs`` (one: a single model; several: a soft vote)."""
    probas = []
    for s in specs:
        pipe = build_pipeline(s, SEED)
        if indicators:
            pipe.set_params(imputer__add_indicator=True)
        probas.append(pipe.fit(X, y).predict_proba(X_test))
    return np.mean(probas, axis=0)


def tuned_threshold(specs: list[dict[str, Choice]], X: pd.DataFrame, y: np.ndarray, recordings: np.ndarray) -> float:
    """The balanced-accuracy threshold on out-of-fold predictions, each fold a group of whole recordings."""
    cv = GroupKFold(n_splits=min(5, len(set(recordings))))
    oof = np.mean([cross_val_predict(build_pipeline(s, SEED), X, y, groups=recordings, cv=cv,
                                     method="predict_proba")[:, 1] for s in specs], axis=0)
    return tune_threshold(y, oof, "balanced_accuracy", 0.9).value


Variant = Callable[[UnitTable, np.ndarray, np.ndarray, int], np.ndarray]


def variants(binary: bool) -> dict[str, Variant]:
    """Each candidate as a function (table, train mask, test mask, n_trees) -> predicted class codes."""
    def rec(t: UnitTable) -> np.ndarray:
        return t.units["recording"].to_numpy()

    def base(t: UnitTable, tr: np.ndarray, te: np.ndarray, n: int) -> np.ndarray:
        return fit_proba([forest(n)], t.X[tr], t.y[tr], t.X[te]).argmax(1)

    def population(how: str) -> Variant:
        def run(t: UnitTable, tr: np.ndarray, te: np.ndarray, n: int) -> np.ndarray:
            X = population_features(t.X, rec(t), how)
            with warnings.catch_warnings():  # columns without any value in training (constant metrics) are dropped
                warnings.filterwarnings("ignore", message="Skipping features without any observed values")
                return fit_proba([forest(n)], X[tr], t.y[tr], X[te]).argmax(1)
        return run

    def indicators(t: UnitTable, tr: np.ndarray, te: np.ndarray, n: int) -> np.ndarray:
        return fit_proba([forest(n)], t.X[tr], t.y[tr], t.X[te], indicators=True).argmax(1)

    def vote(t: UnitTable, tr: np.ndarray, te: np.ndarray, n: int) -> np.ndarray:
        return fit_proba(family_members(n), t.X[tr], t.y[tr], t.X[te]).argmax(1)

    def threshold(members: Callable[[int], list[dict[str, Choice]]]) -> Variant:
        def run(t: UnitTable, tr: np.ndarray, te: np.ndarray, n: int) -> np.ndarray:
            cut = tuned_threshold(members(n), t.X[tr], t.y[tr], rec(t)[tr])
            return (fit_proba(members(n), t.X[tr], t.y[tr], t.X[te])[:, 1] >= cut).astype(int)
        return run

    out: dict[str, Variant] = {
        "baseline: random forest": base,
        "+ population-relative features (added)": population("add"),
        "population-relative features (replacing raw)": population("replace"),
        "+ missing indicators": indicators,
        "soft vote of RF + XGBoost + LR": vote,
    }
    if binary:
        out["+ threshold tuned on out-of-fold recordings"] = threshold(lambda n: [forest(n)])
        out["soft vote + tuned threshold"] = threshold(family_members)
    return out


def run_task(task: str, n_trees: int) -> pd.DataFrame:
    """Balanced accuracy of every variant on every left-out mouse of one task."""
    cfg = validate_config(compose_config(["+experiment=mouse_v1", f"task={task}", "threshold.tune=false"]))
    table = load_dataset(cfg.dataset, cfg.task, cfg.root_dir)
    subjects = table.units["subject"].to_numpy()
    rows = []
    for name, fn in variants(len(table.classes) == 2).items():
        for mouse in sorted(set(subjects)):
            te = subjects == mouse
            pred = fn(table, ~te, te, n_trees)
            rows.append({"task": task, "variant": name, "left_out": mouse,
                         "balanced_accuracy": balanced_accuracy_score(table.y[te], pred)})
    return pd.DataFrame(rows)


def markdown(scores: pd.DataFrame, n_trees: int) -> str:
    """Per task: mean over left-out mice, the change against the baseline, and each mouse."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = ["# Candidate improvements, leaving one whole mouse out", "",
             (f"{dt.date.today()}; {os.cpu_count()} cores, {mem:.0f} GiB; random forest of {n_trees} trees; "
              "balanced accuracy on the left-out mouse (4 splits). Regenerate: `python benchmarks/candidates.py`."), ""]
    for task, part in scores.groupby("task", sort=False):
        wide = part.pivot(index="variant", columns="left_out", values="balanced_accuracy")
        wide = wide.loc[list(dict.fromkeys(part["variant"]))]
        mean = wide.mean(axis=1)
        delta = mean - mean.iloc[0]
        lines += [f"## {task}", "", "| variant | mean | change | " + " | ".join(wide.columns) + " |",
                  "|---|---|---|" + "---|" * len(wide.columns)]
        for v in wide.index:
            lines.append(f"| {v} | {mean[v]:.3f} | {delta[v]:+.3f} | "
                         + " | ".join(f"{x:.3f}" for x in wide.loc[v]) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Run the tasks and write the markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--quick", action="store_true", help="50 trees instead of 300: a check that it runs")
    args = parser.parse_args()
    n_trees = 50 if args.quick else 300
    parts = []
    for task in args.tasks.split(","):
        parts.append(run_task(task, n_trees))
        print(markdown(parts[-1], n_trees), flush=True)
    scores = pd.concat(parts, ignore_index=True)
    text = markdown(scores, n_trees)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "candidates.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
