"""Command line: ``python -m unitrefine.suggest model=<folder | models:/name@alias> data=<...> n=<k> output=<csv>``.

Ranks the units a curator should label next (uncertainty sampling, spread across recordings). Options are
in ``conf/suggest.yaml``; the logic is :mod:`unitrefine.apply.active`.
"""

from __future__ import annotations

from unitrefine.process import prepare_command_process

prepare_command_process()

import logging  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from unitrefine.cli import run_command  # noqa: E402
from unitrefine.config import CONF_DIR  # noqa: E402
from unitrefine.errors import command_exits  # noqa: E402

log = logging.getLogger("unitrefine")


def main() -> None:
    """``python -m unitrefine.suggest``: ``--help``, configuration errors as one message (exit 2), then the command."""
    run_command("suggest", _hydra_main)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="suggest")
def _hydra_main(cfg: DictConfig) -> None:
    """Validate the options and suggest; user errors end with a message and exit status 2."""
    from unitrefine.apply.active import parse_suggest_config, suggest

    with command_exits():
        suggest(parse_suggest_config(cfg))


if __name__ == "__main__":
    main()
