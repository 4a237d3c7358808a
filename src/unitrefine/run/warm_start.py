"""Warm start: queue a previous model's best configurations first in a new search (``search.warm_start``).

After new labels arrive (``python -m unitrefine.suggest``), a retrain need not start from nothing: the
previous model folder (or its registered version, ``models:/<name>@<alias>``) records the configurations
its search found best — ``best_configuration`` and the ensemble members in ``model_info.json``, every trial
with its CV score in ``model_accuracies.csv``. The best ``search.warm_start_trials`` of them are enqueued
(Optuna's ``enqueue_trial``) before the classifier defaults, so they are the first trials of the new study.

Only what is valid in the current search space is enqueued: a configuration whose classifier is no longer
allowed is skipped; a component or parameter value outside the current space is left to the sampler; a
parameter that is fixed now takes its fixed value. Each decision is logged.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from unitrefine.config import SearchConfig
from unitrefine.errors import UnitRefineError
from unitrefine.export.folder import LEADERBOARD_FILE
from unitrefine.export.model_info import INFO_FILE, read_model_info
from unitrefine.search.search_space import Param, SearchSpace
from unitrefine.search.session import QueuedTrial
from unitrefine.search.trial_attrs import WARM_START_ATTR

log = logging.getLogger(__name__)



def previous_configurations(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """A model folder's configurations, best first: ``(label, flat Optuna parameters)``.

    The exported best configuration, then the ensemble members (heaviest first), then the completed trials
    of its leaderboard by CV score; duplicates are dropped.

    Raises
    ------
    UnitRefineError
        A missing folder, or one that does not record its search (e.g. SpikeInterface's ``train_model``).
    """
    if not folder.is_dir():
        raise UnitRefineError(f"search.warm_start: the model folder {folder} does not exist.")
    found: list[tuple[str, dict[str, Any]]] = []
    if (folder / INFO_FILE).is_file():
        try:
            info = read_model_info(folder)
        except UnitRefineError as exc:
            raise UnitRefineError(f"search.warm_start: {exc}") from None
        if isinstance(info.get("best_configuration"), dict):
            found.append(("best configuration", info["best_configuration"]))
        members = sorted(info.get("ensemble") or [], key=lambda m: -int(m.get("weight", 0)))
        found += [(f"ensemble member trial {m.get('trial')}", m["configuration"]) for m in members
                  if isinstance(m.get("configuration"), dict)]
    board_path = folder / LEADERBOARD_FILE
    if board_path.is_file():
        board = pd.read_csv(board_path, dtype=str, keep_default_na=False)
        if not {"trial", "state", "cv_score", "params", "classifier"} <= set(board.columns):
            raise UnitRefineError(f"search.warm_start: {board_path} is not a unitrefine leaderboard (columns "
                                  f"{list(board.columns)}).")
        board = board[board["state"] == "complete"].copy()
        board["_score"] = pd.to_numeric(board["cv_score"], errors="coerce")
        board["_trial"] = pd.to_numeric(board["trial"], errors="coerce")
        board = board.sort_values(["_score", "_trial"], ascending=[False, True], na_position="last")
        slots = [c for c in ("imputer", "scaler", "resampler", "classifier") if c in board.columns]
        for _, row in board.iterrows():
            params = {s: row[s] for s in slots if row[s] != ""}
            try:
                params.update(json.loads(row["params"] or "{}"))
            except json.JSONDecodeError:
                raise UnitRefineError(f"search.warm_start: {board_path} trial {row['trial']} has unreadable params "
                                      f"{row['params']!r}.") from None
            found.append((f"trial {row['trial']}", params))
    if not found:
        raise UnitRefineError(
            f"search.warm_start: {folder} records no search (no best_configuration in model_info.json, no "
            f"{LEADERBOARD_FILE}). Give a model folder written by unitrefine.train, or its models:/<name>@<alias>."
        )
    out, seen = [], set()
    for label, params in found:
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append((label, params))
    return out


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool) and (a is None) == (b is None)


def _valid(param: Param, value: Any) -> tuple[bool, Any]:
    """Whether ``value`` lies in ``param``'s distribution, and the value as Optuna should get it."""
    if param.kind == "categorical":
        match = [c for c in param.choices if _same(value, c)]
        return (True, match[0]) if match else (False, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False, value
    if param.kind == "int":
        if isinstance(value, float) and not value.is_integer():
            return False, value
        value = int(value)
        step = int(param.step or 1)
        return param.low <= value <= param.high and (value - int(param.low)) % step == 0, value
    value = float(value)
    if not param.low <= value <= param.high:
        return False, value
    if param.step:
        k = (value - param.low) / param.step
        return abs(k - round(k)) < 1e-8, value
    return True, value


def _describe(param: Param) -> str:
    if param.kind == "categorical":
        return f"the choices {list(param.choices)}"
    step = f" step {param.step}" if param.step else ""
    return f"[{param.low}, {param.high}]{step}" + (" log" if param.log else "")


def fit_to_space(params: Mapping[str, Any], space: SearchSpace) -> tuple[dict[str, Any] | None, list[str]]:
    """The part of a previous configuration that is valid in ``space``, and what was left out and why.

    Parameters
    ----------
    params : mapping
        Flat Optuna parameters (``classifier``, ``random_forest.max_depth``, ...).
    space : SearchSpace
        The current search space.

    Returns
    -------
    params : dict or None
        Parameters to enqueue (those left out are sampled); None when the classifier is not in ``space``.
    notes : list of str
        Every parameter left out or overridden, and why.
    """
    classifier = params.get("classifier")
    if classifier not in space.slots["classifier"]:
        return None, [f"classifier '{classifier}' is not in the search space"]
    out: dict[str, Any] = {}
    notes: list[str] = []
    for slot, choices in space.slots.items():
        name = params.get(slot)
        if name not in choices:
            notes.append(f"{slot} '{name}' is not in the search space (sampled)")
            continue
        out[slot] = name
        for p, param in choices[name].items():
            key = f"{name}.{p}"
            if param.kind == "fixed":
                if key in params and not _same(params[key], param.value):
                    notes.append(f"{key}={params[key]!r} is fixed at {param.value!r} now")
                continue
            if key not in params:
                notes.append(f"{key} was not searched before (sampled)")
                continue
            ok, value = _valid(param, params[key])
            if ok:
                out[key] = value
            else:
                notes.append(f"{key}={params[key]!r} is outside {_describe(param)} (sampled)")
        searched_now = {f"{name}.{p}" for p in choices[name]}
        notes += [f"{k}={params[k]!r} is not in the search space now (the component's default applies)"
                  for k in params if k.startswith(f"{name}.") and k not in searched_now]
    return out, notes


def _source_folder(spec: str, tracking_uri: str, resolve: Callable[[str], Path], tmp: Path) -> tuple[Path, str]:
    from unitrefine.tracking.registry import download_model_folder, is_registry_uri

    if is_registry_uri(spec):
        try:
            return download_model_folder(spec, tracking_uri, tmp), spec
        except UnitRefineError as exc:
            raise UnitRefineError(f"search.warm_start: {exc}") from None
    folder = resolve(spec).resolve()
    return folder, str(folder)


def warm_start_trials(
    space: SearchSpace, search: SearchConfig, task: str, tracking_uri: str, resolve: Callable[[str], Path]
) -> list[QueuedTrial]:
    """The previous model's best configurations valid in ``space`` (``search.warm_start``), at most
    ``search.warm_start_trials`` of them; each carries its origin in :data:`WARM_START_ATTR`.

    Parameters
    ----------
    space : SearchSpace
        The current search space.
    search : SearchConfig
        ``warm_start`` (a model folder or ``models:/<name>@<alias>``) and ``warm_start_trials``.
    task : str
        This run's task (a model trained for another one is warned about).
    tracking_uri : str
        The MLflow store a ``models:/`` warm start is looked up in.
    resolve : callable
        Resolves a relative model folder against the project root.

    Raises
    ------
    UnitRefineError
        The model folder or registered model cannot be found, records no search, or none of its
        configurations fits the current search space.
    """
    spec = search.warm_start
    if not spec:
        return []
    with tempfile.TemporaryDirectory(prefix="unitrefine-warm-start-") as tmp:
        folder, source = _source_folder(spec, tracking_uri, resolve, Path(tmp))
        configurations = previous_configurations(folder)
        trained_for = _task_of(folder)
    if trained_for is not None and trained_for != task:
        log.warning("search.warm_start: %s was trained for task '%s', this run is '%s'; its configurations are tried "
                    "first anyway.", source, trained_for, task)
    queued, skipped = _fitting(configurations, space, source, search.warm_start_trials)
    for reason in skipped:
        log.info("Warm start: skipped %s", reason)
    if not queued:
        raise UnitRefineError(
            f"search.warm_start: none of the configurations of {source} fits the current search space "
            f"({'; '.join(skipped)}). Allow their classifiers in search_space.classifier, or drop search.warm_start."
        )
    log.info("Warm start from %s: %d configuration(s) queued first, %d skipped.", source, len(queued), len(skipped))
    return queued


def _fitting(
    configurations: list[tuple[str, dict[str, Any]]], space: SearchSpace, source: str, limit: int
) -> tuple[list[QueuedTrial], list[str]]:
    """The first ``limit`` distinct ``configurations`` that fit ``space`` (:func:`fit_to_space`), as queued
    trials; and why the others before the last queued one were skipped."""
    queued: list[QueuedTrial] = []
    seen: set[str] = set()
    skipped = []
    for label, params in configurations:
        if len(queued) >= limit:
            break
        fitted, notes = fit_to_space(params, space)
        if fitted is None:
            skipped.append(f"{label}: {'; '.join(notes)}")
            continue
        key = json.dumps(fitted, sort_keys=True, default=str)
        if key in seen:
            skipped.append(f"{label}: the same as an earlier one within the current search space")
            continue
        seen.add(key)
        queued.append(QueuedTrial(fitted, {WARM_START_ATTR: f"{source} {label}"}))
        log.info("Warm start: queued %s of %s: %s%s", label, source, fitted,
                 f" (left to the sampler or overridden: {'; '.join(notes)})" if notes else "")
    return queued, skipped


def _task_of(folder: Path) -> str | None:
    try:
        info = read_model_info(folder)
    except UnitRefineError:
        return None
    task = info.get("task")
    return task.get("name") if isinstance(task, dict) else None


def queued_trials(
    space: SearchSpace, search: SearchConfig, task: str, tracking_uri: str, resolve: Callable[[str], Path]
) -> list[QueuedTrial]:
    """What a new study runs first: the warm-start configurations (:func:`warm_start_trials`, same parameters),
    then (``search.enqueue_defaults``) every classifier at middle-of-range settings."""
    defaults = [QueuedTrial(dict(p)) for p in space.fixed_trials()] if search.enqueue_defaults else []
    return [*warm_start_trials(space, search, task, tracking_uri, resolve), *defaults]
