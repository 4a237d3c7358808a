"""One recording of a CSV-mode dataset: its metrics (a table or a SpikeInterface export folder) joined with its
curation labels, mapped to the task's classes, with the chosen metric columns.

Analyzer mode (:mod:`unitrefine.data.analyzer_data`) hands its metrics to the same :func:`prepare_recording`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from unitrefine.config import DatasetConfig, RecordingConfig, TaskConfig
from unitrefine.data.metric_names import rename_old_metrics, with_old_names
from unitrefine.data.si_export import is_export_folder, labels_file, read_export_metrics
from unitrefine.data.tables import listed as _listed
from unitrefine.data.tables import read_labels, read_table, split_unit_ids, to_numeric, warn_unusable_values
from unitrefine.errors import UnitRefineError

log = logging.getLogger(__name__)


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


def load_recording(rec: RecordingConfig, dataset: DatasetConfig, task: TaskConfig, root: Path) -> pd.DataFrame:
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
        ids, rest, labels = _labelled_units(rec_id, ids, rest, labels, source, metrics_path)
    mapped = _map_labels(labels, task, source)
    values = to_numeric(rest.drop(columns=_unused_columns(rest, dataset)), ids, metrics_path)
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


def check_labelled_units(ids: pd.Series, labels: pd.Series, source: str, metrics_path: Path) -> None:
    """Refuse labels (indexed by unit id, from ``source``) of units that ``ids`` (of ``metrics_path``) lacks.

    Raises
    ------
    UnitRefineError
        Naming the labels' source, the units and the metrics' file or analyzer.
    """
    unknown_units = sorted(set(labels.index) - set(ids))
    if unknown_units:
        raise UnitRefineError(
            f"{source}: labels for units {_listed(unknown_units)} that are not in {metrics_path}. "
            "Are the labels and metrics from the same sorting?"
        )


def _labelled_units(
    rec_id: str, ids: pd.Series, rest: pd.DataFrame, labels: pd.Series, source: str, metrics_path: Path
) -> tuple[pd.Series, pd.DataFrame, pd.Series]:
    """The units that have a label (the others are warned about and dropped), and their labels in unit order.

    Raises
    ------
    UnitRefineError
        Labels of units the metrics do not have.
    """
    check_labelled_units(ids, labels, source, metrics_path)
    unlabelled = ~ids.isin(labels.index)
    if unlabelled.any():
        log.warning(
            "%s: %d of %d units have no label in %s and are dropped (e.g. %s).",
            rec_id, int(unlabelled.sum()), len(ids), source, _listed(ids[unlabelled].tolist()),
        )
    labels = labels.reindex(ids[~unlabelled].to_numpy())
    keep = (~unlabelled).to_numpy()
    return ids[keep].reset_index(drop=True), rest[keep].reset_index(drop=True), labels


def _unused_columns(rest: pd.DataFrame, dataset: DatasetConfig) -> list[str]:
    """The columns of ``rest`` not learned from: excluded metrics, the label column, metrics not selected."""
    excluded = with_old_names(dataset.exclude_metrics)
    drop_cols = [c for c in rest.columns if c in excluded or c == dataset.label_column]
    if dataset.metric_names is not None:
        wanted = with_old_names(dataset.metric_names)
        drop_cols += [c for c in rest.columns if c not in wanted]
    return drop_cols
