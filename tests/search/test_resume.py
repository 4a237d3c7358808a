"""Resume semantics in one process: the study persisted by default, the whole-study budget, refusals."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from conftest import make_config
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from unitrefine.config import TrainConfig
from unitrefine.errors import UnitRefineError
from unitrefine.export.report import spec_params
from unitrefine.run.training import train
from unitrefine.search.budget import MAX_DUPLICATES_IN_A_ROW, budget, retry, retry_history
from unitrefine.search.resume import check_identity, choose_study
from unitrefine.search.search_space import SearchSpace, parse_search_space
from unitrefine.search.session import StudyPlace, join_study
from unitrefine.search.storage import default_storage
from unitrefine.search.study import IDENTITY
from unitrefine.search.trial_attrs import DUPLICATE_ATTR, WARM_START_ATTR
from unitrefine.search.workers import Worker
from unitrefine.tracking.tracker import NullTracker, default_tracking_uri

BASE = ["search.n_jobs=1", "cv.n_splits=3", "search.enqueue_defaults=false", "search.pruner=none"]


def place(cfg: TrainConfig) -> StudyPlace:
    """Where a training run of ``cfg`` keeps its study (search.storage, or the journal beside the MLflow store)."""
    uri = cfg.tracking.uri or default_tracking_uri(cfg.root_dir)
    storage = cfg.search.storage or default_storage(cfg.tracking.enabled, uri, cfg.root_dir, cfg.experiment_name)
    return StudyPlace(cfg.search, cfg.experiment_name, cfg.seed, storage, cfg.resolve_path)


def journal_study(root: Path, name: str = "smoke") -> optuna.Study:
    path = root / "mlruns" / "optuna" / "smoke.journal"
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))


def parents(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], max_results=500)
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def test_rerun_continues_the_study_and_n_trials_is_the_budget_of_the_whole_study(
    tmp_path: Path, tiny_recordings
) -> None:
    first = train(make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=3"]))
    assert first is not None and sum(first.trial_counts.values()) == 3
    first_values = {t.number: t.value for t in first.study.trials}
    assert (tmp_path / "mlruns" / "optuna" / "smoke.journal").is_file()

    # Same command again: the study has its 3 trials and its export; nothing is redone.
    assert train(make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=3"])) is None
    assert len(list((tmp_path / "experiments" / "smoke" / "models").iterdir())) == 1

    # A larger budget runs only the rest, and exports again under a parent run of its own.
    more = train(make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=5"]))
    assert more is not None
    trials = journal_study(tmp_path).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert budget(trials, 3).counted == 5
    assert len(pd.read_csv(more.model_folder / "model_accuracies.csv")) == 5
    assert {t.number: t.value for t in trials[:3]} == first_values
    runs = parents(tmp_path)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert more.run_id in {r.info.run_id for r in runs} and more.run_id != first.run_id


def test_a_changed_configuration_starts_a_fresh_study_beside_the_one_it_would_have_continued(
    tmp_path: Path, tiny_recordings, caplog: pytest.LogCaptureFixture
) -> None:
    first = train(make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=2"]))
    assert first is not None and first.study.study_name == "smoke"
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        fresh = train(make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=2", "seed=7"]))
    assert fresh is not None and fresh.study.study_name == "smoke#2"
    # The seed also shuffles the CV folds.
    assert ("Study 'smoke' (" in caplog.text and "is not continued: its cross-validation (folds or scoring) and seed "
            "differ from this run's. Starting a fresh study 'smoke#2' beside it; run again with the configuration "
            "'smoke' was started with to continue that one.") in caplog.text
    assert budget(journal_study(tmp_path, "smoke#2").get_trials(), 3).counted == 2
    assert [t.value for t in journal_study(tmp_path).get_trials()] == [t.value for t in first.study.trials]
    assert len(parents(tmp_path)) == 2

    # Each configuration continues its own study: both have their trials and their export, nothing is redone.
    for seed in ("seed=7", "seed=42"):  # 42: the default
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="unitrefine"):
            assert train(make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=2", seed])) is None
        assert f"Resuming study '{'smoke#2' if seed == 'seed=7' else 'smoke'}'" in caplog.text
        assert "nothing to do" in caplog.text and "Starting a fresh study" not in caplog.text
    assert len(parents(tmp_path)) == 2

    # search.resume=strict refuses to start a study beside them, before anything is written.
    before = {p: p.read_bytes() for p in (tmp_path / "mlruns" / "optuna").rglob("*") if p.is_file()}
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    cfg = make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=2"])
    cfg.search.resume = "strict"  # type: ignore[assignment]  # (the config schema takes true or false for now)
    with pytest.raises(UnitRefineError, match=(
            r"Cannot resume study 'smoke#2' \(.*smoke\.journal\) with search\.resume=strict: its search space, data "
            r"\(searched units, features, labels\), cross-validation \(folds or scoring\) and seed differ from this "
            r"run's, so its trials cannot be compared with new ones\. Run again with the configuration the study was "
            r"started with to continue it, set search\.resume=true to start a fresh study beside it, or choose another "
            r"experiment_name\.")):
        join_study(place(cfg), {k: "other" for k in IDENTITY}, [], NullTracker, "run", {}, {})
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing
    assert {p: p.read_bytes() for p in (tmp_path / "mlruns" / "optuna").rglob("*") if p.is_file()} == before
    assert len(parents(tmp_path)) == 2


def test_a_search_space_smaller_than_the_budget_is_searched_once_then_the_search_ends(
    tmp_path: Path, tiny_recordings, caplog: pytest.LogCaptureFixture
) -> None:
    # One configuration and a budget of three: it is fitted once; the sampler's repeats of it are not fitted, nor
    # logged to MLflow, nor counted, and after MAX_DUPLICATES_IN_A_ROW of them the search ends and exports.
    space = {"imputer": {"median": {}}, "scaler": {"none": {}}, "resampler": {"none": {}},
             "classifier": {"logistic_regression": {"C": 1.0}}}
    overrides = [*BASE, "search.n_trials=3", "cv.estimate_new_recordings=false"]
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        result = train(make_config(tmp_path, tiny_recordings, overrides, search_space=space))
    assert result is not None
    trials = journal_study(tmp_path).get_trials()
    assert [t.user_attrs.get(DUPLICATE_ATTR) for t in trials] == [None, *[0] * MAX_DUPLICATES_IN_A_ROW]
    assert result.trial_counts == {"complete": 1, "pruned": 0, "fail": 0, "interrupted": 0,
                                   "duplicate": MAX_DUPLICATES_IN_A_ROW}
    assert "Trial 1 repeats the configuration of trial 0: it is not fitted again" in caplog.text
    assert (f"The last {MAX_DUPLICATES_IN_A_ROW} configurations the sampler proposed had all been evaluated already: "
            "the search space looks exhausted, and the search of study 'smoke' stops after 1 distinct configurations "
            "(search.n_trials=3).") in caplog.text
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], max_results=100)
    assert sorted(r.data.tags.get("optuna.trial_number", "parent") for r in runs) == ["0", "parent"]

    # The same command again: nothing to search, nothing to export again, no new parent run.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unitrefine"):
        assert train(make_config(tmp_path, tiny_recordings, overrides, search_space=space)) is None
    assert "nothing to do. Widen search_space to search further" in caplog.text
    assert len(journal_study(tmp_path).get_trials()) == len(trials) and len(parents(tmp_path)) == 1


# --------------------------------------------------------------------------------------------------
# Which study a run continues: the one started with its configuration, or a fresh one beside the others
# --------------------------------------------------------------------------------------------------

SEED0 = {"unitrefine.search.search_space": "s", "unitrefine.data.dataset": "d", "unitrefine.cv": "c",
         "unitrefine.seed": "0"}


def _new_study(storage: optuna.storages.BaseStorage, name: str, identity: dict[str, str]) -> None:
    study = optuna.create_study(study_name=name, storage=storage)
    assert check_identity(study, identity, "memory")


def test_a_run_continues_the_study_started_with_its_configuration_or_starts_one_beside_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = optuna.storages.InMemoryStorage()
    assert choose_study(storage, "exp", SEED0, True, "memory") == "exp"
    _new_study(storage, "exp", SEED0)
    assert choose_study(storage, "exp", SEED0, True, "memory") == "exp"
    assert choose_study(storage, "exp", SEED0, "strict", "memory") == "exp"
    assert choose_study(storage, "exp", SEED0, False, "memory") == "exp#2"

    seed7 = {**SEED0, "unitrefine.seed": "7"}
    with caplog.at_level(logging.INFO, logger="unitrefine.search.resume"):
        assert choose_study(storage, "exp", seed7, True, "memory") == "exp#2"
    assert ("Study 'exp' (memory) is not continued: its seed differs from this run's. Starting a fresh study "
            "'exp#2' beside it; run again with the configuration 'exp' was started with to continue that one."
            ) in caplog.text
    _new_study(storage, "exp#2", seed7)
    # Each configuration finds its own study again, the older one too.
    assert choose_study(storage, "exp", seed7, True, "memory") == "exp#2"
    assert choose_study(storage, "exp", SEED0, True, "memory") == "exp"
    caplog.clear()
    other = {**seed7, "unitrefine.data.dataset": "other", "unitrefine.search.search_space": "other"}
    with caplog.at_level(logging.INFO, logger="unitrefine.search.resume"):
        assert choose_study(storage, "exp", other, True, "memory") == "exp#3"
    assert ("its search space and data (searched units, features, labels) differ from this run's. Starting a fresh "
            "study 'exp#3'") in caplog.text
    assert choose_study(storage, "other_exp", other, True, "memory") == "other_exp"


def test_strict_resume_refuses_a_study_started_otherwise_before_creating_anything() -> None:
    storage = optuna.storages.InMemoryStorage()
    _new_study(storage, "exp", SEED0)
    changed = {**SEED0, "unitrefine.cv": "4 folds", "unitrefine.seed": "7"}
    with pytest.raises(UnitRefineError) as caught:
        choose_study(storage, "exp", changed, "strict", "/data/exp.journal")
    assert str(caught.value) == (
        "Cannot resume study 'exp' (/data/exp.journal) with search.resume=strict: its cross-validation (folds or "
        "scoring) and seed differ from this run's, so its trials cannot be compared with new ones. Run again with the "
        "configuration the study was started with to continue it, set search.resume=true to start a fresh study "
        "beside it, or choose another experiment_name."
    )
    with pytest.raises(UnitRefineError, match=r"search.resume='yes' is not one of true, false, strict"):
        choose_study(storage, "exp", SEED0, "yes", "memory")
    assert optuna.get_all_study_names(storage) == ["exp"]
    # The identity check of a chosen study says what differs in a sentence, too.
    study = optuna.load_study(study_name="exp", storage=storage)
    with pytest.raises(UnitRefineError, match=r"its seed differs from this run's, so its trials cannot be compared"):
        check_identity(study, {**SEED0, "unitrefine.seed": "7"}, "memory")


def test_tracking_off_keeps_the_study_in_memory_unless_a_storage_is_given(tmp_path: Path, tiny_recordings) -> None:
    train(make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=1", "tracking.enabled=false"]))
    assert not (tmp_path / "mlruns").exists()
    path = tmp_path / "here.journal"
    cfg = [*BASE, "search.n_trials=2", "tracking.enabled=false", f"search.storage={path}"]
    assert train(make_config(tmp_path, tiny_recordings, [*cfg, "output.folder=second"])) is not None
    assert train(make_config(tmp_path, tiny_recordings, cfg)) is None
    assert budget(optuna.load_study(study_name="smoke", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(path)))).get_trials(), 3).counted == 2


def _trial(state: TrialState, error: bool = False, system_attrs: dict | None = None) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state, value=0.5 if state == TrialState.COMPLETE else None,
        params={"x": 0.3}, distributions={"x": FloatDistribution(0, 1)},
        user_attrs={"error": "ValueError: k > n"} if error else {}, system_attrs=system_attrs or {},
    )


def test_budget_counts_finished_trials_and_retries_interrupted_ones_a_bounded_number_of_times() -> None:
    study = optuna.create_study()
    study.add_trial(_trial(TrialState.COMPLETE))
    study.add_trial(_trial(TrialState.FAIL, error=True))  # its configuration cannot be fitted: counts
    interrupted = _trial(TrialState.FAIL)  # interrupted: to retry; it was queued from a previous model
    interrupted.set_user_attr(WARM_START_ATTR, "models:/m@champion best")
    interrupted.set_user_attr("fold_scores", [0.9])
    study.add_trial(interrupted)
    b = budget(study.get_trials(), max_retries=2)
    assert (b.counted, [t.number for t in b.to_retry], b.interrupted) == (2, [2], 0)
    retry(study, b.to_retry[0])
    retried = study.get_trials()[3]
    assert retried.state == TrialState.WAITING and retried.params == {"x": 0.3}
    # Where the configuration came from is kept; the partial scores of the interrupted attempt are not.
    assert retried.user_attrs == {WARM_START_ATTR: "models:/m@champion best"}
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(retried) == [2]
    b = budget(study.get_trials(), max_retries=2)
    assert (b.counted, b.waiting, b.to_retry, b.interrupted) == (2, 1, (), 1)
    # An attempt interrupted, its retry interrupted, and that retry's retry too: with max_retries=2, the last
    # attempt counts as failed and nothing more is queued.
    chain = optuna.create_study()
    chain.add_trial(_trial(TrialState.FAIL))
    chain.add_trial(_trial(TrialState.FAIL, system_attrs={"failed_trial": 0, "retry_history": [0]}))
    chain.add_trial(_trial(TrialState.FAIL, system_attrs={"failed_trial": 0, "retry_history": [0, 1]}))
    b = budget(chain.get_trials(), max_retries=2)
    assert (b.counted, b.interrupted, b.to_retry) == (1, 2, ())
    assert budget(chain.get_trials(), max_retries=3).to_retry[0].number == 2



class _Drawn:
    """A sampled objective over the real search space that scores every pipeline 0.5 (no fitting)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def sample(self, trial: optuna.Trial) -> object:
        return self.space.sample(trial)

    def __call__(self, trial: optuna.Trial) -> float:
        self.sample(trial)
        return 0.5


def test_a_trial_stopped_while_its_parameters_were_drawn_is_retried(tmp_path: Path, tiny_recordings) -> None:
    # Ctrl-C can land while a thread draws a trial's parameters: the trial has its classifier but not the
    # classifier's parameters. The next run logs it as stopped (with what it has) and retries it.
    storage = tmp_path / "s.journal"
    cfg = make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=2", f"search.storage={storage}"])
    space = parse_search_space(cfg.search_space)
    session = join_study(place(cfg), {k: "x" for k in IDENTITY}, [], NullTracker, "run", {}, {})
    choices = {"imputer": "median", "scaler": "none", "resampler": "none", "classifier": "logistic_regression"}
    session.study.add_trial(create_trial(
        state=TrialState.FAIL, params=choices,
        distributions={slot: CategoricalDistribution(list(space.slots[slot])) for slot in choices},
    ))

    def params_of(params: Mapping[str, Any]) -> dict:  # as training logs them: needs every parameter
        return spec_params(space.spec_from_params(params))

    assert Worker(session, _Drawn(space), 2, 2, 3, None, 0.1, params_of).run() is not None
    trials = session.study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert retry_history(trials[1]) == [0] and choices.items() <= trials[1].params.items()
    assert "logistic_regression.C" in trials[1].params
