"""What every command does before Hydra takes over: its own ``--help``, and Hydra's errors in the user's terms.

Hydra composes the configuration inside ``@hydra.main`` and prints its own errors (with a hint about
``HYDRA_FULL_ERROR`` and, for some, a stack trace) before any of our code runs. :func:`run_command` reads the
command line with Hydra's own parser, answers ``--help`` from :data:`unitrefine.options.HELP`, and composes the
configuration once with the same overrides through :func:`unitrefine.config.compose_config`, which turns every
composition error into a :class:`~unitrefine.errors.UnitRefineError`; only then does Hydra run the command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from unitrefine.errors import UnitRefineError, command_exits


def run_command(command: str, hydra_main: Callable[[], Any]) -> None:
    """Run ``python -m unitrefine.<command>``: ``--help``, then a check of the overrides, then Hydra.

    Parameters
    ----------
    command : str
        The command, also its primary config (``conf/<command>.yaml``).
    hydra_main : callable
        The command's ``@hydra.main`` function; it reads the command line (``sys.argv``) itself.

    Notes
    -----
    ``--hydra-help``, ``--info``, ``--shell-completion``, ``--multirun`` (its overrides are sweeps) and a
    different config (``--config-name/-path/-dir``) go to Hydra unchecked. ``--cfg job`` is checked, then shown.
    """
    from hydra._internal.utils import get_args_parser  # the parser @hydra.main itself uses (hydra-core 1.3)

    from unitrefine.options import format_help

    args, unknown = get_args_parser().parse_known_args(sys.argv[1:])
    if args.help:
        sys.stdout.write(format_help(command))
        sys.exit(0)
    with command_exits():
        flags = [arg for arg in unknown if arg.startswith("-")]
        if flags:
            raise UnitRefineError(
                f"Unknown flag(s) {' '.join(flags)} of python -m unitrefine.{command}: settings are given as "
                f"key=value. See python -m unitrefine.{command} --help."
            )
        if unknown:
            raise UnitRefineError(
                f"Give the settings together, before or after the flags: {' '.join(unknown)} came after a flag "
                f"that follows other settings (python -m unitrefine.{command} [--cfg job] key=value ...)."
            )
        if not _hydra_only(args):
            from unitrefine.config import compose_config

            compose_config(list(args.overrides), config_name=command)
    hydra_main()


def _hydra_only(args: Any) -> bool:
    """Hydra's own flags, whose overrides are not one configuration to check."""
    return bool(args.hydra_help or args.info or args.shell_completion or args.multirun or args.experimental_rerun
                or args.config_name or args.config_path or args.config_dir)
