"""MLflow tracking: one parent run per study, one nested run per trial, the model in the registry.

:class:`Tracker` writes a study's runs; :class:`NullTracker` stands in for it when tracking is off. What it writes
is made in the modules beside it: the trial runs (:mod:`~unitrefine.tracking.trial_runs`), the MLflow model
(:mod:`~unitrefine.tracking.mlmodel`), the experiment's runs view (:mod:`~unitrefine.tracking.runs_view`).
Read-only lookups are in :mod:`~unitrefine.tracking.lookups`, checks before any work in
:mod:`~unitrefine.tracking.store_checks`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from unitrefine.errors import is_interrupt
from unitrefine.search.outcomes import TrialOutcome
from unitrefine.tracking.lookups import download_run_folder
from unitrefine.tracking.mlmodel import log_model_folder
from unitrefine.tracking.runs_view import experiment_tags
from unitrefine.tracking.trial_runs import (
    MAX_PARAM,
    STUDY_TAG,
    TRIAL_NUMBER_TAG,
    RunWriter,
    ms,
    trial_run,
    write_trial_run,
)
from unitrefine.tracking.uploads import upload_folder

log = logging.getLogger(__name__)


def default_tracking_uri(root: Path) -> str:
    """``sqlite:///<root>/mlruns/mlflow.db``: the project's store, wherever the command is run from."""
    return f"sqlite:///{(root / 'mlruns' / 'mlflow.db').resolve()}"


def default_artifact_location(root: Path, experiment: str) -> str:
    """``file://<root>/mlruns/artifacts/<experiment>``: where a new experiment's artifacts go by default."""
    return (root / "mlruns" / "artifacts" / experiment).resolve().as_uri()


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}`` (lists are kept as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Tracker:
    """Logs a study to MLflow.

    Parameters
    ----------
    uri : str
        Tracking URI (e.g. ``sqlite:///.../mlruns/mlflow.db`` or ``http://127.0.0.1:5000``).
    experiment_name : str
        MLflow experiment; created with ``artifact_location`` if it does not exist.
    artifact_location : str or None
        Where the experiment's artifacts go (only used when creating the experiment).

    Notes
    -----
    The experiment gets the tags of :func:`~unitrefine.tracking.runs_view.experiment_tags` (an existing one, those
    it lacks: a kind or a view someone set is kept): the kind ``custom_model_development`` and the saved runs view
    ``unitrefine: cv_score``, which :func:`~unitrefine.tracking.runs_view.runs_page`'s address opens in the MLflow UI.

    It is the search's :class:`~unitrefine.search.outcomes.TrialLog`.
    """

    enabled = True

    def __init__(self, uri: str, experiment_name: str, artifact_location: str | None) -> None:
        self.uri = uri
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment_name)
        tags = experiment_tags()
        if exp is None:
            self.experiment_id = self.client.create_experiment(
                experiment_name, artifact_location=artifact_location, tags=tags
            )
        else:
            self.experiment_id = exp.experiment_id
            for key, value in tags.items():
                if key not in exp.tags:
                    self.client.set_experiment_tag(self.experiment_id, key, value)
        self.parent_id: str | None = None
        self._writer = RunWriter(lambda run: write_trial_run(self.client, self.experiment_id, run))

    def flush(self) -> None:
        """Wait until every trial run :meth:`log_trial` queued is in the store.

        Raises
        ------
        Exception
            The MLflow error of a trial run that could not be written.
        """
        self._writer.flush()

    @contextmanager
    def parent_run(self, run_name: str, tags: Mapping[str, str], run_id: str | None = None) -> Iterator[str]:
        """Start the study's parent run, or resume ``run_id``; it ends FINISHED, KILLED (Ctrl-C) or FAILED."""
        self.flush()
        if run_id:
            run = mlflow.start_run(run_id=run_id)
        else:
            run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name, tags=dict(tags))
        self.parent_id = run.info.run_id
        status = "FAILED"
        try:
            yield self.parent_id
            status = "FINISHED"
        except BaseException as exc:
            if is_interrupt(exc):
                status = "KILLED"
            raise
        finally:
            mlflow.end_run(status=status)

    def create_parent(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        """Create the study's parent run (status RUNNING) with its tags and parameters; return its id.

        Workers of a study share it: they log their trials under it without making it their active run.
        """
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        self.parent_id = run.info.run_id
        self.log_params(params)
        return self.parent_id

    def attach(self, run_id: str) -> bool:
        """Log trials under the existing parent run ``run_id``; False if it is gone."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        if run.info.lifecycle_stage != "active" or run.info.experiment_id != self.experiment_id:
            return False
        self.parent_id = run_id
        return True

    def set_running(self) -> None:
        """Mark the parent run RUNNING again (a resumed study whose run was KILLED or FINISHED)."""
        if self.parent_id and self.client.get_run(self.parent_id).info.status != "RUNNING":
            self.client.update_run(self.parent_id, status="RUNNING")

    def end_parent(self, status: str) -> None:
        """End the parent run with ``status`` (``FINISHED``, ``KILLED`` or ``FAILED``), its trials written first."""
        self.flush()
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status)

    def logged_trials(self, study_name: str) -> set[int]:
        """The numbers of the trials of ``study_name`` that have a nested run."""
        self.flush()
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`{STUDY_TAG}` = '{study_name}'", max_results=50000
        )
        return {int(r.data.tags[TRIAL_NUMBER_TAG]) for r in runs if TRIAL_NUMBER_TAG in r.data.tags}

    def has_trial_run(self, study_name: str, number: int) -> bool:
        """Whether trial ``number`` of ``study_name`` already has a nested run."""
        self.flush()
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{TRIAL_NUMBER_TAG}` = '{number}'",
            max_results=1,
        )
        return bool(runs)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters of the parent run (flattened, values stringified)."""
        assert self.parent_id is not None
        items = [Param(k, str(v)[:MAX_PARAM]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.parent_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log scalar metrics of the parent run."""
        assert self.parent_id is not None
        now = ms(pd.Timestamp.now())
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.parent_id, metrics=items[i : i + 500])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tag the parent run."""
        assert self.parent_id is not None
        self.client.log_batch(self.parent_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        """Upload every file under ``folder`` to the parent run (:func:`unitrefine.tracking.uploads.upload_folder`)."""
        assert self.parent_id is not None
        upload_folder(self.client, self.parent_id, folder, artifact_path)

    def log_trial(
        self,
        trial: TrialOutcome,
        params: Mapping[str, Any],
        status: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record one finished trial as a nested run (:func:`unitrefine.tracking.trial_runs.trial_run`).

        ``status`` overrides the run status the trial's state maps to, and ``error`` its ``error`` tag
        (interrupted trials: ``KILLED``, and why). The run is written on a background thread
        (:class:`~unitrefine.tracking.trial_runs.RunWriter`): :meth:`flush` waits for it.
        """
        assert self.parent_id is not None
        self._writer.put(trial_run(self.parent_id, trial, params, status, error))

    def log_model(
        self,
        folder: Path,
        input_example: pd.DataFrame,
        trusted_types: list[str],
        pip_requirements: list[str],
        registered_name: str | None,
    ) -> str | None:
        """Make the run's uploaded model folder an MLflow model and register it
        (:func:`unitrefine.tracking.mlmodel.log_model_folder`); the registered version, or None when not registering.
        """
        assert self.parent_id is not None
        return log_model_folder(self.client, self.parent_id, folder, input_example, trusted_types, pip_requirements,
                                registered_name)

    def download_model_folder(self, run_id: str, destination: Path) -> Path:
        """Download a training run's model folder (:func:`~unitrefine.tracking.lookups.download_run_folder`)."""
        return download_run_folder(self.uri, run_id, destination)

    def gate(self, name: str, version: str, score: float, minimum: float, metric: str) -> bool:
        """Give a new version the alias ``challenger`` if ``score >= minimum``; tag the outcome either way.

        Returns
        -------
        bool
            Whether the version passed.
        """
        passed = score >= minimum
        self.client.set_model_version_tag(name, version, "gate.metric", metric)
        self.client.set_model_version_tag(name, version, "gate.score", f"{score:.4f}")
        self.client.set_model_version_tag(name, version, "gate.minimum", f"{minimum:.4f}")
        if passed:
            self.client.set_registered_model_alias(name, "challenger", version)
            self.client.set_model_version_tag(name, version, "gate", "passed")
        else:
            reason = f"{metric} {score:.4f} < registry.gate_min_score {minimum:.4f}"
            self.client.set_model_version_tag(name, version, "gate", f"failed: {reason}")
            log.warning("Model version %s did not pass the gate (%s): registered without an alias.", version, reason)
        return passed


class NullTracker:
    """Stands in for :class:`Tracker` when tracking is off (``tracking.enabled=false``): records nothing."""

    uri = None
    enabled = False

    @contextmanager
    def parent_run(self, run_name: str, tags: Mapping[str, str], run_id: str | None = None) -> Iterator[str]:
        """Yield an empty run id."""
        yield ""

    def create_parent(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        """Create nothing."""
        return ""

    def attach(self, run_id: str) -> bool:
        """Attach to nothing."""
        return True

    def set_running(self) -> None:
        """Do nothing."""

    def flush(self) -> None:
        """Nothing is queued."""

    def end_parent(self, status: str) -> None:
        """Do nothing."""

    def logged_trials(self, study_name: str) -> set[int]:
        """Nothing is recorded."""
        return set()

    def has_trial_run(self, study_name: str, number: int) -> bool:
        """Nothing is recorded."""
        return False

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Do nothing."""

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Do nothing."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Do nothing."""

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        """Do nothing."""

    def log_trial(
        self,
        trial: TrialOutcome,
        params: Mapping[str, Any],
        status: str | None = None,
        error: str | None = None,
    ) -> None:
        """Do nothing."""

    def log_model(
        self,
        folder: Path,
        input_example: pd.DataFrame,
        trusted_types: list[str],
        pip_requirements: list[str],
        registered_name: str | None,
    ) -> str | None:
        """Register nothing."""
        return None
