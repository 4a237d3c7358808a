"""The model card (``README.md`` in the model folder, written with skops.card) and ``metadata.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from unitrefine.model.estimate import describe

_LIMITATIONS = (
    "The model scores the units of a recording from SpikeInterface quality and template metrics alone, one "
    "unit at a time. It was trained on the recordings listed above: probes, brain areas, sorters, metric "
    "versions or curation habits unlike them can lower its accuracy, so check a sample of its labels on any "
    "new kind of data. The held-out figures come from recordings the search never saw; the per-recording "
    "spread shows how much a single new recording may differ. Missing metrics are imputed, and a metric "
    "missing from a whole new recording is imputed for every unit of it."
)


def _how_to_use(folder_name: str, info: dict[str, Any]) -> str:
    trusted = ",\n    ".join(repr(t) for t in info["trusted_types"])
    return f"""Load it safely (only the reviewed types below are trusted) and label the units of a
`SortingAnalyzer` whose quality and template metrics are computed:

```python
from spikeinterface.curation import model_based_label_units

TRUSTED = [
    {trusted},
]
labels = model_based_label_units(analyzer, model_folder="{folder_name}", trusted=TRUSTED)
```

With unitrefine installed, `unitrefine.export.folder.load_model_folder(path)` loads it with the same list.
Required metrics (current SpikeInterface names): {", ".join(f"`{f}`" for f in info["features"])}."""


def _reproducibility(info: dict[str, Any]) -> str:
    search = info.get("search") or {}
    text = (f"Seed {info.get('seed')}; trials {search.get('trial_counts', '?')} of a budget of "
            f"{search.get('n_trials', '?')}, {search.get('n_jobs', '?')} side by side in a fixed order. "
            "`python -m unitrefine.recreate source=<this folder>` re-trains it from `config.yaml` and checks that "
            "the same model comes out.")
    if search.get("stopped_by_timeout"):
        text += (f" **The search stopped on its time cap** (`search.timeout_s={search.get('timeout_s')}`) before "
                 "its trial budget was used: how many trials ran, and so this model, depend on the machine's speed "
                 "and load, and re-training may give another model.")
    return text


# Over 60 lines: one section of the card after another, in the order a reader sees them; the code is 61 lines.
def write_model_card(
    folder: Path, model: Any, info: dict[str, Any], metadata: dict[str, Any], name: str | None = None
) -> Path:
    """Write ``README.md`` (a skops model card) and ``metadata.json`` into ``folder``.

    Parameters
    ----------
    folder : Path
        The model folder being written (its figures must already be there).
    model : estimator
        The exported pipeline.
    info : dict
        The folder's ``model_info.json`` content.
    metadata : dict
        The dataset's ``metadata`` (species, brain areas, probe, ...).
    name : str, optional
        The folder's name once in place (``folder`` may be a staging folder); default ``folder.name``.

    Returns
    -------
    Path
        The card's path.
    """
    from skops.card import Card

    (folder / "metadata.json").write_text(
        json.dumps({**metadata, "task": info["task"]["name"], "labels": info["task"]["classes"]}, indent=2) + "\n",
        encoding="utf-8",
    )
    task = info["task"]
    card = Card(model, template=None, model_diagram=False)
    card.add(**{
        "Model description": (
            f"A spike-sorting curation classifier for the task `{task['name']}`: classes "
            f"{', '.join(f'`{c}`' for c in task['classes'])} (curation labels mapped as {task['mapping']}). "
            "Trained and exported with unitrefine in SpikeInterface's model-folder format."
        ),
        "Training data": (
            f"{sum(info['trained_on']['class_counts'].values())} labelled units from recordings "
            f"{', '.join(info['trained_on']['recordings'])}; per class {info['trained_on']['class_counts']}. "
            f"Data fingerprint `{info['trained_on']['dataset_fingerprint'][:16]}`."
            + (f" Metadata: {json.dumps(metadata)}." if metadata else "")
        ),
    })
    configuration = info["best_configuration"]
    best = pd.DataFrame({"parameter": list(configuration), "value": [str(v) for v in configuration.values()]})
    card.add_table(**{"Best configuration": best})
    if info.get("ensemble"):
        card.add(**{"Ensemble": "Soft vote of trials (trial: weight) " + ", ".join(
            f"{m['trial']}: {m['weight']}" for m in info["ensemble"]) + ", chosen on out-of-fold predictions."})
    cv = info["cv"]
    card.add(**{"Evaluation": (
        f"Search: cross-validated {cv['scoring']} {cv['best_score']:.4f} over {cv['n_folds']} folds "
        f"({'grouped by ' + cv['grouped_by'] if cv['grouped_by'] else 'stratified by unit'})."
    )})
    estimate = info.get("estimate_new_recordings")
    if estimate:
        card.add(**{"Expected on new recordings": describe(estimate)})
    holdout = info.get("holdout")
    if holdout:
        card.add_metrics(
            description=(f"On the held-out recordings {', '.join(holdout['per_recording'])} "
                         f"({sum(m['n_units'] for m in holdout['per_recording'].values())} units), which the search "
                         "never saw: the model alone, fitted on the other recordings, no person's review."),
            balanced_accuracy=round(holdout["balanced_accuracy"], 4),
            **{f"{c} {k}": round(v, 4)
               for c, m in holdout["per_class"].items() for k, v in m.items() if k != "support"},
        )
        per = pd.DataFrame(
            [{"recording": r, "balanced accuracy": round(m["balanced_accuracy"], 4), "units": m["n_units"]}
             for r, m in holdout["per_recording"].items()]
        )
        card.add_table(**{"Held-out recordings": per})
    for figure, title in (
        ("per_recording.png", "Per recording"), ("confusion_matrix.png", "Confusion matrix"),
        ("roc_curve.png", "ROC curve"), ("pr_curve.png", "Precision-recall curve"),
        ("feature_importance.png", "Feature importance"), ("optimization_history.png", "Optimisation history"),
        ("param_importance.png", "Hyperparameter importance"),
    ):
        if (folder / figure).is_file():
            card.add_plot(**{f"Figures/{title}": figure})
    card.add(**{"Reproducibility": _reproducibility(info)})
    card.add(**{"How to use": _how_to_use(name or folder.name, info), "Limitations": _LIMITATIONS})
    path = folder / "README.md"
    card.save(path)
    return path
