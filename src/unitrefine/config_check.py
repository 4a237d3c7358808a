"""Shape and type checks of a composed configuration against a dataclass schema, in the user's terms.

OmegaConf reports the first mismatch with its internal node and class names ("AnyNode is not a ListConfig",
"str is not a subclass of DatasetConfig"); these checks walk the whole configuration first and name every
problem by its dotted key, the value given, what is expected and, for a mistyped key, the closest known one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode

#: OmegaConf's marker of a value that must be set.
MISSING_VALUE = "???"

#: (dotted key, what is wrong with it) pairs.
Problems = list[tuple[str, str]]

_SCALARS: dict[Any, tuple[str, Any]] = {
    int: ("a whole number", IntegerNode),
    float: ("a number", FloatNode),
    bool: ("true or false", BooleanNode),
    str: ("a single value", None),
}


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean <closest>?)`` when one of ``options`` is close to ``word``, else an empty string."""
    close = difflib.get_close_matches(word, sorted(set(options)), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def show(value: Any, limit: int = 80) -> str:
    """A value as the user would write it in YAML or an override (``'abc'``, ``[a, b]``, ``{k: v}``, ``null``)."""

    def inner(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{k}: {inner(x)}" for k, x in v.items()) + "}"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(inner(x) for x in v) + "]"
        return str(v)

    text = inner(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"'{text}'" if isinstance(value, str) else text


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def expected(tp: Any) -> str:
    """What a value of schema type ``tp`` looks like, in YAML terms."""
    inner, optional = unwrap_optional(tp)
    suffix = " or null" if optional else ""
    origin = typing.get_origin(inner)
    if dataclasses.is_dataclass(inner):
        names = [f.name for f in dataclasses.fields(inner)]
        return f"a mapping of settings ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}){suffix}"
    if origin is list:
        (item,) = typing.get_args(inner) or (Any,)
        if dataclasses.is_dataclass(item):
            names = [f.name for f in dataclasses.fields(item)][:3]
            return "a list of mappings such as [{" + ", ".join(f"{n}: ..." for n in names) + "}]" + suffix
        return f"a list such as [a,b]{suffix}"
    if origin is dict or inner is dict:
        return f"a mapping such as {{key: value}}{suffix}"
    if inner in _SCALARS:
        return _SCALARS[inner][0] + suffix
    return "a value"


def schema_problems(value: Any, tp: Any, key: str = "") -> Problems:
    """Every place where ``value`` (plain containers) does not fit the schema type ``tp``.

    Parameters
    ----------
    value : Any
        The configuration, as plain dicts/lists/scalars (``OmegaConf.to_container``).
    tp : type
        A dataclass, or a field type of one (``Optional[...]``, ``list[...]``, ``dict[str, ...]``, scalars, ``Any``).
    key : str
        The dotted key of ``value`` (empty at the top).

    Returns
    -------
    list of (str, str)
        The dotted key and what is wrong there.
    """
    if isinstance(value, str) and value == MISSING_VALUE:
        return [(key, f"it has no value (???): set it, e.g. {key}=<value>")]
    inner, optional = unwrap_optional(tp)
    if inner is Any or (isinstance(value, str) and "${" in value):
        return []  # free-form, or an interpolation OmegaConf resolves (and reports) itself
    if value is None:
        return [] if optional else [(key, f"expected {expected(tp)}, got null")]
    if dataclasses.is_dataclass(inner):
        return _mapping_problems(value, inner, key) if isinstance(value, Mapping) else [_mismatch(key, value, tp)]
    origin = typing.get_origin(inner)
    if origin is list:
        if not isinstance(value, list):
            return [_mismatch(key, value, tp)]
        (item,) = typing.get_args(inner) or (Any,)
        return [p for i, v in enumerate(value) for p in schema_problems(v, item, f"{key}.{i}")]
    if origin is dict or inner is dict:
        if not isinstance(value, Mapping):
            return [_mismatch(key, value, tp)]
        item = (typing.get_args(inner) or (str, Any))[1]
        return [p for k, v in value.items() for p in schema_problems(v, item, f"{key}.{k}")]
    return _scalar_problems(value, inner, key, tp)


def _mismatch(key: str, value: Any, tp: Any) -> tuple[str, str]:
    """A value of the wrong shape (a scalar for a list, text for a mapping, ...)."""
    hint = ""
    inner, _ = unwrap_optional(tp)
    if typing.get_origin(inner) is list and not isinstance(value, (Mapping, list)):
        hint = f"; for a list of one, write {key}=[{value if isinstance(value, str) else show(value)}]"
    return key, f"expected {expected(tp)}, got {show(value)}{hint}"


def _mapping_problems(value: Mapping[str, Any], schema: type, key: str) -> Problems:
    """Unknown keys (with the closest known one), required keys not set, and each known key's value."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    prefix = f"{key}." if key else ""
    problems: Problems = []
    for name in value:
        if name not in fields:
            known = ", ".join(fields)
            where = f"under '{key}'" if key else "at the top level"
            close = did_you_mean(str(name), fields).replace("mean ", f"mean {prefix}")
            problems.append((f"{prefix}{name}", f"there is no such setting{close}; the settings {where} are: {known}"))
    for name, f in fields.items():
        required = f.default == MISSING_VALUE and f.default_factory is dataclasses.MISSING
        if name in value:
            problems += schema_problems(value[name], hints[name], f"{prefix}{name}")
        elif required:
            problems.append((f"{prefix}{name}", f"it is required but not set (expected {expected(hints[name])})"))
    return problems


def _scalar_problems(value: Any, tp: Any, key: str, declared: Any) -> Problems:
    """A list or mapping where one value is expected, or a value OmegaConf cannot convert to the field's type."""
    if isinstance(value, (Mapping, list)):
        return [(key, f"expected {expected(declared)}, got {show(value)}")]
    node = _SCALARS.get(tp, (None, None))[1]
    if node is not None:
        try:
            node(value=value)
        except ValidationError:
            return [(key, f"expected {expected(declared)}, got {show(value)}")]
    return []


@dataclass(frozen=True)
class ConfigOrigin:
    """Where a composed configuration came from: the command-line overrides and the config files chosen.

    Parameters
    ----------
    overrides : sequence of str
        The command-line overrides, as typed.
    choices : mapping of str to str
        Config group -> chosen option (Hydra's ``runtime.choices``), e.g. ``{"experiment": "smoke"}``.
    config_name : str
        The primary config (``conf/<config_name>.yaml``).
    conf_dir : Path or None
        The config directory; ``None``: files are not looked into.
    """

    overrides: Sequence[str] = ()
    choices: Mapping[str, Any] = field(default_factory=dict)
    config_name: str = "train"
    conf_dir: Path | None = None

    def describe(self, key: str) -> str:
        """Which override or config file sets ``key`` (or one of its parents), as a phrase to append."""
        for override in self.overrides:
            name = override.lstrip("+~").split("=", 1)[0]
            if name in self.choices:
                continue  # a group option: the file it chooses sets the key
            if name == key or key.startswith(f"{name}.") or name.startswith(f"{key}."):
                return f"your command-line override '{override}'"
        group = key.split(".", 1)[0]
        for path, relative in self._files(group, key):
            try:
                found = OmegaConf.select(OmegaConf.load(path), relative, default=MISSING_VALUE) != MISSING_VALUE
            except (OmegaConfBaseException, OSError, ValueError):
                continue
            if found:
                return str(path.relative_to(self.conf_dir.parent)) if self.conf_dir else str(path)
        return "the YAML config or a command-line override"

    def _files(self, group: str, key: str) -> list[tuple[Path, str]]:
        """Config files that may set ``key``, highest precedence first, each with the key as written in it.

        An experiment file is global (``# @package _global_``), a group's option file holds the group's keys.
        """
        if self.conf_dir is None:
            return []
        files = []
        if self.choices.get("experiment"):
            files.append((self.conf_dir / "experiment" / f"{self.choices['experiment']}.yaml", key))
        files.append((self.conf_dir / f"{self.config_name}.yaml", key))
        if self.choices.get(group) and "." in key:
            files.append((self.conf_dir / group / f"{self.choices[group]}.yaml", key.split(".", 1)[1]))
        return [(p, k) for p, k in files if p.is_file()]


def format_problems(problems: Problems, origin: ConfigOrigin | None) -> str:
    """``Invalid configuration at key '<key>': <problem>. Set in <where>.``, one line per problem."""
    lines = []
    for key, problem in problems:
        where = f" (set in {origin.describe(key)})" if origin is not None else ""
        lines.append(f"at key '{key}'{where}: {problem}")
    if len(lines) == 1:
        return f"Invalid configuration {lines[0]}."
    return "Invalid configuration:\n  - " + "\n  - ".join(lines)
