"""Load per-unit metrics and curation labels into one validated table.

CSV mode reads each recording here (:mod:`unitrefine.data.recordings`: metrics tables, :mod:`unitrefine.data.tables`,
or SpikeInterface export folders, :mod:`unitrefine.data.si_export`); analyzer mode
(:mod:`unitrefine.data.analyzer_data`) reads SortingAnalyzer folders and hands their metrics to the same validation
(:func:`unitrefine.data.recordings.prepare_recording`, :func:`combine_recordings`).

Every user mistake found here raises :class:`~unitrefine.errors.UnitRefineError` naming the file,
column or unit, and what to do.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unitrefine.config import DatasetConfig, TaskConfig
from unitrefine.data.metric_names import RENAMED_METRICS, current_metric_name
from unitrefine.data.recordings import load_recording
from unitrefine.data.tables import listed as _listed
from unitrefine.errors import UnitRefineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitTable:
    """Labelled units ready for learning.

    Attributes
    ----------
    X : pandas.DataFrame
        Features, float32, ±inf already turned into NaN, one row per unit.
    y : numpy.ndarray
        Integer class codes, indices into ``classes``.
    classes : tuple of str
        Class names; ``classes[i]`` is the name of code ``i``.
    units : pandas.DataFrame
        ``recording``, ``subject``, ``unit_id`` and the original ``label`` of every row.
    metric_params : dict or None
        The SpikeInterface parameters the metrics were computed with, in ``model_info.json``'s
        ``metric_params`` form (analyzer mode); None when unknown (CSV mode).
    """

    X: pd.DataFrame
    y: np.ndarray
    classes: tuple[str, ...]
    units: pd.DataFrame
    metric_params: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> UnitTable:
        """Return the rows at positions ``index``."""
        return UnitTable(
            X=self.X.iloc[index].reset_index(drop=True),
            y=self.y[index],
            classes=self.classes,
            units=self.units.iloc[index].reset_index(drop=True),
            metric_params=self.metric_params,
        )

    def groups(self, by: str | None) -> np.ndarray | None:
        """Group labels for grouped CV (``recording`` or ``subject``), or None."""
        return None if by is None else self.units[by].to_numpy()

    def class_counts(self) -> dict[str, int]:
        """Number of units per class name."""
        counts = np.bincount(self.y, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts)}

    def fingerprint(self) -> str:
        """A SHA-256 over features, labels and unit identities: equal data, equal fingerprint."""
        h = hashlib.sha256()
        h.update(",".join(self.X.columns).encode())
        h.update(np.ascontiguousarray(self.X.to_numpy(dtype=np.float32)).tobytes())
        h.update(self.y.astype(np.int64).tobytes())
        h.update("\n".join(self.units["recording"] + "/" + self.units["unit_id"]).encode())
        return h.hexdigest()



def load_csv_dataset(dataset: DatasetConfig, task: TaskConfig, root: Path) -> UnitTable:
    """Load and validate every recording of a CSV-mode dataset (:func:`unitrefine.data.loading.load_dataset`)."""
    dataset = check_dataset(dataset, task)
    frames = {rec.id: load_recording(rec, dataset, task, root) for rec in dataset.recordings}
    return combine_recordings(frames, dataset, task)


def check_dataset(dataset: DatasetConfig, task: TaskConfig) -> DatasetConfig:
    """Checks before any file is read; returns ``dataset`` with old metric names in ``metric_names`` mapped.

    Raises
    ------
    UnitRefineError
        A task mapping to unknown classes, or duplicate recording ids.
    """
    bad_targets = sorted({str(v) for v in task.mapping.values() if v is not None} - set(task.classes))
    if bad_targets:
        raise UnitRefineError(
            f"task.mapping maps to {bad_targets}, which are not in task.classes {list(task.classes)}."
        )
    if dataset.metric_names is not None:
        renamed = [m for m in dataset.metric_names if m in RENAMED_METRICS]
        if renamed:
            log.warning("dataset.metric_names uses old SpikeInterface names %s; they are read as %s.",
                        renamed, [current_metric_name(m) for m in renamed])
        current = dict.fromkeys(current_metric_name(m) for m in dataset.metric_names)
        dataset = replace(dataset, metric_names=list(current))
    ids = [r.id for r in dataset.recordings]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise UnitRefineError(
            f"Recording ids {dup} appear more than once in dataset '{dataset.name}'. Give each its own id."
        )
    return dataset


#: The columns :func:`unitrefine.data.recordings.prepare_recording` adds beside the metrics.
_EXTRA = ["__label", "__class", "__unit_id"]


def combine_recordings(frames: dict[str, pd.DataFrame], dataset: DatasetConfig, task: TaskConfig) -> UnitTable:
    """Stack prepared recordings (see :func:`unitrefine.data.recordings.prepare_recording`) into one validated
    :class:`UnitTable`.

    Parameters
    ----------
    frames : dict of str to pandas.DataFrame
        Recording id -> its prepared rows.
    dataset, task : DatasetConfig, TaskConfig
        Feature selection (already checked by :func:`check_dataset`) and classes.

    Returns
    -------
    UnitTable
    """
    features = _features(frames, dataset)
    combined = pd.concat(
        [f.reindex(columns=[*features, *_EXTRA]).assign(__recording=rid) for rid, f in frames.items()],
        ignore_index=True,
    )
    X = _feature_matrix(combined, features, dataset.name)
    subjects = {r.id: (r.subject or r.id) for r in dataset.recordings}
    units = pd.DataFrame(
        {
            "recording": combined["__recording"].astype(str),
            "subject": combined["__recording"].map(subjects).astype(str),
            "unit_id": combined["__unit_id"].astype(str),
            "label": combined["__label"].astype(str),
        }
    )
    classes = tuple(task.classes)
    y = combined["__class"].map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    table = UnitTable(X=X.reset_index(drop=True), y=y, classes=classes, units=units)
    counts = table.class_counts()
    absent = [c for c, n in counts.items() if n == 0]
    if absent:
        raise UnitRefineError(
            f"Dataset '{dataset.name}' has no units of class {absent} under task '{task.name}' (counts {counts}). "
            "Every class of the task needs labelled units: add labels or choose another task."
        )
    log.info(
        "Loaded %d units from %d recordings, %d metrics; classes %s.", len(table), len(frames), len(features), counts
    )
    return table


def _features(frames: dict[str, pd.DataFrame], dataset: DatasetConfig) -> list[str]:
    """The metric columns to learn from: ``dataset.metric_names``, or every recording's metrics (first seen first).

    A recording that lacks some of them is warned about (they are NaN there).
    """
    per_rec = {rid: [c for c in f.columns if not c.startswith("__")] for rid, f in frames.items()}
    if dataset.metric_names is not None:
        features = list(dataset.metric_names)
        nowhere = [m for m in features if not any(m in cols for cols in per_rec.values())]
        if nowhere:
            raise UnitRefineError(
                f"Metrics {_listed(nowhere)} (dataset.metric_names) are in none of the metrics files of dataset "
                f"'{dataset.name}'. Check the spelling, or compute them."
            )
    else:
        features = list(dict.fromkeys(c for cols in per_rec.values() for c in cols))
    if not features:
        raise UnitRefineError(f"Dataset '{dataset.name}' has no metric columns left to learn from.")
    for rid, cols in per_rec.items():
        absent = [m for m in features if m not in cols]
        if absent:
            log.warning("Recording '%s' lacks metrics %s: they are NaN there and will be imputed.", rid, absent)
    return features


def _feature_matrix(combined: pd.DataFrame, features: list[str], name: str) -> pd.DataFrame:
    """The ``features`` of the stacked recordings as float32, ±inf -> NaN; no column and no unit may be all NaN."""
    with np.errstate(over="ignore"):
        X = combined[features].astype("float32")
    X = X.replace([np.inf, -np.inf], np.nan)
    all_nan = [c for c in features if X[c].isna().all()]
    if all_nan:
        raise UnitRefineError(
            f"Metric columns {_listed(all_nan)} are empty (all NaN or inf) in every recording of dataset "
            f"'{name}'. Leave them out with dataset.exclude_metrics."
        )
    empty_rows = X.isna().all(axis=1).to_numpy()
    if empty_rows.any():
        where = (combined["__recording"] + "/" + combined["__unit_id"])[empty_rows].tolist()
        raise UnitRefineError(
            f"Units {_listed(where)} have no finite metric at all. Fix their metrics or remove them."
        )
    return X
