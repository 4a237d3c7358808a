"""A dataset's labelled units, whatever the mode of its recordings (metrics tables or SortingAnalyzers)."""

from __future__ import annotations

from pathlib import Path

from unitrefine.config import DatasetConfig, TaskConfig
from unitrefine.data.analyzer_data import load_analyzer_dataset
from unitrefine.data.dataset import UnitTable, load_csv_dataset
from unitrefine.errors import UnitRefineError


def load_dataset(dataset: DatasetConfig, task: TaskConfig, root: Path) -> UnitTable:
    """Load and validate every recording of a dataset (CSV mode: :mod:`unitrefine.data.dataset`, analyzer mode:
    :mod:`unitrefine.data.analyzer_data`).

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
        return load_analyzer_dataset(dataset, task, root)
    if dataset.mode == "csv":
        return load_csv_dataset(dataset, task, root)
    raise UnitRefineError(f"dataset.mode='{dataset.mode}' is not a dataset mode: use 'csv' (metrics tables) or "
                          "'analyzers' (SpikeInterface analyzer folders).")
