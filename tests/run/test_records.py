"""The records the stages of a run hand each other: a searched study's ranking and the exporter's tracker."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import make_config, write_recording
from mlflow.tracking import MlflowClient

from unitrefine.run import stages
from unitrefine.run.records import Exporter
from unitrefine.search.outcomes import TrialOutcome
from unitrefine.search.study import record_stopped_by_timeout
from unitrefine.tracking.tracker import NullTracker, Tracker, default_tracking_uri

N_TRIALS = 3


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project folder of the module's run."""
    return tmp_path_factory.mktemp("records")


@pytest.fixture(scope="module")
def exporter(root: Path) -> Iterator[Exporter]:
    """The search stage of one tiny tracked run (three trials), as the export stages receive it."""
    recordings = [{"id": f"rec{i}", **write_recording(root / "data" / f"rec{i}", n_units=40, seed=200 + i)}
                  for i in range(3)]
    cfg = make_config(root, recordings, [f"search.n_trials={N_TRIALS}", "search.n_jobs=1", "cv.n_splits=3"])
    data = stages.split(cfg, stages.load(cfg))
    found = stages.search(cfg, data, stages.describe_run(cfg, data))
    assert found is not None
    yield found
    with found.finalizer:  # releases the study's finalize lock
        pass
    found.tracker.end_parent("FINISHED")


def outcome(number: int, state: str, value: float | None) -> TrialOutcome:
    return TrialOutcome(study="s", number=number, state=state, value=value)


def test_searched_holds_the_studys_trials_by_number(exporter: Exporter) -> None:
    searched = exporter.searched
    study = searched.study
    assert [t.number for t in searched.trials] == list(range(N_TRIALS))
    assert [(t.state, t.value, t.params) for t in searched.trials] == [
        (t.state.name.lower(), t.value, t.params) for t in study.trials]
    assert searched.counts["complete"] == sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_best_is_optunas_best_trial_and_ranked_is_every_complete_trial_best_first(exporter: Exporter) -> None:
    searched = exporter.searched
    study = searched.study
    assert (searched.best.number, searched.best.value) == (study.best_trial.number, study.best_value)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    expected = sorted(complete, key=lambda t: (-t.value, t.number))
    assert [(t.number, t.value) for t in searched.ranked] == [(t.number, t.value) for t in expected]
    assert len(searched.ranked) == searched.counts["complete"] > 0


def test_ranked_orders_ties_by_number_and_ignores_trials_without_a_complete_score(exporter: Exporter) -> None:
    trials = (
        outcome(0, "complete", 0.7),
        outcome(1, "pruned", 0.99),  # a pruned trial's last reported score does not count
        outcome(2, "complete", 0.9),
        outcome(3, "fail", None),
        outcome(4, "complete", 0.9),
        outcome(5, "running", None),
        outcome(6, "complete", None),
        outcome(7, "complete", 0.95),
        outcome(8, "waiting", None),
        outcome(9, "complete", -0.1),
    )
    searched = dataclasses.replace(exporter.searched, trials=trials[::-1])  # the order given does not matter
    assert [(t.number, t.value) for t in searched.ranked] == [(7, 0.95), (2, 0.9), (4, 0.9), (0, 0.7), (9, -0.1)]
    assert searched.best is searched.ranked[0] and searched.best.number == 7


def test_nothing_ranks_when_no_trial_completed(exporter: Exporter) -> None:
    trials = (outcome(0, "fail", None), outcome(1, "pruned", 0.8), outcome(2, "running", None))
    assert dataclasses.replace(exporter.searched, trials=trials).ranked == []


def test_stopped_by_timeout_is_what_the_study_recorded(exporter: Exporter) -> None:
    assert exporter.searched.stopped_by_timeout is False  # no timeout_s: the budget ended the search
    study = optuna.create_study(study_name="capped", direction="maximize")
    capped = dataclasses.replace(exporter.searched, study=study)
    assert capped.stopped_by_timeout is False
    record_stopped_by_timeout(study, True)
    assert capped.stopped_by_timeout is True


def test_exporter_tracker_is_the_sessions_mlflow_tracker(root: Path, exporter: Exporter) -> None:
    tracker = exporter.tracker
    assert tracker is exporter.session.tracker and isinstance(tracker, Tracker)
    assert tracker.uri == default_tracking_uri(root) == f"sqlite:///{root.resolve() / 'mlruns' / 'mlflow.db'}"
    assert tracker.parent_id == exporter.session.run_id and len(tracker.parent_id) == 32
    client = MlflowClient(tracker.uri)
    assert tracker.experiment_id == client.get_experiment_by_name("smoke").experiment_id
    parent = client.get_run(tracker.parent_id)
    assert parent.data.tags["unitrefine.search.study"] == exporter.searched.study.study_name
    assert tracker.logged_trials(exporter.searched.study.study_name) == set(range(N_TRIALS))


def test_exporter_tracker_is_the_null_tracker_when_tracking_is_off(exporter: Exporter) -> None:
    null = NullTracker()
    off = dataclasses.replace(exporter, session=dataclasses.replace(exporter.session, tracker=null))
    assert off.tracker is null and off.tracker.uri is None and off.tracker.enabled is False
    assert exporter.tracker is not null  # the original exporter keeps its own session


def test_records_are_frozen(exporter: Exporter) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        exporter.searched.trials = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        exporter.session = exporter.session  # type: ignore[misc]
    assert len(exporter.searched.trials) == N_TRIALS
