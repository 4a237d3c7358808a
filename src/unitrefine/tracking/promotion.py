"""The registry side of ``python -m unitrefine.promote``: which versions hold the aliases, and recording a decision."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from unitrefine.tracking.tracker import Tracker


def alias_versions(tracker: Tracker, name: str, aliases: tuple[str, ...]) -> dict[str, str | None]:
    """The version of registered model ``name`` each alias points to (None: no such alias or model)."""
    from mlflow.exceptions import MlflowException

    out: dict[str, str | None] = {}
    for alias in aliases:
        try:
            out[alias] = str(tracker.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            out[alias] = None
    return out


def download_version(tracker: Tracker, name: str, version: str, workdir: Path) -> Path:
    """The model folder of version ``version`` of ``name``, downloaded under ``workdir``."""
    run_id = tracker.client.get_model_version(name, version).run_id
    return tracker.download_model_folder(run_id, workdir / f"v{version}")


def record_decision(tracker: Tracker, name: str, tags: dict[str, str], metrics: dict[str, float],
                    version_tags: dict[str, dict[str, str]], champion: str | None) -> None:
    """Log a promotion as an MLflow run of the experiment, tag the versions and, when ``champion`` is given, point
    the ``champion`` alias at it.

    Parameters
    ----------
    tags, metrics : dict
        The promotion run's tags and metrics.
    version_tags : dict
        Version -> tags to set on it.
    champion : str or None
        The version that becomes the champion (None: the alias does not move).
    """
    import mlflow

    with mlflow.start_run(experiment_id=tracker.experiment_id, run_name=f"promote-{dt.datetime.now():%Y%m%d-%H%M%S}",
                          tags=tags):
        mlflow.log_metrics(metrics)
    for version, vtags in version_tags.items():
        for key, value in vtags.items():
            tracker.client.set_model_version_tag(name, version, key, value)
    if champion is not None:
        tracker.client.set_registered_model_alias(name, "champion", champion)
