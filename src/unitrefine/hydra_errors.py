"""Hydra's composition errors (bad override syntax, unknown keys or config options, ``+`` misuse) in the user's terms.

Hydra raises these while it composes the configuration, before any of our code sees it; each message here
names the override as typed, the key or option, what is expected and the closest known key or option.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigIndexError, ConfigKeyError, OmegaConfBaseException

from unitrefine.config_check import did_you_mean, unwrap_optional

#: How an override is written, shown after a syntax error.
SYNTAX = ("write key=value (e.g. search.n_trials=20), a list as key=[a,b], and quote a value with spaces, commas "
          "or brackets: key='a, b'. +key=value adds a key, ~key removes one")


def explain_yaml_error(exc: yaml.YAMLError, conf_dir: Path) -> str:
    """A config file that is not valid YAML: which file, where, and what the parser expected."""
    mark = getattr(exc, "problem_mark", None)
    name = Path(mark.name) if mark is not None else None
    where = str(name.relative_to(conf_dir.parent)) if name and name.is_relative_to(conf_dir.parent) else str(name)
    at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"The config file {where} is not valid YAML{at}: {problem}. Fix its syntax (indentation, brackets, quotes)."


def explain_composition_error(
    exc: HydraException, overrides: Sequence[str], config_name: str, conf_dir: Path, schema: type | None = None
) -> str:
    """The message for an error Hydra raised while composing ``conf/<config_name>.yaml`` with ``overrides``.

    Parameters
    ----------
    exc : HydraException
        What Hydra raised.
    overrides : sequence of str
        The command-line overrides, as typed.
    config_name : str
        The primary config, also the command's name.
    conf_dir : Path
        The config directory.
    schema : dataclass type, optional
        The configuration's schema, for the settings no YAML file sets and the did-you-mean of keys.

    Returns
    -------
    str
    """
    text = str(exc)
    help_hint = f" See python -m unitrefine.{config_name} --help."
    if isinstance(exc, OverrideParseException):
        return _bad_syntax(exc.override, exc.message) + help_hint
    if isinstance(exc, MissingConfigException) and exc.options is not None:
        return _missing_option(exc, overrides, config_name)
    m = re.search(r"Could not override '(.+?)'\. No match in the defaults list", text)
    if m and (ov := _override_for(m[1], overrides)) != m[1]:
        return (f"'{ov}' replaces the {m[1]} chosen by conf/{config_name}.yaml, but it chooses none: add one with a "
                f"'+': +{ov.lstrip('+')}")
    cause = exc.__cause__
    unknown = isinstance(cause, (ConfigAttributeError, ConfigKeyError))
    if unknown and (m := re.search(r"Could not override '(.+?)'", text)):
        key = _dotted(cause.full_key) or m[1]
        return _unknown_key(key, _override_for(m[1], overrides), config_name, conf_dir, overrides, schema)
    if (m := re.search(r"Error merging override (.+)", text)) and isinstance(cause, OmegaConfBaseException):
        return _merge_error(m[1].strip(), cause)
    if m := re.search(r"Could not delete from config\. '(.+?)' does not exist", text):
        keys = _known_keys(config_name, conf_dir, overrides, schema)[0]
        return (f"'{_override_for(m[1], overrides)}' removes '{m[1]}', which is not in the configuration"
                f"{_suggest(m[1], keys)}.")
    if m := re.search(r"An item is already at '(.+?)'", text):
        ov = _override_for(m[1], overrides)
        return f"'{m[1]}' already exists, so '{ov}' cannot add it: drop the '+' to change it ({ov.lstrip('+')})."
    if m := re.search(r"Ambiguous value for argument '(.+?)'", text, re.S):
        key = m[1].split("=", 1)[0]
        return (f"The value of '{m[1]}' has a comma: write a list as {key}=[a,b], or quote text as {key}='a,b' "
                "(sweeping over values needs --multirun).")
    if m := re.search(r"(\S+) appears more than once in the final defaults list|Multiple values for (\S+?)\.", text):
        return _chosen_twice(m[1] or m[2], overrides, config_name)
    return _generic(exc, config_name) + help_hint


def _override_for(key: str, overrides: Sequence[str]) -> str:
    """The override as typed that names ``key`` (``key`` itself when none does)."""
    for ov in overrides:
        if ov.lstrip("+~").split("=", 1)[0] == key:
            return ov
    return key


def _dotted(full_key: Any) -> str:
    """OmegaConf's ``a.b[0].c`` as the user writes it in an override: ``a.b.0.c``."""
    return re.sub(r"\[(\d+)\]", r".\1", str(full_key or ""))


def _bad_syntax(override: str, message: str) -> str:
    """An override Hydra's grammar cannot read."""
    if "missing EQUAL" in message:
        return f"The argument '{override}' has no '=': write {override.lstrip('+')}=<value>. To write one: {SYNTAX}."
    detail = next((line for line in message.splitlines() if line and not line.startswith(("See ", "Error parsing"))),
                  "")
    return f"Cannot read the override '{override}' ({detail}). To write an override: {SYNTAX}."


def _missing_option(exc: MissingConfigException, overrides: Sequence[str], config_name: str) -> str:
    """An option of a config group that has no file, e.g. ``+experiment=smok``."""
    group, _, name = exc.missing_cfg_file.rpartition("/")
    label = group or "config"
    options = list(exc.options or [])
    where = ""
    if (m := re.match(r"In '(.+?)'", str(exc))) and m[1] != config_name and not any(
        ov.lstrip("+").split("=", 1) == [group, name] for ov in overrides
    ):
        where = f" It is named in conf/{m[1]}.yaml."
    choose = (f"choose one of: {', '.join(options)} (the files in conf/{group}/)" if options
               else f"conf/{group}/ is empty")
    return (f"There is no {label} '{name}' (no file conf/{exc.missing_cfg_file}.yaml){did_you_mean(name, options)}: "
            f"{choose}.{where}")


def _chosen_twice(group: str, overrides: Sequence[str], config_name: str) -> str:
    """A config group chosen twice: the same ``+group=`` given twice, or ``+group=`` for a group already chosen."""
    given = [ov for ov in overrides if ov.lstrip("+").split("=", 1)[0] == group]
    if len(given) > 1:
        return f"{group} is chosen more than once ({', '.join(given)}): give it once."
    ov = given[0] if given else f"+{group}=..."
    return (f"'{ov}' adds a second {group}, but one is already chosen (by conf/{config_name}.yaml or the experiment): "
            f"drop the '+' to replace it ({ov.lstrip('+')}).")


def _merge_error(override: str, cause: OmegaConfBaseException) -> str:
    """An override whose value does not fit the key: a list for a mapping, an item past a list's end, ..."""
    key = _dotted(getattr(cause, "full_key", None)) or override.lstrip("+~").split("=", 1)[0]
    head = f"Invalid configuration at key '{key}' (set in your command-line override '{override}'): "
    if isinstance(cause, ConfigIndexError):
        parent, _, index = key.rpartition(".")
        return head + f"the list '{parent}' has no item {index} (they count from 0); give all of it: {parent}=[...]."
    kind = getattr(cause, "object_type", None)
    if kind is list:
        return head + f"it is a list: give it as {key}=[a,b]."
    if kind is dict:
        return head + f"it is a mapping: give it as {key}={{name: value}}, or set one entry: {key}.<name>=<value>."
    return head + str(cause).splitlines()[0] + "."


def _unknown_key(
    key: str, override: str, config_name: str, conf_dir: Path, overrides: Sequence[str], schema: type | None
) -> str:
    """An override of a key the composed configuration does not have."""
    keys, settings, free = _known_keys(config_name, conf_dir, overrides, schema)
    parent = key.rpartition(".")[0]
    add = f"+{override.lstrip('+')}"
    head = f"Invalid configuration at key '{key}' (set in your command-line override '{override}'): "
    if key in settings:
        return head + f"none of the chosen YAML files sets it, so add it with a '+': {add}"
    if parent and parent in free:
        return head + f"it is a new entry of '{parent}', so add it with a '+': {add}"
    if not parent and schema is None:
        options = sorted(k for k in keys if "." not in k)
        return (head + f"{config_name} has no such option{did_you_mean(key, options)}; the options are: "
                f"{', '.join(options)}. See python -m unitrefine.{config_name} --help.")
    return head + f"there is no such setting{_suggest(key, keys | settings)}."


def _suggest(key: str, keys: set[str]) -> str:
    """The closest known key: among the siblings when the parent exists, else among every dotted key."""
    parent, _, last = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
    if siblings and (parent in keys or not parent):
        close = difflib.get_close_matches(last, sorted(siblings), n=1)
        hint = f" (did you mean {siblings[close[0]]}?)" if close else ""
        where = f"under '{parent}'" if parent else "at the top level"
        return f"{hint}; the settings {where} are: {', '.join(sorted(siblings))}"
    return did_you_mean(key, keys)


def _known_keys(
    config_name: str, conf_dir: Path, overrides: Sequence[str], schema: type | None
) -> tuple[set[str], set[str], set[str]]:
    """The dotted keys of the configuration composed without the key overrides, the schema's settings, and the
    keys whose values are free-form mappings (new entries allowed)."""
    from hydra import compose, initialize_config_dir

    groups = [ov for ov in overrides if "=" in ov and (conf_dir / ov.lstrip("+").split("=", 1)[0]).is_dir()]
    cfg: Any = {}
    for attempt in (groups, []):
        try:
            with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
                cfg = compose(config_name=config_name, overrides=list(attempt))
            break
        except (HydraException, OmegaConfBaseException):
            continue
    keys = set(_flatten(OmegaConf.to_container(cfg) if OmegaConf.is_config(cfg) else cfg))
    settings: set[str] = set()
    free: set[str] = set()
    if schema is not None:
        _schema_keys(schema, "", settings, free)
    free |= {k for k in keys if k.startswith(tuple(f"{f}." for f in free))}
    return keys, settings, free


def _flatten(cfg: Any, prefix: str = "") -> list[str]:
    """The dotted keys of nested mappings and lists (list items by index, as in overrides)."""
    items = cfg.items() if isinstance(cfg, Mapping) else enumerate(cfg) if isinstance(cfg, Sequence) and not isinstance(
        cfg, str) else []
    out = []
    for k, v in items:
        out.append(f"{prefix}{k}")
        out += _flatten(v, f"{prefix}{k}.")
    return out


def _schema_keys(schema: type, prefix: str, settings: set[str], free: set[str]) -> None:
    """Collect the dotted keys of a dataclass schema, and those of its free-form mappings."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        settings.add(key)
        inner, _ = unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(inner):
            _schema_keys(inner, f"{key}.", settings, free)
        elif inner is Any or typing.get_origin(inner) is dict:
            free.add(key)


def _generic(exc: HydraException, config_name: str) -> str:
    """Hydra's message without its config search path and links."""
    text = re.sub(r"^In '(.+?)':", r"In conf/\1.yaml:", str(exc).split("Config search path")[0])
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("See https://")]
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException):
        lines.append(str(cause).splitlines()[0])
    return f"Could not compose the {config_name} configuration: {' '.join(lines).rstrip('.')}."
