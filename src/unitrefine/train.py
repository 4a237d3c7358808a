"""Command line: ``python -m unitrefine.train +experiment=mouse_v1 [overrides...]`` (``--help``: the main options)."""

from __future__ import annotations

from unitrefine.process import prepare_command_process

prepare_command_process()

import logging  # noqa: E402
import signal  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from unitrefine.cli import run_command  # noqa: E402
from unitrefine.config import CONF_DIR  # noqa: E402
from unitrefine.errors import command_exits  # noqa: E402

log = logging.getLogger("unitrefine")


def main() -> None:
    """``python -m unitrefine.train``: ``--help``, configuration errors as one message (exit 2), then training."""
    run_command("train", _hydra_main)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    """Validate the composed config and train; user errors end with a message and exit status 2."""
    from hydra.core.hydra_config import HydraConfig

    from unitrefine.config import config_origin, validate_config

    hydra_cfg = HydraConfig.get()
    origin = config_origin(list(hydra_cfg.overrides.task), dict(hydra_cfg.runtime.choices))
    with command_exits():
        train_cfg = validate_config(cfg, origin)  # before the heavy imports: a bad value fails in a second

    from unitrefine.run.training import train
    from unitrefine.search.study import quiet_optuna

    quiet_optuna()

    # A scheduler's SIGTERM (e.g. a cluster job's time limit) stops the search like Ctrl-C: running trials are
    # marked for retry and the study can be resumed.
    signal.signal(signal.SIGTERM, _interrupt)
    with command_exits("Interrupted. Run the same command again to resume the study."):
        train(train_cfg)


def _interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
