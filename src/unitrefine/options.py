"""The options of the commands that are not training (``predict``, ``suggest``, ``merge_review``, ``recreate``)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from unitrefine.errors import UnitRefineError

#: How ``predict`` and ``suggest`` are told which model to apply to which units.
MODEL_AND_DATA = "model=<folder or models:/name@alias> data=<csv, folder of csvs, or analyzer folder>"


def command_options(
    cfg: DictConfig | dict[str, Any], schema: type, command: str, required: Sequence[str], usage: str
) -> dict[str, Any]:
    """The options given to ``python -m unitrefine.<command>``, checked against the fields of ``schema``.

    Parameters
    ----------
    cfg : DictConfig or dict
        What Hydra composed (its own ``hydra`` key is dropped).
    schema : dataclass type
        The command's options.
    command : str
        The command's name, for the messages.
    required : sequence of str
        Options that must be set.
    usage : str
        The command's arguments, shown when a required option is missing.

    Raises
    ------
    UnitRefineError
        An unknown option (with the closest known one), or a required option not set.
    """
    raw = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    known = sorted(schema.__dataclass_fields__)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        hints = [f"{k} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(k, known, n=1)) else k
                 for k in unknown]
        raise UnitRefineError(f"Unknown {command} option(s): {', '.join(hints)}. The options are {known}.")
    missing = [k for k in required if raw.get(k) in (None, "", "???")]
    if missing:
        raise UnitRefineError(f"Set {', '.join(f'{k}=...' for k in missing)}: python -m unitrefine.{command} {usage}")
    return raw
