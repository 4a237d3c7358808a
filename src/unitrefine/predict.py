"""Command line: ``python -m unitrefine.predict model=<folder | models:/name@alias> data=<...> output=<csv>``.

``data`` is a metrics CSV, a folder of them, or a SortingAnalyzer folder; ``model=[a,b]`` runs a cascade
(noise vs neural, then SUA vs MUA). Options are in ``conf/predict.yaml``.
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
    """``python -m unitrefine.predict``: ``--help``, configuration errors as one message (exit 2), then the command."""
    run_command("predict", _hydra_main)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    """Validate the options and predict; user errors end with a message and exit status 2."""
    from unitrefine.apply.prediction import parse_predict_config, predict

    with command_exits():
        predict(parse_predict_config(cfg))


if __name__ == "__main__":
    main()
