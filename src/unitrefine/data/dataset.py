"""Load per-unit metrics and curation labels into one validated table.

CSV mode reads metrics tables (:mod:`unitrefine.data.tables`) or SpikeInterface export folders
(:mod:`unitrefine.data.si_export`) here; analyzer mode (:mod:`unitrefine.data.analyzer_data`) reads SortingAnalyzer
folders and hands their metrics to the same validation (:func:`prepare_recording`, :func:`combine_recordings`).

Every user mistake found here raises :class:`~unitrefine.errors.UnitRefineError` naming the file,
column or unit, and what to do.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unitrefine.config import DatasetConfig, RecordingConfig, TaskConfig
from unitrefine.data.si_export import is_export_folder, labels_file, read_export_metrics
from unitrefine.data.tables import listed as _listed
from unitrefine.data.tables import read_labels, read_table, split_unit_ids, to_numeric, warn_unusable_values
from unitrefine.errors import UnitRefineError

log = logging.getLogger(__name__)

#: Old SpikeInterface template-metric names -> (current name, sign), as SpikeInterface's
#: ``_BACKWARD_COMPATIBILITY_MAP`` does.
RENAMED_METRICS = {
    "peak_to_valley": ("peak_to_trough_duration", 1.0),
    "half_width": ("trough_half_width", 1.0),
    "peak_trough_ratio": ("peak_after_to_trough_ratio", -1.0),
}


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


def rename_old_metrics(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Map pre-0.103.2 SpikeInterface template-metric names to current ones (flipping signs as needed)."""
    for old, (new, sign) in RENAMED_METRICS.items():
        if old not in df.columns:
            continue
        if new in df.columns:
            log.warning("%s: has both '%s' and '%s'; using '%s'.", path, old, new, new)
            df = df.drop(columns=[old])
        else:
            df = df.rename(columns={old: new})
            if sign != 1.0:
                df[new] = sign * df[new]
    return df


def _with_old_names(names: Sequence[str]) -> set[str]:
    """``names`` plus the old SpikeInterface names of any renamed metric among them."""
    return set(names) | {old for old, (new, _) in RENAMED_METRICS.items() if new in names}


def current_metric_name(name: str) -> str:
    """The current SpikeInterface name of a metric (old template-metric names are mapped)."""
    return RENAMED_METRICS[name][0] if name in RENAMED_METRICS else name


def _map_labels(labels: pd.Series, task: TaskConfig, source: str) -> pd.Series:
    """Map curation labels to task classes; ``None`` marks units the task drops."""
    mapping = {str(k).strip(): v for k, v in task.mapping.items()}
    missing = labels.isna()
    if missing.any():
        raise UnitRefineError(
            f"{source}: units {_listed(labels.index[missing].tolist())} have no label. "
            "Label them, or remove them from the labels file."
        )
    unknown = ~labels.isin(list(mapping))
    if unknown.any():
        first = labels.index[unknown][0]
        values = sorted(labels[unknown].unique().tolist())
        hint = ""
        lowered = {k.lower(): k for k in mapping}
        near = [f"'{v}' -> '{lowered[v.lower()]}'" for v in values if v.lower() in lowered]
        if near:
            hint = f" Labels are case-sensitive: did you mean {', '.join(near)}?"
        raise UnitRefineError(
            f"{source}: label {_listed(values)} (first at unit {first}) is not known to task '{task.name}', "
            f"which maps {sorted(mapping)}.{hint} Fix the labels or choose another task (task=...)."
        )
    return labels.map(mapping)


def _load_recording(rec: RecordingConfig, dataset: DatasetConfig, task: TaskConfig, root: Path) -> pd.DataFrame:
    """One recording's metrics joined with its mapped labels (columns: metrics..., ``__class``, ``__label``)."""
    assert rec.metrics is not None  # validated with the config
    metrics_path = root / Path(rec.metrics).expanduser()
    ids, rest = _read_metrics(metrics_path, rec.id)
    labels_path = root / Path(rec.labels).expanduser() if rec.labels is not None else None
    if labels_path is None and dataset.label_column is None and metrics_path.is_dir():
        labels_path = labels_file(metrics_path)  # the export folder's Phy labels
        if not labels_path.is_file():
            raise UnitRefineError(
                f"Recording '{rec.id}' has no labels: {metrics_path} holds no {labels_path.name}. Put Phy's "
                f"{labels_path.name} there, or set the recording's 'labels' file or dataset.label_column."
            )
    if labels_path is not None:
        labels = read_labels(labels_path)
        return prepare_recording(rec.id, ids, rest, labels, str(labels_path), metrics_path, dataset, task)
    if dataset.label_column is not None:
        if dataset.label_column not in rest.columns:
            raise UnitRefineError(
                f"{metrics_path}: no label column '{dataset.label_column}' (dataset.label_column). "
                f"Columns are {_listed(list(rest.columns))}."
            )
        labels = pd.Series(rest[dataset.label_column].str.strip().to_numpy(), index=ids.to_numpy())
        rest = rest.drop(columns=[dataset.label_column])
        source = f"{metrics_path} column '{dataset.label_column}'"
        return prepare_recording(rec.id, ids, rest, labels, source, metrics_path, dataset, task, filter_labels=False)
    raise UnitRefineError(f"Recording '{rec.id}' has no labels: set its 'labels' file or dataset.label_column.")


def _read_metrics(path: Path, rec_id: str) -> tuple[pd.Series, pd.DataFrame]:
    """Unit ids and metric columns of a metrics table, or of a SpikeInterface export folder
    (:mod:`unitrefine.data.si_export`)."""
    if not path.is_dir():
        return split_unit_ids(read_table(path, "metrics"), path)
    if not is_export_folder(path):
        raise UnitRefineError(
            f"The metrics of recording '{rec_id}', {path}, is a folder without SpikeInterface's quality_metrics.csv or "
            "template_metrics.csv. Give a metrics table, or a folder holding those (analyzer folders need "
            "dataset.mode=analyzers)."
        )
    return read_export_metrics(path)


def prepare_recording(
    rec_id: str,
    ids: pd.Series,
    rest: pd.DataFrame,
    labels: pd.Series,
    source: str,
    metrics_path: Path,
    dataset: DatasetConfig,
    task: TaskConfig,
    filter_labels: bool = True,
) -> pd.DataFrame:
    """Join one recording's metrics with its labels, map them to classes and select the metric columns.

    Parameters
    ----------
    rec_id : str
        The recording id, for messages.
    ids : pandas.Series
        Unit ids (strings), aligned with ``rest``.
    rest : pandas.DataFrame
        Metric columns (strings or numbers), one row per unit.
    labels : pandas.Series
        Curation labels indexed by unit id.
    source : str
        Where the labels come from (a file, a column or a sorting property), for messages.
    metrics_path : Path
        Where the metrics come from (a metrics file or an analyzer folder), for messages.
    dataset, task : DatasetConfig, TaskConfig
        Feature selection and label mapping.
    filter_labels : bool
        Check ``labels`` against ``ids``: labels of unknown units are an error, unlabelled units are dropped.

    Returns
    -------
    pandas.DataFrame
        Numeric metrics plus ``__label``, ``__class`` and ``__unit_id``, for the units the task keeps.
    """
    if filter_labels:
        unknown_units = sorted(set(labels.index) - set(ids))
        if unknown_units:
            raise UnitRefineError(
                f"{source}: labels for units {_listed(unknown_units)} that are not in {metrics_path}. "
                "Are the labels and metrics from the same sorting?"
            )
        unlabelled = ~ids.isin(labels.index)
        if unlabelled.any():
            log.warning(
                "%s: %d of %d units have no label in %s and are dropped (e.g. %s).",
                rec_id, int(unlabelled.sum()), len(ids), source, _listed(ids[unlabelled].tolist()),
            )
        labels = labels.reindex(ids[~unlabelled].to_numpy())
        keep = (~unlabelled).to_numpy()
        ids, rest = ids[keep].reset_index(drop=True), rest[keep].reset_index(drop=True)
    mapped = _map_labels(labels, task, source)
    excluded = _with_old_names(dataset.exclude_metrics)
    drop_cols = [c for c in rest.columns if c in excluded or c == dataset.label_column]
    if dataset.metric_names is not None:
        wanted = _with_old_names(dataset.metric_names)
        drop_cols += [c for c in rest.columns if c not in wanted]
    values = to_numeric(rest.drop(columns=drop_cols), ids, metrics_path)
    values = rename_old_metrics(values, metrics_path)
    values["__label"] = labels.to_numpy()
    values["__class"] = mapped.to_numpy()
    values["__unit_id"] = ids.to_numpy()
    kept = values["__class"].notna().to_numpy()
    if not kept.all():
        log.info("%s: %d units whose label the task drops are left out.", rec_id, int((~kept).sum()))
    values = values[kept].reset_index(drop=True)
    warn_unusable_values(
        values.drop(columns=["__label", "__class", "__unit_id"]), values["__unit_id"].tolist(),
        f"Recording '{rec_id}' ({metrics_path})", "it is missing (NaN) in the whole recording and imputed from the "
        "other recordings. Recompute it, or leave it out with dataset.exclude_metrics.",
    )
    return values


def load_dataset(dataset: DatasetConfig, task: TaskConfig, root: Path) -> UnitTable:
    """Load and validate every recording of a dataset (CSV mode here, analyzer mode in :mod:`unitrefine.data.analyzer_data`).

    Parameters
    ----------
    dataset : DatasetConfig
        The recordings and the feature selection.
    task : TaskConfig
        The label mapping.
    root : Path
        Relative paths in ``dataset`` are resolved against it.

    Returns
    -------
    UnitTable
        Features (float32, ±inf -> NaN, as SpikeInterface feeds its models) and class codes.

    Raises
    ------
    UnitRefineError
        For any problem with the files or their contents.
    """
    if dataset.mode == "analyzers":
        from unitrefine.data.analyzer_data import load_analyzer_dataset

        return load_analyzer_dataset(dataset, task, root)
    dataset = check_dataset(dataset, task)
    frames = {rec.id: _load_recording(rec, dataset, task, root) for rec in dataset.recordings}
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
        raise UnitRefineError(f"task.mapping maps to {bad_targets}, which are not in task.classes {list(task.classes)}.")
    if dataset.metric_names is not None:
        renamed = [m for m in dataset.metric_names if m in RENAMED_METRICS]
        if renamed:
            log.warning("dataset.metric_names uses old SpikeInterface names %s; they are read as %s.",
                        renamed, [current_metric_name(m) for m in renamed])
        dataset = replace(dataset, metric_names=list(dict.fromkeys(current_metric_name(m) for m in dataset.metric_names)))
    ids = [r.id for r in dataset.recordings]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise UnitRefineError(f"Recording ids {dup} appear more than once in dataset '{dataset.name}'. Give each its own id.")
    return dataset


def combine_recordings(frames: dict[str, pd.DataFrame], dataset: DatasetConfig, task: TaskConfig) -> UnitTable:
    """Stack prepared recordings (see :func:`prepare_recording`) into one validated :class:`UnitTable`.

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
    combined = pd.concat(
        [f.reindex(columns=[*features, "__label", "__class", "__unit_id"]).assign(__recording=rid) for rid, f in frames.items()],
        ignore_index=True,
    )
    with np.errstate(over="ignore"):
        X = combined[features].astype("float32")
    X = X.replace([np.inf, -np.inf], np.nan)
    all_nan = [c for c in features if X[c].isna().all()]
    if all_nan:
        raise UnitRefineError(
            f"Metric columns {_listed(all_nan)} are empty (all NaN or inf) in every recording of dataset "
            f"'{dataset.name}'. Leave them out with dataset.exclude_metrics."
        )
    empty_rows = X.isna().all(axis=1).to_numpy()
    if empty_rows.any():
        where = (combined["__recording"] + "/" + combined["__unit_id"])[empty_rows].tolist()
        raise UnitRefineError(
            f"Units {_listed(where)} have no finite metric at all. Fix their metrics or remove them."
        )
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
