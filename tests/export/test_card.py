"""The model card (:func:`unitrefine.export.card.write_model_card`), written directly from a small ``model_info``
record: every figure on it says what it was measured on (which recordings and units, which folds, which held-out
recordings). The card of a real training run (figures, the estimate, the trusted types, the time cap) is checked
in tests/run/test_training.py and tests/run/test_stages.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from unitrefine.export.card import write_model_card
from unitrefine.export.folder import MODEL_FILE, load_model_folder


def section(card: str, title: str) -> str:
    """The text of the card's section ``title`` (a Markdown heading of any level), up to the next heading."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", card, flags=re.M | re.S)
    assert match is not None, f"no section {title!r} in the card"
    return match.group(1).strip()


def tiny_model() -> LogisticRegression:
    return LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])


def tiny_info(**changes: Any) -> dict[str, Any]:
    """The model_info.json keys the card reads, for a binary model held out on recC and recD."""
    info: dict[str, Any] = {
        "task": {"name": "sua_vs_all", "classes": ["other", "good"],
                 "mapping": {"good": "good", "mua": "other", "noise": "other"}},
        "features": ["snr", "firing_rate"],
        "trained_on": {"recordings": ["recA", "recB"], "class_counts": {"other": 18, "good": 12},
                       "dataset_fingerprint": "0123456789abcdef" + "f" * 48},
        "best_configuration": {"imputer": "median", "classifier": "logistic_regression", "logistic_regression.C": 0.5},
        "ensemble": [{"trial": 3, "weight": 0.75}, {"trial": 7, "weight": 0.25}],
        "cv": {"scoring": "balanced_accuracy", "best_score": 0.81234, "n_folds": 4, "grouped_by": "subject"},
        "estimate_new_recordings": None,
        "holdout": {
            "balanced_accuracy": 0.755555,
            "per_class": {"good": {"precision": 0.8, "recall": 0.66666, "support": 6},
                          "other": {"precision": 0.7, "recall": 0.84444, "support": 9}},
            "per_recording": {"recC": {"balanced_accuracy": 0.71111, "n_units": 10},
                              "recD": {"balanced_accuracy": 0.8, "n_units": 5}},
        },
        "seed": 7,
        "search": {"n_trials": 20, "n_jobs": 2, "trial_counts": {"complete": 20}, "stopped_by_timeout": False,
                   "timeout_s": None},
        "trusted_types": ["numpy.dtype"],
    }
    info.update(changes)
    return info


def test_the_card_says_what_each_score_was_measured_on(tmp_path: Path) -> None:
    (tmp_path / "confusion_matrix.png").write_bytes(b"\x89PNG not drawn here")
    path = write_model_card(tmp_path, tiny_model(), tiny_info(), {"species": "mouse"})
    assert path == tmp_path / "README.md"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "confusion_matrix.png", "metadata.json"]
    card = path.read_text()
    assert section(card, "Training data") == (
        "30 labelled units from recordings recA, recB; per class {'other': 18, 'good': 12}. Data fingerprint "
        '`0123456789abcdef`. Metadata: {"species": "mouse"}.')
    assert section(card, "Evaluation") == (
        "Search: cross-validated balanced_accuracy 0.8123 over 4 folds (grouped by subject).")
    held_out = section(card, "Evaluation Results")
    assert held_out.startswith("On the held-out recordings recC, recD (15 units), which the search never saw: the "
                               "model alone, fitted on the other recordings, no person's review.")
    rows = {cells[0]: cells[1] for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in held_out.splitlines()[4:])}
    assert rows == {"balanced_accuracy": "0.7556", "good precision": "0.8", "good recall": "0.6667",
                    "other precision": "0.7", "other recall": "0.8444"}  # support is not a score
    recordings = [[c.strip() for c in line.strip("|").split("|")]
                  for line in section(card, "Held-out recordings").splitlines()[2:]]
    assert recordings == [["recC", "0.7111", "10"], ["recD", "0.8", "5"]]
    assert section(card, "Ensemble") == ("Soft vote of trials (trial: weight) 3: 0.75, 7: 0.25, chosen on "
                                         "out-of-fold predictions.")
    assert section(card, "Confusion matrix") == "![Confusion matrix](confusion_matrix.png)"
    assert "roc_curve.png" not in card and "Expected on new recordings" not in card  # absent: not mentioned
    assert section(card, "Reproducibility").startswith("Seed 7; trials {'complete': 20} of a budget of 20, 2 side "
                                                       "by side in a fixed order.")
    assert json.loads((tmp_path / "metadata.json").read_text()) == {"species": "mouse", "task": "sua_vs_all",
                                                                    "labels": ["other", "good"]}


def test_without_holdout_groups_ensemble_or_metadata_the_card_says_so(tmp_path: Path) -> None:
    info = tiny_info(holdout=None, ensemble=None, cv={"scoring": "f1_macro", "best_score": 0.5, "n_folds": 3,
                                                      "grouped_by": None})
    card = write_model_card(tmp_path, tiny_model(), info, {}).read_text()
    assert section(card, "Evaluation") == "Search: cross-validated f1_macro 0.5000 over 3 folds (stratified by unit)."
    assert section(card, "Training data").endswith("Data fingerprint `0123456789abcdef`.")  # no metadata sentence
    for absent in ("Evaluation Results", "Held-out recordings", "Ensemble", "Figures"):
        assert f"# {absent}\n" not in card
    assert json.loads((tmp_path / "metadata.json").read_text()) == {"task": "sua_vs_all", "labels": ["other", "good"]}


def test_how_to_use_names_the_model_folder(tmp_path: Path) -> None:
    staging = tmp_path / ".staging-123"
    staging.mkdir()
    card = write_model_card(staging, tiny_model(), tiny_info(), {}, name="sua_model").read_text()
    assert 'model_based_label_units(analyzer, model_folder="sua_model", trusted=TRUSTED)' in section(card, "How to use")


def test_a_trained_folders_card_is_written_again_identically(tmp_path: Path, synthetic_models: dict[str, Path]) -> None:
    """The card is a function of model_info.json (and the dataset metadata): written again from a copy of a trained
    folder, it is the card training wrote, byte for byte."""
    folder = shutil.copytree(synthetic_models["three_class"], tmp_path / "three_class")
    original = (folder / "README.md").read_bytes()
    model, info = load_model_folder(folder / MODEL_FILE)
    metadata = {k: v for k, v in json.loads((folder / "metadata.json").read_text()).items()
                if k not in ("task", "labels")}
    write_model_card(folder, model, info, metadata)
    assert (folder / "README.md").read_bytes() == original
    assert section(original.decode(), "Training data").startswith(
        f"{sum(info['trained_on']['class_counts'].values())} labelled units from recordings "
        f"{', '.join(info['trained_on']['recordings'])};")
