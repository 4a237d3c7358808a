"""Command line: ``python -m unitrefine.recreate source=<folder | run id | models:/name@alias> [output=<folder>]``.

Re-trains a recorded model from its recorded configuration and checks it against the record (see
:mod:`unitrefine.recreation`). Exit status: 0 identical, 3 the re-created model differs, 4 refused because the
data changed (nothing trained), 2 any other user error. Options are in ``conf/recreate.yaml``.
"""

from __future__ import annotations

from unitrefine.process import prepare_command_process

prepare_command_process()

import logging  # noqa: E402
import sys  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from unitrefine.config import CONF_DIR  # noqa: E402
from unitrefine.errors import UnitRefineError, is_interrupt  # noqa: E402

log = logging.getLogger("unitrefine")

#: Exit status when the re-created model differs from the recorded one.
EXIT_DIFFERS = 3
#: Exit status when the recorded data changed and nothing was trained.
EXIT_DATA_CHANGED = 4


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="recreate")
def main(cfg: DictConfig) -> None:
    """Validate the options, re-create and compare; exit 0 (identical), 3 (differs), 4 (data changed) or 2."""
    import optuna

    from unitrefine.recreation import DataChanged, parse_recreate_config, recreate

    # The progress bar and our log report each trial (as in unitrefine.train).
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        options = parse_recreate_config(cfg)
        report = recreate(options.source, options.output, tracking_uri=options.tracking_uri,
                          tolerance=options.tolerance)
    except DataChanged as exc:
        log.error("%s", exc)
        sys.exit(EXIT_DATA_CHANGED)
    except UnitRefineError as exc:
        log.error("%s", exc)
        sys.exit(2)
    except BaseException as exc:  # a Ctrl-C, or an error raised while handling one (see is_interrupt)
        if not is_interrupt(exc):
            raise
        log.error("Interrupted: nothing recorded was changed.")
        sys.exit(130)
    if not report.identical:
        sys.exit(EXIT_DIFFERS)


if __name__ == "__main__":
    main()
