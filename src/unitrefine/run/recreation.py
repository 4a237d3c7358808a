"""Re-create a run: re-train a recorded model from its recorded configuration and check it against the record.

``python -m unitrefine.recreate source=<model folder | MLflow run id | models:/name@alias>`` without the command
line. In order:

1. **Find the record**: the model folder (``config.yaml``, ``model_info.json``, ``model_accuracies.csv``,
   ``training_data.csv``, ``labels.csv``), downloaded from the run's ``model_folder`` artifacts for a run id or a
   registered model; a run's tags add the whole dataset's fingerprint (held-out recordings included).
2. **Check the data** before anything is trained: load the recorded dataset configuration now and compare its
   fingerprints with the recorded ones. Changed data is refused (:class:`DataChanged`), naming the recordings,
   files, units and metrics that differ.
3. **Re-train** with the recorded configuration (seed, budget, ``n_jobs``, search space, CV, ensemble...) and
   only these changes, so that the recorded study and MLflow experiment are neither resumed nor touched:
   ``search.storage=memory``, ``tracking.enabled=false`` (nothing registered), ``output.folder`` = the given or a
   temporary folder, and ``dataset.compute.save=false`` (metrics an analyzer lacks are not written into it).
4. **Compare**: every trial's state, configuration and CV score with the recorded ``model_accuracies.csv``; the
   export's description in ``model_info.json``; both exported models' class probabilities on the recorded
   training units (``training_data.csv``; the largest difference) and the held-out predictions.

Reproducibility ends where the recorded run depended on timing: a time cap (``search.timeout_s``), several worker
processes or hosts on one study (or a resumed study), other package versions. The report warns about each that
applies.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from unitrefine.config import PROJECT_ROOT, TrainConfig, forget_removed_keys, validate_config
from unitrefine.data.dataset import UnitTable
from unitrefine.data.loading import load_dataset
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import CONFIG_FILE, HOLDOUT_PREDICTIONS_FILE, LEADERBOARD_FILE, TRAINING_DATA_FILE
from unitrefine.export.model_info import read_model_info
from unitrefine.options import command_options
from unitrefine.run.recreation_checks import (
    current_units,
    data_differences,
    export_differences,
    holdout_difference,
    prediction_difference,
    read_units,
    reproducibility_warnings,
    trial_differences,
)
from unitrefine.run.recreation_record import Recorded, find_record
from unitrefine.run.recreation_report import RecreateReport

__all__ = ["DataChanged", "RecreateOptions", "RecreateReport", "check_data", "parse_recreate_config", "recorded_config",
           "recreate"]

log = logging.getLogger(__name__)


class DataChanged(UnitRefineError):
    """The recorded run's data are not the data found now; nothing was trained."""

    exit_status = 4


def recreate(
    source: str,
    output: str | Path | None = None,
    *,
    tracking_uri: str | None = None,
    tolerance: float = 0.0,
) -> RecreateReport:
    """Re-train a recorded run from its recorded configuration and compare the result with the record.

    Parameters
    ----------
    source : str
        A model folder written by ``unitrefine.train``, an MLflow run id (or ``runs:/<id>``) of a training run,
        or a registered model (``models:/<name>@<alias>``, ``models:/<name>/<version>``).
    output : str or Path, optional
        Where the re-created model folder goes (it must not exist). None: a temporary folder, removed afterwards.
    tracking_uri : str, optional
        The MLflow store of a run id or registered model (None: ``<project>/mlruns/mlflow.db``).
    tolerance : float
        CV scores and probabilities that differ by at most this much count as equal (default: exactly equal).

    Returns
    -------
    RecreateReport

    Raises
    ------
    DataChanged
        The recorded data changed; raised before anything is trained, naming the recordings and files.
    UnitRefineError
        No such folder, run or registered model; a folder without a recorded configuration; an output that exists.
    """
    uri = tracking_uri or _default_uri()
    if output is not None and Path(output).expanduser().exists():
        raise UnitRefineError(f"output={output} already exists: choose a new folder for the re-created model.")
    with tempfile.TemporaryDirectory(prefix="unitrefine-recreate-") as tmp:
        recorded = find_record(source, uri, Path(tmp) / "recorded")
        target = Path(output).expanduser().resolve() if output is not None else Path(tmp) / "recreated"
        cfg = recorded_config(recorded, target)
        fingerprint = check_data(cfg, recorded)
        warnings = reproducibility_warnings(cfg, recorded)
        for w in warnings:
            log.warning("%s", w)
        report = _retrain_and_compare(cfg, recorded, fingerprint, warnings, tolerance)
        if output is None:
            report = _without_folder(report)
    log.info("%s", report.summary())
    return report


def _default_uri() -> str:
    from unitrefine.tracking.tracker import default_tracking_uri

    return default_tracking_uri(PROJECT_ROOT)


def _without_folder(report: RecreateReport) -> RecreateReport:
    return replace(report, recreated_folder=None)


# ------------------------------------------------------------------------------------------------------------
# The configuration and the data
# ------------------------------------------------------------------------------------------------------------


def recorded_config(recorded: Recorded, output: Path) -> TrainConfig:
    """The recorded configuration, writing only to ``output`` and leaving the recorded study and MLflow alone.

    Raises
    ------
    UnitRefineError
        If ``config.yaml`` is no longer a valid configuration (e.g. written by another version).
    """
    raw = OmegaConf.load(recorded.folder / CONFIG_FILE)
    assert isinstance(raw, DictConfig)
    # The recorded recordings are those left after dataset.exclude_recordings: excluding them again would fail.
    changes: dict[str, Any] = {
        "dataset.exclude_recordings": [],
        "dataset.compute.save": False,
        "search.storage": "memory",
        "search.resume": False,
        "tracking.enabled": False,
        "tracking.register": False,
        "output.folder": str(output),
        "output.overwrite": False,
    }
    for key, value in changes.items():
        OmegaConf.update(raw, key, value, merge=False)
    forget_removed_keys(raw)  # keys no version reads any more (e.g. task.positive_class)
    try:
        return validate_config(raw)
    except UnitRefineError as exc:
        raise UnitRefineError(f"The recorded configuration {recorded.folder / 'config.yaml'}: {exc}") from None


def check_data(cfg: TrainConfig, recorded: Recorded) -> str:
    """Load the data now and check them against the recorded fingerprints, before anything is trained.

    Returns
    -------
    str
        The fingerprint of the training units (equal to the recorded one).

    Raises
    ------
    DataChanged
        Naming each recording, file, unit and metric that differs from the record.
    UnitRefineError
        A data file is missing or unreadable (from :func:`unitrefine.data.loading.load_dataset`).
    """
    table = load_dataset(cfg.dataset, cfg.task, cfg.root_dir)
    trained_on = recorded.info["trained_on"]
    in_fit = table.units["recording"].isin(set(trained_on.get("recordings") or [])).to_numpy()
    fitted = table.subset(np.flatnonzero(in_fit))
    expected, now = trained_on["dataset_fingerprint"], fitted.fingerprint()
    mismatched = [] if now == expected else [f"training units: recorded {expected[:12]}, now {now[:12]}"]
    whole = recorded.tags.get("unitrefine.dataset_fingerprint")
    whole_changed = bool(whole) and whole != table.fingerprint()
    if whole_changed and (whole, table.fingerprint()) != (expected, now):
        mismatched.append(f"whole dataset: recorded {str(whole)[:12]}, now {table.fingerprint()[:12]}")
    if not mismatched:
        log.info("Data as recorded: %d training units, fingerprint %s.", len(fitted), now[:16])
        return now
    found = _where_data_changed(cfg, recorded, fitted, table.subset(np.flatnonzero(~in_fit)), whole_changed)
    raise DataChanged(
        f"Refusing to re-create {recorded.source}: its data changed since the recorded run (fingerprint of the "
        f"{'; '.join(mismatched)}). Nothing was trained.\n  - " + "\n  - ".join(found)
        + "\nRestore the recorded data to re-create the run, or train a new model on the current data."
    )


def _where_data_changed(
    cfg: TrainConfig, recorded: Recorded, fitted: UnitTable, rest: UnitTable, whole_changed: bool
) -> list[str]:
    """The recordings, files, units and values that differ: the training units against ``training_data.csv`` and
    ``labels.csv``, the other (held-out) units against ``holdout_predictions.csv`` (identities and labels)."""
    files = {
        r.id: {k: str(cfg.resolve_path(p)) for k, p in (("metrics", r.metrics), ("labels", r.labels),
                                                        ("analyzer", r.analyzer)) if p}
        for r in cfg.dataset.recordings
    }
    found = data_differences(read_units(recorded.folder), current_units(fitted), files)
    if (recorded.folder / HOLDOUT_PREDICTIONS_FILE).is_file():
        held = read_units(recorded.folder, features=False)
        held = held[~held["recording"].isin(set(recorded.info["trained_on"].get("recordings") or []))]
        found += data_differences(held, current_units(rest), files, features=False)
    if not found and whole_changed:
        found.append(f"the held-out recordings {sorted(set(rest.units['recording']))} differ (the model folder keeps "
                     "no copy of their metrics to say where): check their metrics files")
    if not found:
        found.append("the units, labels and metric values equal the recorded training_data.csv and labels.csv, so "
                     "the data are loaded differently now (another unitrefine or SpikeInterface version?)")
    return found


# ------------------------------------------------------------------------------------------------------------
# Re-train and compare
# ------------------------------------------------------------------------------------------------------------


def _retrain_and_compare(
    cfg: TrainConfig, recorded: Recorded, fingerprint: str, warnings: list[str], tolerance: float
) -> RecreateReport:
    """Train with ``cfg`` and compare the new model folder with the recorded one."""
    from unitrefine.run.training import train

    log.info("Re-training %s with its recorded configuration (in memory, not tracked) into %s.",
             recorded.source, cfg.output.folder)
    result = train(cfg)
    if result is None:  # only a worker joining a shared study exports nothing; a memory study is never shared
        raise UnitRefineError("The re-training exported no model.")
    folder = result.model_folder
    board = pd.read_csv(recorded.folder / LEADERBOARD_FILE)
    differences, max_score = trial_differences(board, pd.read_csv(folder / LEADERBOARD_FILE), tolerance)
    differences += export_differences(recorded.info, read_model_info(folder))
    found, predictions = _prediction_differences(recorded.folder, folder, tolerance)
    differences += found
    return RecreateReport(
        source=recorded.source, run_id=recorded.run_id, identical=not differences,
        differences=tuple(differences), warnings=tuple(warnings), data_fingerprint=fingerprint,
        n_trials=len(board), max_score_difference=max_score, recreated_folder=folder, **predictions,
    )


def _prediction_differences(recorded: Path, recreated: Path, tolerance: float) -> tuple[list[str], dict[str, Any]]:
    """Both exported models' probabilities on the recorded training units, and both runs' held-out predictions.

    Returns
    -------
    differences : list of str
    numbers : dict
        ``max_probability_difference``, ``n_training_units``, ``labels_differ``, ``max_holdout_difference``.
    """
    from unitrefine.export.folder import load_model_folder

    old_model, _ = load_model_folder(recorded)
    new_model, _ = load_model_folder(recreated)
    units = pd.read_csv(recorded / TRAINING_DATA_FILE)
    out = []
    try:
        max_proba, labels = prediction_difference(old_model, new_model, units)
    except ValueError as exc:
        max_proba, labels = math.inf, len(units)
        out.append(f"the exported models cannot be compared: {exc}")
    if max_proba > tolerance:
        out.append(f"the exported models' probabilities on the {len(units)} training units differ by up to "
                   f"{max_proba:.3g} ({labels} label(s) differ)")
    held = holdout_difference(recorded, recreated)
    if held is not None and held > tolerance:
        out.append(f"the held-out predictions differ (largest probability difference {held:.3g})")
    return out, {"max_probability_difference": max_proba, "n_training_units": len(units), "labels_differ": labels,
                 "max_holdout_difference": held}


# ------------------------------------------------------------------------------------------------------------
# The command's options
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecreateOptions:
    """What ``python -m unitrefine.recreate`` is asked to do; the defaults are ``conf/recreate.yaml``'s."""

    source: str
    output: str | None
    tracking_uri: str | None
    tolerance: float


def parse_recreate_config(cfg: DictConfig | Mapping[str, Any]) -> RecreateOptions:
    """Validate a composed ``recreate`` config.

    Raises
    ------
    UnitRefineError
        Unknown options, a missing ``source`` or a negative ``tolerance``.
    """
    raw = command_options(cfg, RecreateOptions, "recreate", ("source",), "source=<model folder | MLflow run id | "
                          "models:/name@alias> [output=<folder for the re-created model>]")
    try:
        tolerance = float(raw.get("tolerance") or 0.0)
    except (TypeError, ValueError):
        raise UnitRefineError(f"tolerance must be a number >= 0 (got {raw.get('tolerance')!r}).") from None
    if tolerance < 0:
        raise UnitRefineError(f"tolerance must be >= 0 (got {tolerance}).")
    output = raw.get("output")
    return RecreateOptions(str(raw["source"]), None if output in (None, "") else str(output),
                           raw.get("tracking_uri") or None, tolerance)
