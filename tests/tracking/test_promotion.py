"""The registry side of promotion (:mod:`unitrefine.tracking.promotion`, and the gate of
:meth:`unitrefine.tracking.tracker.Tracker.gate` that gives the ``challenger`` alias) on a real SQLite registry: which
versions hold the aliases, downloading a version's model folder, and recording a decision."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from unitrefine.tracking.lookups import MODEL_FOLDER
from unitrefine.tracking.promotion import alias_versions, download_version, record_decision
from unitrefine.tracking.tracker import Tracker

ALIASES = ("challenger", "champion")
#: The model folders of the two training runs (by relative path).
FOLDERS = {"old": {"best_model.skops": b"old model " * 40, "model_info.json": b'{"features": ["snr"]}'},
           "new": {"best_model.skops": b"new model " * 60, "model_info.json": b'{"features": ["snr", "firing_rate"]}'}}
_names = (f"model_{i}" for i in itertools.count())


@dataclass(frozen=True)
class Store:
    uri: str
    experiment: str
    runs: dict[str, str]  # "old", "new" -> the id of a finished run holding that model folder


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("promotion")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("promotion", artifact_location=(root / "artifacts").as_uri())
    runs = {}
    for name, folder in FOLDERS.items():
        for path, data in folder.items():
            (root / name / path).parent.mkdir(parents=True, exist_ok=True)
            (root / name / path).write_bytes(data)
        run_id = client.create_run(experiment, run_name=f"train-{name}").info.run_id
        client.log_artifacts(run_id, str(root / name), MODEL_FOLDER)
        client.set_terminated(run_id, "FINISHED")
        runs[name] = run_id
    return Store(uri, "promotion", runs)


@pytest.fixture
def tracker(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracker]:
    """A tracker of the module's store, made per test: it sets MLflow's tracking URI (record_decision's runs go
    there), which other tests change; put back afterwards (and ``MLFLOW_TRACKING_URI``, which it sets too)."""
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    previous = utils._tracking_uri
    yield Tracker(store.uri, store.experiment, None)
    mlflow.set_tracking_uri(previous)


def registered(tracker: Tracker, store: Store, *runs: str) -> str:
    """A new registered model with one version per run in ``runs`` (version 1 the first); its name."""
    name = next(_names)
    tracker.client.create_registered_model(name)
    for run in runs:
        source = f"{tracker.client.get_run(store.runs[run]).info.artifact_uri}/{MODEL_FOLDER}"
        tracker.client.create_model_version(name, source, run_id=store.runs[run])
    return name


def test_alias_versions_before_and_after_the_aliases_are_set(tracker: Tracker, store: Store) -> None:
    name = registered(tracker, store, "old", "new")
    assert alias_versions(tracker, name, ALIASES) == {"challenger": None, "champion": None}
    tracker.client.set_registered_model_alias(name, "champion", "1")
    assert alias_versions(tracker, name, ALIASES) == {"challenger": None, "champion": "1"}
    tracker.client.set_registered_model_alias(name, "challenger", "2")
    assert alias_versions(tracker, name, ("champion", "challenger", "staging")) == {
        "champion": "1", "challenger": "2", "staging": None}


def test_alias_versions_of_a_model_the_registry_does_not_hold(tracker: Tracker) -> None:
    assert alias_versions(tracker, "never_registered", ALIASES) == {"challenger": None, "champion": None}


def test_the_gate_gives_challenger_to_a_version_at_or_above_the_minimum(tracker: Tracker, store: Store) -> None:
    name = registered(tracker, store, "old", "new")
    assert tracker.gate(name, "1", 0.7, 0.7, "balanced_accuracy") is True  # at the minimum: passes
    assert alias_versions(tracker, name, ALIASES) == {"challenger": "1", "champion": None}
    assert tracker.gate(name, "2", 0.8125, 0.7, "balanced_accuracy") is True
    assert alias_versions(tracker, name, ALIASES) == {"challenger": "2", "champion": None}
    assert MlflowClient(store.uri).get_model_version(name, "2").tags == {
        "gate": "passed", "gate.metric": "balanced_accuracy", "gate.score": "0.8125", "gate.minimum": "0.7000"}


def test_a_version_below_the_gate_gets_no_alias_and_a_tag_naming_the_setting(
    tracker: Tracker, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    name = registered(tracker, store, "old", "new")
    tracker.gate(name, "1", 0.9, 0.7, "balanced_accuracy")
    with caplog.at_level(logging.WARNING, logger="unitrefine.tracking.tracker"):
        assert tracker.gate(name, "2", 0.65, 0.7, "balanced_accuracy") is False
    assert alias_versions(tracker, name, ALIASES) == {"challenger": "1", "champion": None}  # the alias did not move
    reason = "balanced_accuracy 0.6500 < registry.gate_min_score 0.7000"
    assert MlflowClient(store.uri).get_model_version(name, "2").tags["gate"] == f"failed: {reason}"
    assert [r.getMessage() for r in caplog.records if r.name == "unitrefine.tracking.tracker"] == [
        f"Model version 2 did not pass the gate ({reason}): registered without an alias."]


def test_download_version_gives_that_version_s_model_folder(tracker: Tracker, store: Store, tmp_path: Path) -> None:
    name = registered(tracker, store, "old", "new")
    for version, run in (("1", "old"), ("2", "new")):
        path = download_version(tracker, name, version, tmp_path)
        assert path == tmp_path / f"v{version}" / MODEL_FOLDER
        assert {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()} == FOLDERS[run]


def promotion_runs(store: Store, name: str) -> list[Run]:
    """The finished runs of the experiment that record a decision about ``name`` (tagged ``model``)."""
    client = MlflowClient(store.uri)
    experiment = client.get_experiment_by_name(store.experiment).experiment_id
    return client.search_runs([experiment], f"tags.model = '{name}'")


def test_record_decision_logs_a_run_tags_the_versions_and_moves_champion(tracker: Tracker, store: Store) -> None:
    name = registered(tracker, store, "old", "new")
    tracker.client.set_registered_model_alias(name, "champion", "1")
    tags = {"model": name, "unitrefine.promotion": "promoted"}
    metrics = {"challenger_balanced_accuracy": 0.8, "champion_balanced_accuracy": 0.7, "delta": 0.1}
    record_decision(tracker, name, tags, metrics, {"2": {"promotion.decision": "promoted"},
                                                   "1": {"promotion.replaced_by": "2"}}, champion="2")

    [run] = promotion_runs(store, name)
    assert run.info.run_name.startswith("promote-") and run.info.status == "FINISHED"
    assert run.data.metrics == metrics
    assert {k: run.data.tags[k] for k in tags} == tags
    client = MlflowClient(store.uri)
    assert client.get_model_version(name, "2").tags == {"promotion.decision": "promoted"}
    assert client.get_model_version(name, "1").tags == {"promotion.replaced_by": "2"}
    assert alias_versions(tracker, name, ALIASES) == {"challenger": None, "champion": "2"}


def test_a_rejection_is_recorded_and_leaves_champion_where_it_was(tracker: Tracker, store: Store) -> None:
    name = registered(tracker, store, "old", "new")
    tracker.client.set_registered_model_alias(name, "champion", "1")
    tracker.client.set_registered_model_alias(name, "challenger", "2")
    record_decision(tracker, name, {"model": name}, {"delta": -0.05},
                    {"2": {"promotion.decision": "rejected"}}, champion=None)
    [run] = promotion_runs(store, name)
    assert run.data.metrics == {"delta": -0.05}
    assert MlflowClient(store.uri).get_model_version(name, "2").tags == {"promotion.decision": "rejected"}
    assert alias_versions(tracker, name, ALIASES) == {"challenger": "2", "champion": "1"}
