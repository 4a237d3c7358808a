"""Honest splits and scores: held-out recordings, grouped stratified CV, held-out reports."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, get_scorer, precision_recall_fscore_support
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from unitrefine.config import CVConfig
from unitrefine.data.dataset import UnitTable
from unitrefine.errors import UnitRefineError

log = logging.getLogger(__name__)

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Plan:
    """Where every unit goes: the outer train/held-out split and the inner CV folds of the train part.

    Attributes
    ----------
    train_index, holdout_index : numpy.ndarray
        Positions in the full table.
    folds : list of (train, validation) position arrays
        Positions within the *train part*.
    grouped_by : str or None
        The column the folds are grouped by, or None when they are stratified by unit.
    """

    train_index: np.ndarray
    holdout_index: np.ndarray
    folds: list[Split]
    grouped_by: str | None

    def assignment(self, table: UnitTable) -> pd.DataFrame:
        """One row per unit: its recording, unit id, ``split`` (train/holdout) and CV ``fold`` (-1 if none)."""
        out = table.units[["recording", "unit_id"]].copy()
        out["split"] = "train"
        out.loc[self.holdout_index, "split"] = "holdout"
        fold = np.full(len(table), -1)
        for k, (_, val) in enumerate(self.folds):
            fold[self.train_index[val]] = k
        out["fold"] = fold
        return out


def choose_holdout(table: UnitTable, cv: CVConfig, seed: int) -> list[str]:
    """Recordings kept out of the search: the configured ones, or ``n_holdout_recordings`` drawn with ``seed``.

    A random draw is repeated (with the next seeds) until both sides hold every class.
    """
    recordings = list(dict.fromkeys(table.units["recording"]))
    if cv.holdout_recordings:
        unknown = sorted(set(cv.holdout_recordings) - set(recordings))
        if unknown:
            raise UnitRefineError(
                f"cv.holdout_recordings names {unknown}, which are not recordings of the dataset {recordings}."
            )
        return list(cv.holdout_recordings)
    n = cv.n_holdout_recordings
    if n == 0:
        return []
    if n >= len(recordings):
        raise UnitRefineError(
            f"cv.n_holdout_recordings={n} leaves no recording to train on ({len(recordings)} recordings). Lower it."
        )
    n_classes = len(table.classes)
    for attempt in range(100):
        chosen = sorted(np.random.default_rng(seed + attempt).choice(recordings, size=n, replace=False).tolist())
        held = table.units["recording"].isin(chosen).to_numpy()
        if len(np.unique(table.y[held])) == n_classes and len(np.unique(table.y[~held])) == n_classes:
            return chosen
    raise UnitRefineError(
        f"Could not draw {n} held-out recordings that leave every class on both sides; list them in "
        "cv.holdout_recordings."
    )


def make_folds(table: UnitTable, cv: CVConfig, seed: int) -> tuple[list[Split], str | None]:
    """CV folds over all units of ``table``, and the column they are grouped by (None: by unit).

    Folds are ``StratifiedGroupKFold`` over ``cv.group_by`` when there are at least ``cv.n_splits`` groups,
    otherwise (with a warning) ``StratifiedKFold`` over units.

    Raises
    ------
    UnitRefineError
        If a class has fewer units than folds, or a training fold would miss a class.
    """
    y = table.y
    counts = np.bincount(y, minlength=len(table.classes))
    if counts.min() < cv.n_splits:
        small = {table.classes[i]: int(c) for i, c in enumerate(counts) if c < cv.n_splits}
        raise UnitRefineError(
            f"Classes {small} have fewer training units than cv.n_splits={cv.n_splits}. "
            "Label more units of these classes or lower cv.n_splits."
        )
    grouped_by = cv.group_by
    groups = table.groups(grouped_by)
    if groups is not None and len(np.unique(groups)) < cv.n_splits:
        log.warning(
            "Only %d %ss to train on, fewer than cv.n_splits=%d: folds are stratified by unit instead of grouped "
            "by %s, so the CV score is optimistic for new %ss.",
            len(np.unique(groups)), grouped_by, cv.n_splits, grouped_by, grouped_by,
        )
        grouped_by = groups = None
    if groups is None:
        folds = list(StratifiedKFold(n_splits=cv.n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    else:
        splitter = StratifiedGroupKFold(n_splits=cv.n_splits, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros(len(y)), y, groups))
    for k, (tr, _) in enumerate(folds):
        missing = set(range(len(table.classes))) - set(np.unique(y[tr]).tolist())
        if missing:
            raise UnitRefineError(
                f"CV fold {k} would train without class {[table.classes[i] for i in sorted(missing)]}: too few "
                f"{grouped_by}s hold it. Lower cv.n_splits or set cv.group_by=null."
            )
    return folds, grouped_by


def make_plan(table: UnitTable, cv: CVConfig, seed: int) -> Plan:
    """Split the table into train/held-out recordings and the train part into CV folds (:func:`make_folds`)."""
    holdout = choose_holdout(table, cv, seed)
    held = table.units["recording"].isin(holdout).to_numpy()
    train_index, holdout_index = np.flatnonzero(~held), np.flatnonzero(held)
    folds, grouped_by = make_folds(table.subset(train_index), cv, seed)
    log.info(
        "Split: %d training units (%s), %d held-out units (%s); %d folds %s.",
        len(train_index),
        "all recordings" if not holdout else f"{table.units['recording'].nunique() - len(holdout)} recordings",
        len(holdout_index), holdout or "none", len(folds),
        f"grouped by {grouped_by}" if grouped_by else "stratified by unit",
    )
    return Plan(train_index, holdout_index, folds, grouped_by)


def scorer(name: str):  # noqa: ANN201  (sklearn's scorer type is private)
    """The scikit-learn scorer called ``name`` (e.g. ``balanced_accuracy``, ``f1_macro``, ``roc_auc``)."""
    try:
        return get_scorer(name)
    except ValueError:
        raise UnitRefineError(
            f"cv.scoring '{name}' is not a scikit-learn scorer name (e.g. balanced_accuracy)."
        ) from None


def holdout_report(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...], recordings: np.ndarray) -> dict:
    """Held-out scores: balanced accuracy overall and per recording, per-class precision/recall/F1, confusion matrix.

    Returns
    -------
    dict
        ``balanced_accuracy``, ``per_class`` (class -> precision/recall/f1/support), ``confusion_matrix``
        (rows = true class), ``per_recording`` (recording -> balanced accuracy and unit count).
    """
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_recording = {}
    for rec in dict.fromkeys(recordings):
        mask = recordings == rec
        per_recording[str(rec)] = {
            "balanced_accuracy": float(balanced_accuracy(y_true[mask], y_pred[mask])),
            "n_units": int(mask.sum()),
        }
    return {
        "balanced_accuracy": float(balanced_accuracy(y_true, y_pred)),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "per_recording": per_recording,
    }


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Balanced accuracy over the classes present in ``y_true`` (no warning when a recording lacks one).

    Equal to scikit-learn's ``balanced_accuracy_score`` whenever ``y_pred`` has no class absent from ``y_true``.
    """
    present = np.unique(y_true)
    recalls = [np.mean(y_pred[y_true == c] == c) for c in present]
    return float(np.mean(recalls))
