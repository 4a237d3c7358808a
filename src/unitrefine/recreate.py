"""Command line: ``python -m unitrefine.recreate source=<folder | run id | models:/name@alias> [output=<folder>]``.

Re-trains a recorded model from its recorded configuration and checks it against the record (see
:mod:`unitrefine.run.recreation`). Exit status: 0 identical, 3 the re-created model differs, 4 refused because the
data changed (nothing trained), 2 any other user error. Options are in ``conf/recreate.yaml``.
"""

from __future__ import annotations

from unitrefine.process import prepare_command_process

prepare_command_process()

import logging  # noqa: E402
import sys  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from unitrefine.cli import run_command  # noqa: E402
from unitrefine.config import CONF_DIR  # noqa: E402
from unitrefine.errors import command_exits  # noqa: E402

log = logging.getLogger("unitrefine")

#: Exit status when the re-created model differs from the recorded one (4: the data changed,
#: :class:`unitrefine.run.recreation.DataChanged`).
EXIT_DIFFERS = 3


def main() -> None:
    """``python -m unitrefine.recreate``: ``--help``, configuration errors as one message (exit 2), then the command."""
    run_command("recreate", _hydra_main)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="recreate")
def _hydra_main(cfg: DictConfig) -> None:
    """Validate the options, re-create and compare; exit 0 (identical), 3 (differs), 4 (data changed) or 2."""
    from unitrefine.run.recreation import parse_recreate_config, recreate
    from unitrefine.search.study import quiet_optuna

    quiet_optuna()
    with command_exits("Interrupted: nothing recorded was changed."):
        options = parse_recreate_config(cfg)
        report = recreate(options.source, options.output, tracking_uri=options.tracking_uri,
                          tolerance=options.tolerance)
    if not report.identical:
        sys.exit(EXIT_DIFFERS)


if __name__ == "__main__":
    main()
