"""MLflow tracking: one parent run per study, one nested run per trial, the model in the registry.

This is the only module that talks to MLflow.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from unitrefine.errors import is_interrupt
from unitrefine.study import WARM_START_ATTR

log = logging.getLogger(__name__)

_RUN_STATUS = {
    optuna.trial.TrialState.COMPLETE: "FINISHED",
    optuna.trial.TrialState.PRUNED: "KILLED",
    optuna.trial.TrialState.FAIL: "FAILED",
}
_MAX_PARAM = 6000


def default_tracking_uri(root: Path) -> str:
    """``sqlite:///<root>/mlruns/mlflow.db``: the project's store, wherever the command is run from."""
    return f"sqlite:///{(root / 'mlruns' / 'mlflow.db').resolve()}"


def _ms(ts: Any) -> int | None:
    return None if ts is None else int(ts.timestamp() * 1000)


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


@dataclass(frozen=True)
class TrialRun:
    """What one trial's nested run holds, captured when the trial finishes."""

    name: str
    start_ms: int | None
    end_ms: int
    status: str
    tags: dict[str, str]
    metrics: list[Metric]
    params: list[Param]


class RunWriter:
    """Writes trial runs on one background thread, in the order they come, so that trials do not wait on the store.

    A nested run costs three MLflow calls; on a SQLite store each commit waits for the disk (tens of
    milliseconds), as long as a cheap trial. The writer overlaps that with the next trials. A failed write is
    kept and raised by the next :meth:`put` or :meth:`flush` (the runs after it are not written), so a broken
    store still stops the search.

    Parameters
    ----------
    write : callable
        Writes one :class:`TrialRun` (on the writer thread).
    """

    def __init__(self, write: Callable[[TrialRun], None]) -> None:
        self._write = write
        self._queue: queue.Queue[TrialRun] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._error: Exception | None = None

    def put(self, run: TrialRun) -> None:
        """Queue ``run`` for writing (the writer thread starts with the first run)."""
        self._raise()
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="unitrefine-mlflow-writer", daemon=True)
                self._thread.start()
        self._queue.put(run)

    def flush(self) -> None:
        """Wait until every queued run is written; raise the error of a failed write."""
        self._queue.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        while True:
            run = self._queue.get()
            try:
                if self._error is None:
                    self._write(run)
            except Exception as exc:  # kept for the search's thread, which raises it (put/flush)
                self._error = exc
            finally:
                self._queue.task_done()


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
    """

    def __init__(self, uri: str, experiment_name: str, artifact_location: str | None) -> None:
        self.uri = uri
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment_name)
        self.experiment_id = (
            exp.experiment_id
            if exp is not None
            else self.client.create_experiment(experiment_name, artifact_location=artifact_location)
        )
        self.parent_id: str | None = None
        self._writer = RunWriter(self._write_trial)

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
        """Terminate the parent run with ``status`` (``FINISHED``, ``KILLED`` or ``FAILED``), its trials written first."""
        self.flush()
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status)

    def logged_trials(self, study_name: str) -> set[int]:
        """The numbers of the trials of ``study_name`` that have a nested run."""
        self.flush()
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`optuna.study` = '{study_name}'", max_results=50000
        )
        return {int(r.data.tags["optuna.trial_number"]) for r in runs if "optuna.trial_number" in r.data.tags}

    def has_trial_run(self, study_name: str, number: int) -> bool:
        """Whether trial ``number`` of ``study_name`` already has a nested run."""
        self.flush()
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`optuna.study` = '{study_name}' and tags.`optuna.trial_number` = '{number}'",
            max_results=1,
        )
        return bool(runs)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters of the parent run (flattened, values stringified)."""
        assert self.parent_id is not None
        items = [Param(k, str(v)[:_MAX_PARAM]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.parent_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log scalar metrics of the parent run."""
        assert self.parent_id is not None
        now = _ms(pd.Timestamp.now())
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.parent_id, metrics=items[i : i + 500])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tag the parent run."""
        assert self.parent_id is not None
        self.client.log_batch(self.parent_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        """Upload every file under ``folder`` to the parent run."""
        assert self.parent_id is not None
        self.client.log_artifacts(self.parent_id, str(folder), artifact_path)

    def log_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        params: Mapping[str, Any],
        status: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record one finished trial as a nested run: parameters, fold scores, mean/std, duration and state.

        ``status`` overrides the run status the trial's state maps to, and ``error`` its ``error`` tag
        (interrupted trials: ``KILLED``, and why). The run is written on a background thread (:class:`RunWriter`):
        :meth:`flush` waits for it.
        """
        assert self.parent_id is not None
        metrics = []
        end = _ms(trial.datetime_complete) or _ms(pd.Timestamp.now())
        for k, score in enumerate(trial.user_attrs.get("fold_scores", [])):
            metrics.append(Metric("cv_fold_score", float(score), end, k))
        if trial.value is not None:
            metrics.append(Metric("cv_score", float(trial.value), end, 0))
        if "cv_std" in trial.user_attrs:
            metrics.append(Metric("cv_score_std", float(trial.user_attrs["cv_std"]), end, 0))
        if trial.duration is not None:
            metrics.append(Metric("duration_s", trial.duration.total_seconds(), end, 0))
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "optuna.study": study.study_name,
            "optuna.trial_number": str(trial.number),
            "optuna.state": trial.state.name.lower(),
        }
        if "worker" in trial.user_attrs:
            tags["unitrefine.worker"] = str(trial.user_attrs["worker"])
        if WARM_START_ATTR in trial.user_attrs:  # queued from a previous model (search.warm_start)
            tags[WARM_START_ATTR] = str(trial.user_attrs[WARM_START_ATTR])[:5000]
        if error or "error" in trial.user_attrs:
            tags["error"] = error or str(trial.user_attrs["error"])
        self._writer.put(TrialRun(
            name=f"trial-{trial.number:04d}", start_ms=_ms(trial.datetime_start), end_ms=end,
            status=status or _RUN_STATUS.get(trial.state, "FAILED"), tags=tags, metrics=metrics,
            params=[Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()],
        ))

    def _write_trial(self, run: TrialRun) -> None:
        """Create one finished nested run (on the writer thread)."""
        created = self.client.create_run(self.experiment_id, start_time=run.start_ms, tags=run.tags, run_name=run.name)
        self.client.log_batch(created.info.run_id, metrics=run.metrics, params=run.params)
        self.client.set_terminated(created.info.run_id, run.status, end_time=run.end_ms)

    def log_model(
        self,
        pipeline: Any,
        input_example: pd.DataFrame,
        trusted_types: list[str],
        pip_requirements: list[str],
        registered_name: str | None,
    ) -> str | None:
        """Log the exported pipeline (sklearn flavour, skops format) and register it.

        Returns
        -------
        str or None
            The registered model version, or None when not registering.
        """
        from mlflow.models import infer_signature

        signature = infer_signature(input_example, pipeline.predict_proba(input_example))
        info = mlflow.sklearn.log_model(
            sk_model=pipeline,
            name="model",
            serialization_format="skops",
            skops_trusted_types=trusted_types,
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements,
            registered_model_name=registered_name,
            pyfunc_predict_fn="predict_proba",
        )
        version = getattr(info, "registered_model_version", None)
        return None if version is None else str(version)


    def download_model_folder(self, run_id: str, destination: Path) -> Path:
        """Download a training run's exported model folder (its ``model_folder`` artifacts)."""
        destination.mkdir(parents=True, exist_ok=True)
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="model_folder", dst_path=str(destination), tracking_uri=self.uri
        )
        return Path(path)

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
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        params: Mapping[str, Any],
        status: str | None = None,
        error: str | None = None,
    ) -> None:
        """Do nothing."""

    def log_model(self, *args: Any, **kwargs: Any) -> str | None:
        """Register nothing."""
        return None
