"""Command line: ``python -m unitrefine.merge_review predictions=<csv> review=<Phy folder | labels csv> output=<csv>``.

The final curated labels: the curator's where they reviewed a unit, the model's elsewhere (``label_source``),
and how often the model agreed with the reviewed units. Options are in ``conf/merge_review.yaml``; the logic
is :mod:`unitrefine.apply.curated`.
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
    """``python -m unitrefine.merge_review``: ``--help``, configuration errors as one message (exit 2), then merging."""
    run_command("merge_review", _hydra_main)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="merge_review")
def _hydra_main(cfg: DictConfig) -> None:
    """Validate the options and merge; user errors end with a message and exit status 2."""
    from unitrefine.apply.curated import merge_review, parse_merge_review_config

    with command_exits():
        merge_review(parse_merge_review_config(cfg))


if __name__ == "__main__":
    main()
