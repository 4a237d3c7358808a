"""The study: a time cap is recorded when it ends the search; pruners judge a trial by the trials below its cutoff."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest
from conftest import make_config
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from unitrefine.config import CONF_DIR, SearchConfig, compose_config, validate_config
from unitrefine.run.training import train
from unitrefine.search.budget import MAX_DUPLICATES_IN_A_ROW, budget, first_evaluation, trial_counts
from unitrefine.search.pruning import WindowedHyperbandPruner, WindowedMedianPruner, make_pruner
from unitrefine.search.study import TIMEOUT_ATTR, stopped_by_timeout
from unitrefine.search.trial_attrs import DUPLICATE_ATTR


@pytest.mark.parametrize("experiment", [None, *sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))])
def test_every_shipped_experiment_stops_on_a_trial_budget_not_a_time_cap(experiment: str | None) -> None:
    cfg = validate_config(compose_config([] if experiment is None else [f"+experiment={experiment}"]))
    assert cfg.search.timeout_s is None and cfg.search.n_trials > 0


def test_a_time_cap_that_ends_the_search_is_recorded_in_the_study_and_warned_about(
    tmp_path: Path, tiny_recordings: list[dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path / "capped", tiny_recordings, [
        "search.n_trials=1000", "search.timeout_s=1.5", "search.n_jobs=2", "tracking.enabled=false", "cv.n_splits=3",
    ])
    with caplog.at_level(logging.WARNING, logger="unitrefine.search.workers"):
        result = train(cfg)
    assert result is not None
    assert 0 < budget(result.study.trials, 3).counted < 1000
    assert stopped_by_timeout(result.study) and result.study.user_attrs[TIMEOUT_ATTR] is True
    assert "search.timeout_s=1.5 s stopped the search" in caplog.text and "not reproducible" in caplog.text


@pytest.mark.parametrize("timeout", ["null", "600"])
def test_a_search_that_uses_its_budget_is_not_marked(
    tmp_path: Path, tiny_recordings: list[dict[str, str]], timeout: str
) -> None:
    cfg = make_config(tmp_path, tiny_recordings, [
        "search.n_trials=3", f"search.timeout_s={timeout}", "search.n_jobs=2", "tracking.enabled=false",
        "cv.n_splits=3",
    ])
    result = train(cfg)
    assert result is not None and budget(result.study.trials, 3).counted == 3
    assert not stopped_by_timeout(result.study)


def test_the_configured_pruners_stay_instances_of_optunas_classes() -> None:
    # Optuna's samplers look at the pruner's class (Hyperband: they sample from the trial's bracket only).
    assert isinstance(make_pruner(SearchConfig(pruner="hyperband")), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner(SearchConfig(pruner="median")), optuna.pruners.MedianPruner)


def study_with_finished_trials(values: list[float]) -> optuna.Study:
    """A maximising in-memory study with one complete trial per value (that value at steps 0 and 1)."""
    study = optuna.create_study(direction="maximize")
    for v in values:
        study.add_trial(create_trial(
            params={"x": v}, distributions={"x": FloatDistribution(0, 1)}, value=v, intermediate_values={0: v, 1: v},
        ))
    return study


def frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return study.get_trials(deepcopy=False)[number]


def test_the_median_pruner_judges_a_trial_by_the_trials_below_its_cutoff_only() -> None:
    study = study_with_finished_trials([0.2, 0.3, 0.9, 0.9, 0.9])
    pruner = WindowedMedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study.pruner = pruner
    trial = study.ask()
    pruner.start(study, frozen(study, trial.number), cutoff=2)  # trials 2-4 were still running when it started
    trial.report(0.5, 0)
    trial.report(0.5, 1)
    assert not trial.should_prune(), "judged by trials 0 and 1 (median 0.25) it is not pruned"
    pruner.finish(trial.number)
    assert trial.should_prune(), "without a cutoff it is judged by all five (median 0.9), as Optuna would"


def test_a_hyperband_trial_started_before_the_brackets_were_set_up_is_not_pruned() -> None:
    study = optuna.create_study(study_name="hyperband", direction="maximize")
    pruner = WindowedHyperbandPruner(min_resource=1, reduction_factor=2)
    study.pruner = pruner
    early = study.ask()
    pruner.start(study, frozen(study, early.number), cutoff=early.number)  # nothing finished yet
    for i in range(12):  # others complete while it runs (they reached every rung); the next trial sets up brackets
        v = 0.8 + i / 100
        study.add_trial(create_trial(
            params={"x": v}, distributions={"x": FloatDistribution(0, 1)}, value=v,
            intermediate_values={step: v for step in range(4)},
            system_attrs={f"completed_rung_{rung}": v for rung in range(3)},
        ))
    late = study.ask()
    pruner.start(study, frozen(study, late.number), cutoff=late.number)
    for trial in (early, late):
        for step in range(4):
            trial.report(0.1, step)
    assert late.should_prune()
    assert not early.should_prune()
    assert not any(k.startswith("completed_rung") for k in frozen(study, early.number).system_attrs)
    # Optuna's pruner, which set up its brackets while the early trial ran, would prune it.
    assert optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=2).prune(study, frozen(study, early.number))


# --------------------------------------------------------------------------------------------------
# Duplicates: not counted, and many in a row end the search
# --------------------------------------------------------------------------------------------------


def _x(state: TrialState, x: float, **attrs: object) -> optuna.trial.FrozenTrial:
    return create_trial(state=state, value=x if state == TrialState.COMPLETE else None, params={"x": x},
                        distributions={"x": FloatDistribution(0, 1)}, user_attrs=dict(attrs))


def test_duplicates_do_not_count_toward_the_budget_and_many_in_a_row_exhaust_the_space() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_x(TrialState.COMPLETE, 0.1))
    study.add_trial(_x(TrialState.PRUNED, 0.2))
    study.add_trial(_x(TrialState.PRUNED, 0.1, **{DUPLICATE_ATTR: 0}))
    study.add_trial(_x(TrialState.FAIL, 0.2, **{DUPLICATE_ATTR: 1}))  # a duplicate stopped before it was told
    b = budget(study.get_trials(), max_retries=3)
    assert (b.counted, b.duplicates, b.duplicates_in_a_row, b.to_retry, b.exhausted) == (2, 2, 2, (), False)
    assert trial_counts(study.get_trials(), 3) == {"complete": 1, "pruned": 1, "fail": 0, "interrupted": 0,
                                                   "duplicate": 2}
    for _ in range(MAX_DUPLICATES_IN_A_ROW - 2):
        study.add_trial(_x(TrialState.PRUNED, 0.1, **{DUPLICATE_ATTR: 0}))
    assert budget(study.get_trials(), 3).exhausted
    study.add_trial(_x(TrialState.COMPLETE, 0.3))  # a new configuration ends the run of duplicates
    b = budget(study.get_trials(), 3)
    assert (b.counted, b.duplicates, b.duplicates_in_a_row, b.exhausted) == (3, MAX_DUPLICATES_IN_A_ROW, 0, False)


def test_a_duplicate_names_the_trial_with_a_result_and_a_retry_is_not_a_duplicate_of_what_it_retries() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_x(TrialState.FAIL, 0.5))  # 0: interrupted (its worker stopped)
    retried = _x(TrialState.COMPLETE, 0.5)
    retried.system_attrs = {"failed_trial": 0, "retry_history": [0]}
    study.add_trial(retried)  # 1: its retry, complete
    study.add_trial(_x(TrialState.FAIL, 0.7))  # 2: interrupted, not retried yet
    assert first_evaluation(study, 9, {"x": 0.5}) == 1
    assert first_evaluation(study, 9, {"x": 0.7}) == 2, "the retry to come evaluates it: not fitted twice"
    assert first_evaluation(study, 1, {"x": 0.5}) is None, "a retry is not a duplicate of the attempt it retries"
    assert first_evaluation(study, 9, {"x": 0.9}) is None and first_evaluation(study, 9, {}) is None
