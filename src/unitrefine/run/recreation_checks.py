"""What a re-created run is compared with: the recorded data (before training) and the recorded results (after).

Comparisons for :mod:`unitrefine.run.recreation`; each returns differences as sentences in the user's terms
(recordings, their files, units, metrics, trials), and an empty list when nothing differs. Also where a recorded
run depended on more than its configuration and data (:func:`reproducibility_warnings`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unitrefine.config import TrainConfig
from unitrefine.data.dataset import UnitTable
from unitrefine.export.folder import HOLDOUT_PREDICTIONS_FILE, LABELS_FILE, LEADERBOARD_FILE, TRAINING_DATA_FILE
from unitrefine.run.recreation_record import Recorded

#: Columns of ``training_data.csv``/``labels.csv`` that identify a unit rather than hold a feature.
KEY_COLUMNS = ("recording", "unit_id")
#: Columns of ``model_accuracies.csv`` that are results, not a trial's configuration.
RESULT_COLUMNS = (
    "trial", "state", "cv_score", "cv_score_std", "n_folds", "fold_scores", "duration_s", "params", "error",
)
#: ``model_info.json`` entries that describe what was exported.
EXPORT_KEYS = ("best_configuration", "ensemble", "threshold", "calibration", "label_conversion", "features")
#: Packages whose versions change fitted models.
MODEL_PACKAGES = ("scikit-learn", "numpy", "imbalanced-learn", "xgboost", "unitrefine")
_SHOWN = 3


def _listed(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in list(items)[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def read_units(folder: Path, features: bool = True) -> pd.DataFrame:
    """The units a model folder records: ``recording``, ``unit_id``, ``label`` and (``features``) their features.

    ``features=True`` reads what the exported model was fitted on (``training_data.csv`` + ``labels.csv``);
    ``features=False`` reads the held-out units (``holdout_predictions.csv``: identities and labels only).
    """
    ids = {"recording": str, "unit_id": str, "label": str}
    if not features:
        return pd.read_csv(folder / HOLDOUT_PREDICTIONS_FILE, dtype=ids)[["recording", "unit_id", "label"]]
    data = pd.read_csv(folder / TRAINING_DATA_FILE, dtype=ids)
    labels = pd.read_csv(folder / LABELS_FILE, dtype=ids)[["recording", "unit_id", "label"]]
    feats = [c for c in data.columns if c not in KEY_COLUMNS]
    data[feats] = data[feats].astype(np.float32)
    return labels.merge(data, on=list(KEY_COLUMNS), how="left", validate="one_to_one")


def current_units(table: UnitTable) -> pd.DataFrame:
    """``table`` in the form :func:`read_units` returns."""
    out = table.units[["recording", "unit_id", "label"]].astype(str).reset_index(drop=True)
    return pd.concat([out, table.X.reset_index(drop=True)], axis=1)


def _files(recording: str, files: Mapping[str, Mapping[str, str]], kind: str) -> str:
    """``metrics file <path>`` (or ``analyzer <path>``), or ``labels file <path>``, of ``recording``."""
    paths = files.get(recording, {})
    if kind == "labels":
        return f"labels file {paths['labels']}" if paths.get("labels") else "labels (from the analyzer)"
    if paths.get("analyzer"):
        return f"analyzer {paths['analyzer']}"
    return f"metrics file {paths.get('metrics', '?')}"


def _value(v: float) -> str:
    return "NaN" if math.isnan(v) else f"{v:.6g}"


def _recording_differences(
    rid: str, rec: pd.DataFrame, cur: pd.DataFrame, features: list[str], files: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """How one recording's units, labels and feature values differ from the recorded ones."""
    where = f"recording '{rid}' ({_files(rid, files, 'metrics')}, {_files(rid, files, 'labels')})"
    if cur.empty:
        return [f"{where}: gives no units now; the recorded run trained on {len(rec)} of its units"]
    rec, cur = rec.set_index("unit_id"), cur.set_index("unit_id")
    out = []
    gone, new = rec.index.difference(cur.index, sort=False), cur.index.difference(rec.index, sort=False)
    if len(gone) or len(new):
        out.append(f"{where}: {len(gone)} unit(s) gone ({_listed(list(gone)) or '-'}), {len(new)} new "
                   f"({_listed(list(new)) or '-'})")
    common = rec.index.intersection(cur.index, sort=False)
    relabelled = [u for u in common if rec.at[u, "label"] != cur.at[u, "label"]]
    if relabelled:
        shown = [f"unit {u} '{rec.at[u, 'label']}' -> '{cur.at[u, 'label']}'" for u in relabelled]
        out.append(f"recording '{rid}', {_files(rid, files, 'labels')}: {len(relabelled)} unit(s) relabelled "
                   f"({_listed(shown)})")
    changed = []
    for col in features:
        a = rec.loc[common, col].to_numpy(np.float32)
        b = cur.loc[common, col].to_numpy(np.float32)
        for i in np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b)))):
            changed.append((common[i], col, float(a[i]), float(b[i])))
    if changed:
        shown = [f"unit {u} {col} {_value(a)} -> {_value(b)}" for u, col, a, b in changed]
        out.append(f"recording '{rid}', {_files(rid, files, 'metrics')}: {len(changed)} value(s) changed in "
                   f"{len({c[0] for c in changed})} unit(s) ({_listed(shown)})")
    if not out and list(rec.index) != list(cur.index):
        out.append(f"{where}: the same units in another order")
    return out


def data_differences(
    recorded: pd.DataFrame, current: pd.DataFrame, files: Mapping[str, Mapping[str, str]], features: bool = True
) -> list[str]:
    """Where the current units differ from the recorded ones, per recording, naming its files.

    Parameters
    ----------
    recorded : DataFrame
        :func:`read_units` of the recorded folder.
    current : DataFrame
        :func:`current_units` of the data loaded now, restricted to the same recordings' role (trained on, or
        held out).
    files : mapping
        Recording id -> its ``metrics``/``labels``/``analyzer`` paths.
    features : bool
        Whether ``recorded`` holds feature values to compare (held-out units: identities and labels only).

    Returns
    -------
    list of str
        One sentence per difference; empty when the units, labels and values are the same.
    """
    out = []
    names = [c for c in recorded.columns if c not in (*KEY_COLUMNS, "label")] if features else []
    now = [c for c in current.columns if c not in (*KEY_COLUMNS, "label")]
    if features and names != now:
        gone, new = [c for c in names if c not in now], [c for c in now if c not in names]
        out.append(f"the features differ: {gone or 'none'} no longer loaded, {new or 'none'} new"
                   if gone or new else "the features are the same but in another order")
    shared = [c for c in names if c in now]
    recordings = list(dict.fromkeys([*recorded["recording"], *current["recording"]]))
    for rid in recordings:
        rec, cur = recorded[recorded["recording"] == rid], current[current["recording"] == rid]
        if rec.empty:
            out.append(f"recording '{rid}' ({_files(rid, files, 'metrics')}) is not in the recorded data")
            continue
        out += _recording_differences(rid, rec, cur, shared, files)
    return out


def _trial_configs(board: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """Per trial number: its state, its configuration (components and parameters) and its CV score."""
    slots = [c for c in board.columns if c not in RESULT_COLUMNS]
    out = {}
    for row in board.to_dict("records"):
        params = {s: row[s] for s in slots if isinstance(row[s], str)}
        if isinstance(row.get("params"), str):
            params.update(json.loads(row["params"]))
        score = row.get("cv_score")
        out[int(row["trial"])] = {"state": row["state"], "params": params,
                                  "cv_score": None if score is None or pd.isna(score) else float(score)}
    return out


def _param_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [f"{k} {a.get(k, '-')} -> {b.get(k, '-')}" for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]


def trial_differences(recorded: pd.DataFrame, recreated: pd.DataFrame, tolerance: float) -> tuple[list[str], float]:
    """Compare two ``model_accuracies.csv`` trial by trial: state, configuration and CV score.

    Parameters
    ----------
    recorded, recreated : DataFrame
        The leaderboards of the recorded and the re-created run.
    tolerance : float
        CV scores that differ by at most this much count as equal.

    Returns
    -------
    differences : list of str
        One sentence per trial that differs (and for trials only one run has).
    max_score_difference : float
        The largest CV-score difference over trials both runs completed (0.0 if none).
    """
    a, b = _trial_configs(recorded), _trial_configs(recreated)
    out = []
    if set(a) != set(b):
        out.append(f"the recorded run has {len(a)} trials, the re-created one {len(b)} (only recorded: "
                   f"{sorted(set(a) - set(b)) or '-'}, only re-created: {sorted(set(b) - set(a)) or '-'})")
    worst = 0.0
    for n in sorted(set(a) & set(b)):
        ra, rb = a[n], b[n]
        if ra["state"] != rb["state"]:
            out.append(f"trial {n}: {ra['state']} -> {rb['state']}")
        changes = _param_changes(ra["params"], rb["params"])
        if changes:
            out.append(f"trial {n}: parameters differ ({_listed(changes)})")
        if ra["cv_score"] is not None and rb["cv_score"] is not None:
            diff = abs(ra["cv_score"] - rb["cv_score"])
            worst = max(worst, diff)
            if diff > tolerance and not changes:
                out.append(f"trial {n}: same parameters, CV score {ra['cv_score']:.6g} -> {rb['cv_score']:.6g}")
        elif (ra["cv_score"] is None) != (rb["cv_score"] is None) and ra["state"] == rb["state"]:
            out.append(f"trial {n}: CV score {ra['cv_score']} -> {rb['cv_score']}")
    return out, worst


def export_differences(recorded: Mapping[str, Any], recreated: Mapping[str, Any]) -> list[str]:
    """Which ``model_info.json`` entries describing the export (configuration, ensemble, threshold...) differ."""
    return [
        f"model_info.json '{key}' differs: {json.dumps(recorded.get(key), default=str)[:300]} -> "
        f"{json.dumps(recreated.get(key), default=str)[:300]}"
        for key in EXPORT_KEYS
        if json.dumps(recorded.get(key), sort_keys=True, default=str)
        != json.dumps(recreated.get(key), sort_keys=True, default=str)
    ]


def prediction_difference(recorded_model: Any, recreated_model: Any, X: pd.DataFrame) -> tuple[float, int]:
    """The largest absolute class-probability difference of two models on ``X``, and how many labels differ.

    Raises
    ------
    ValueError
        If the two models do not take the same features or predict the same classes.
    """
    if list(recorded_model.feature_names_in_) != list(recreated_model.feature_names_in_):
        raise ValueError("the two models take different features")
    if list(recorded_model.classes_) != list(recreated_model.classes_):
        raise ValueError("the two models predict different classes")
    X = X[list(recorded_model.feature_names_in_)].astype(np.float32)
    diff = np.abs(recorded_model.predict_proba(X) - recreated_model.predict_proba(X))
    labels = int(np.sum(recorded_model.predict(X) != recreated_model.predict(X)))
    return float(diff.max()) if diff.size else 0.0, labels


def holdout_difference(recorded: Path, recreated: Path) -> float | None:
    """The largest probability difference between two ``holdout_predictions.csv`` (None if either is missing)."""
    if not (recorded / HOLDOUT_PREDICTIONS_FILE).is_file() or not (recreated / HOLDOUT_PREDICTIONS_FILE).is_file():
        return None
    a = pd.read_csv(recorded / HOLDOUT_PREDICTIONS_FILE, dtype={"unit_id": str})
    b = pd.read_csv(recreated / HOLDOUT_PREDICTIONS_FILE, dtype={"unit_id": str})
    cols = [c for c in a.columns if c.startswith("probability_")]
    if list(a[list(KEY_COLUMNS)].itertuples(index=False)) != list(b[list(KEY_COLUMNS)].itertuples(index=False)) or (
        cols != [c for c in b.columns if c.startswith("probability_")]
    ):
        return math.inf
    return float(np.abs(a[cols].to_numpy() - b[cols].to_numpy()).max()) if len(a) else 0.0


def reproducibility_warnings(cfg: TrainConfig, recorded: Recorded) -> list[str]:
    """Where the recorded run depended on more than its configuration and data."""
    from unitrefine.export.folder import package_versions

    out = []
    board = pd.read_csv(recorded.folder / LEADERBOARD_FILE)
    if cfg.search.timeout_s is not None:
        n, budget = len(board), cfg.search.n_trials
        ended = f"stopped on it after {n} of {budget} trials" if n < budget else "finished its budget"
        out.append(f"the recorded run had a time cap (search.timeout_s={cfg.search.timeout_s:g}) and {ended}: how "
                   "many trials fit under a time cap depends on the machine, so it cannot be reproduced exactly")
    if len(recorded.workers) > 1:
        hosts = {w.rsplit("-", 2)[0] for w in recorded.workers}
        out.append(f"the recorded trials were run by {len(recorded.workers)} worker processes on {len(hosts)} "
                   "host(s) (or the study was interrupted and resumed): how their trials interleaved cannot be "
                   "reproduced by one process")
    if cfg.search.warm_start:
        out.append(f"search.warm_start={cfg.search.warm_start}: its configurations are read again now (an alias may "
                   "point to another model version since)")
    recorded_versions = recorded.info.get("requirements") or {}
    now = package_versions()
    changed = [f"{p} {recorded_versions[p]} -> {now.get(p, 'not installed')}" for p in MODEL_PACKAGES
               if p in recorded_versions and recorded_versions[p] != now.get(p)]
    if changed:
        out.append(f"package versions differ from the recorded run's ({', '.join(changed)}): results may differ")
    seed = recorded.tags.get("unitrefine.seed") or recorded.info.get("seed")
    if seed is not None and str(seed) != str(cfg.seed):
        out.append(f"the recorded seed {seed} is not the seed of its config.yaml ({cfg.seed}); using config.yaml's")
    return out
