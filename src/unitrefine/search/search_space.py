"""Search spaces from YAML, validated against the allowlist and sampled with Optuna.

A space maps each pipeline slot (``imputer``, ``scaler``, ``resampler``, ``classifier``) to the allowed
choices and each choice's parameters. A parameter is a fixed value (``class_weight: balanced``), a list
of categorical choices (``max_depth: [null, 8, 16]``) or a range (``C: {low: 1.0e-3, high: 100.0, log: true}``;
integers when both ends are integers, ``step`` optional). Optuna names are namespaced by the choice:
``classifier`` = ``random_forest`` and ``random_forest.max_depth`` = 8.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from unitrefine.errors import UnitRefineError
from unitrefine.search.estimators import GROUPS, REGISTRY, Component

_SCALAR = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One hyperparameter: fixed, categorical, or an int/float range."""

    kind: str
    value: Any = None
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    def suggest(self, trial: optuna.Trial, key: str) -> Any:
        """Draw this parameter in ``trial`` under the Optuna name ``key``."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return trial.suggest_categorical(key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(key, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class Choice:
    """A chosen component and its parameters."""

    name: str
    params: dict[str, Any]


#: slot -> chosen component
PipelineSpec = dict[str, Choice]


@dataclass(frozen=True)
class SearchSpace:
    """Validated space: slot -> choice name -> parameter name -> :class:`Param`."""

    slots: dict[str, dict[str, dict[str, Param]]]

    def sample(self, trial: optuna.Trial) -> PipelineSpec:
        """Sample a pipeline: first each slot's choice, then that choice's parameters."""
        spec: PipelineSpec = {}
        for slot, choices in self.slots.items():
            name = trial.suggest_categorical(slot, list(choices))
            spec[slot] = Choice(name, {p: param.suggest(trial, f"{name}.{p}") for p, param in choices[name].items()})
        return spec

    def spec_from_params(self, params: Mapping[str, Any]) -> PipelineSpec:
        """Rebuild the pipeline of a finished trial from its Optuna parameters."""
        spec: PipelineSpec = {}
        for slot, choices in self.slots.items():
            name = params[slot]
            spec[slot] = Choice(
                name,
                {
                    p: (param.value if param.kind == "fixed" else params[f"{name}.{p}"])
                    for p, param in choices[name].items()
                },
            )
        return spec

    def partial_spec(self, params: Mapping[str, Any]) -> PipelineSpec:
        """The pipeline of a trial's parameters, or ``{}`` when they are incomplete (a trial stopped while its
        parameters were drawn: the slot was chosen, its component's parameters not yet)."""
        try:
            return self.spec_from_params(params)
        except KeyError:
            return {}

    def fixed_trials(self) -> list[dict[str, Any]]:
        """One Optuna parameter set per classifier with everything at its middle/first value.

        Enqueued before the sampler takes over, so that every classifier is tried at least once.
        """
        trials = []
        for name in self.slots["classifier"]:
            chosen = {slot: next(iter(choices)) for slot, choices in self.slots.items()}
            chosen["classifier"] = name
            params: dict[str, Any] = dict(chosen)
            for slot, choice in chosen.items():
                for p, param in self.slots[slot][choice].items():
                    if param.kind != "fixed":
                        params[f"{choice}.{p}"] = _middle(param)
            trials.append(params)
        return trials


def _middle(param: Param) -> Any:
    if param.kind == "categorical":
        return param.choices[0]
    if param.log:
        mid = (param.low * param.high) ** 0.5
    else:
        mid = (param.low + param.high) / 2
    if param.kind == "int":
        step = int(param.step or 1)
        return int(param.low) + (int(round(mid)) - int(param.low)) // step * step
    if param.step:
        return param.low + round((mid - param.low) / param.step) * param.step
    return mid


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parse_param(where: str, raw: Any) -> Param:
    if isinstance(raw, _SCALAR):
        return Param("fixed", value=raw)
    if isinstance(raw, (list, tuple)):
        if not raw or not all(isinstance(v, _SCALAR) for v in raw):
            raise UnitRefineError(f"{where}: a choice list must be a non-empty list of plain values (got {raw!r}).")
        return Param("categorical", choices=tuple(raw))
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"low", "high", "log", "step"}
        if unknown or "low" not in raw or "high" not in raw:
            raise UnitRefineError(
                f"{where}: a range is {{low: ..., high: ..., log: false, step: null}} (got {dict(raw)!r})."
            )
        low, high, log, step = raw["low"], raw["high"], raw.get("log", False), raw.get("step")
        if not all(_is_number(v) and math.isfinite(v) for v in (low, high)):
            raise UnitRefineError(
                f"{where}: low and high must be finite numbers (got {low!r}, {high!r}); write 1.0e-3, not 1e-3."
            )
        if not isinstance(log, bool):
            raise UnitRefineError(f"{where}: log must be true or false (got {log!r}).")
        if step is not None and not (_is_number(step) and step > 0):
            raise UnitRefineError(f"{where}: step must be a positive number (got {step!r}).")
        if low >= high:
            raise UnitRefineError(f"{where}: low ({low}) must be below high ({high}).")
        if log and low <= 0:
            raise UnitRefineError(f"{where}: a log range needs low > 0 (got {low}).")
        if log and step is not None:
            raise UnitRefineError(f"{where}: a range cannot have both log and step.")
        integral = isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int))
        kind = "int" if integral else "float"
        return Param(kind, low=low, high=high, log=log, step=step)
    raise UnitRefineError(f"{where}: cannot read {raw!r} as a value, a choice list or a range.")


def parse_search_space(raw: Mapping[str, Any]) -> SearchSpace:
    """Validate a search space against the allowlist.

    Parameters
    ----------
    raw : mapping
        ``{slot: {choice: {param: spec}}}`` as loaded from ``conf/search_space/*.yaml``.

    Returns
    -------
    SearchSpace

    Raises
    ------
    UnitRefineError
        For an unknown slot, component or parameter, or a malformed range.
    """
    unknown_slots = set(raw) - set(GROUPS)
    if unknown_slots:
        raise UnitRefineError(f"search_space: unknown slots {sorted(unknown_slots)}; the slots are {list(GROUPS)}.")
    slots: dict[str, dict[str, dict[str, Param]]] = {}
    for slot in GROUPS:
        choices = raw.get(slot)
        if not choices:
            raise UnitRefineError(f"search_space.{slot}: list at least one of {sorted(REGISTRY[slot])}.")
        if not isinstance(choices, Mapping):
            raise UnitRefineError(
                f"search_space.{slot}: expected a mapping of choices to parameters, e.g. {{random_forest: {{}}}}; "
                f"got {choices!r}."
            )
        slots[slot] = {}
        for name, params in choices.items():
            where = f"search_space.{slot}.{name}"
            if name not in REGISTRY[slot]:
                raise UnitRefineError(
                    f"{where}: '{name}' is not an allowed {slot}; choose from {sorted(REGISTRY[slot])}."
                )
            component: Component = REGISTRY[slot][name]
            params = params or {}
            if not isinstance(params, Mapping):
                raise UnitRefineError(f"{where}: expected a mapping of parameters (or {{}}), got {params!r}.")
            allowed = component.parameter_names()
            bad = sorted(set(params) - allowed)
            if bad:
                raise UnitRefineError(
                    f"{where}: unknown parameters {bad}. {name} accepts {sorted(allowed) or 'none'}."
                )
            slots[slot][name] = {p: _parse_param(f"{where}.{p}", v) for p, v in params.items()}
    return SearchSpace(slots)
