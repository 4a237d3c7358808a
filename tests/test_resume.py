"""Resume semantics in one process: the study persisted by default, the whole-study budget, refusals."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import make_config
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from unitrefine.errors import UnitRefineError
from unitrefine.report import spec_params
from unitrefine.search_space import SearchSpace, parse_search_space
from unitrefine.session import join_study
from unitrefine.study import IDENTITY, WARM_START_ATTR, budget, retry, retry_history
from unitrefine.tracking import NullTracker
from unitrefine.training import train
from unitrefine.workers import Worker

BASE = ["search.n_jobs=1", "cv.n_splits=3", "search.enqueue_defaults=false", "search.pruner=none"]


def journal_study(root: Path, name: str = "smoke") -> optuna.Study:
    path = root / "mlruns" / "optuna" / "smoke.journal"
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))


def parents(root: Path) -> list:
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], max_results=500)
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


def test_rerun_continues_the_study_and_n_trials_is_the_budget_of_the_whole_study(tmp_path: Path, tiny_recordings) -> None:
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


def test_a_changed_configuration_is_refused_and_resume_false_starts_a_fresh_study(
    tmp_path: Path, tiny_recordings
) -> None:
    train(make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=2"]))
    before = {p.name for p in (tmp_path / "experiments" / "smoke" / "models").iterdir()}
    for change, what in (
        (["search_space.classifier.random_forest.max_depth=[3,5]"], "search space"),
        (["cv.n_splits=4"], "CV folds or scoring"),
        (["seed=7"], "seed"),
    ):
        cfg = make_config(tmp_path, tiny_recordings, [*BASE, "search.n_trials=2", *change])
        with pytest.raises(UnitRefineError, match=rf"Cannot resume study 'smoke' .*its .*{what}.*search\.resume=false"):
            train(cfg)
    changed = [{**r, "labels": r["labels"]} for r in tiny_recordings]
    labels = Path(changed[0]["labels"])
    labels.write_text(labels.read_text().replace("\tgood\n", "\tmua\n", 1))
    with pytest.raises(UnitRefineError, match=r"its data \(searched units, features, labels\)"):
        train(make_config(tmp_path, changed, [*BASE, "search.n_trials=2"]))
    assert {p.name for p in (tmp_path / "experiments" / "smoke" / "models").iterdir()} == before
    assert len(parents(tmp_path)) == 1, "a refused resume must not create runs"

    fresh = train(make_config(tmp_path, changed, [*BASE, "search.n_trials=2", "search.resume=false"]))
    assert fresh is not None and fresh.study.study_name == "smoke#2"
    assert budget(journal_study(tmp_path, "smoke#2").get_trials(), 3).counted == 2
    # resume=true now continues the latest study of the experiment, smoke#2.
    assert train(make_config(tmp_path, changed, [*BASE, "search.n_trials=2"])) is None


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
    session = join_study(cfg, {k: "x" for k in IDENTITY}, [], NullTracker, "run", {}, {})
    choices = {"imputer": "median", "scaler": "none", "resampler": "none", "classifier": "logistic_regression"}
    session.study.add_trial(create_trial(
        state=TrialState.FAIL, params=choices,
        distributions={slot: CategoricalDistribution(list(space.slots[slot])) for slot in choices},
    ))

    def params_of(t: optuna.trial.FrozenTrial) -> dict:  # as training logs them: needs every parameter
        return spec_params(space.spec_from_params(t.params))

    assert Worker(session, _Drawn(space), 2, 2, 3, None, 0.1, params_of).run() is not None
    trials = session.study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert retry_history(trials[1]) == [0] and choices.items() <= trials[1].params.items()
    assert "logistic_regression.C" in trials[1].params
