"""The trial budget: what counts toward search.n_trials, queued and running trials, retries, duplicates in a row.

Complements tests/search/test_study.py (duplicates, first_evaluation of a retried configuration) and
tests/search/test_resume.py (retries up to max_retries=2, retry keeping the warm-start attribute).
"""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from unitrefine.search.budget import MAX_DUPLICATES_IN_A_ROW, budget, first_evaluation, retry, trial_counts
from unitrefine.search.trial_attrs import DUPLICATE_ATTR, ERROR_ATTR, FOLD_SCORES_ATTR, WORKER_ATTR


def trial(
    state: TrialState, x: float = 0.3, retries: list[int] | None = None, **attrs: object
) -> optuna.trial.FrozenTrial:
    """A frozen trial of parameter ``x``; ``retries``: the attempts it retries (Optuna's retry attributes)."""
    system = {"failed_trial": retries[0], "retry_history": retries} if retries else {}
    return create_trial(state=state, value=x if state == TrialState.COMPLETE else None, params={"x": x},
                        distributions={"x": FloatDistribution(0, 1)}, user_attrs=dict(attrs), system_attrs=system)


def study_of(*trials: optuna.trial.FrozenTrial) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for t in trials:
        study.add_trial(t)
    return study


def test_running_and_queued_trials_do_not_count_and_only_complete_ones_are_complete() -> None:
    trials = study_of(
        trial(TrialState.COMPLETE), trial(TrialState.PRUNED), trial(TrialState.RUNNING), trial(TrialState.RUNNING),
        trial(TrialState.WAITING), trial(TrialState.FAIL, **{ERROR_ATTR: "ValueError: k > n"}),
    ).get_trials()
    b = budget(trials, max_retries=3)
    assert (b.counted, b.running, b.waiting, b.n_complete, b.to_retry, b.interrupted) == (3, 2, 1, 1, (), 0)
    assert (b.duplicates, b.duplicates_in_a_row, b.exhausted) == (0, 0, False)
    assert trial_counts(trials, 3) == {"complete": 1, "pruned": 1, "fail": 1, "interrupted": 0, "duplicate": 0}


def test_queued_trials_neither_break_nor_extend_a_run_of_duplicates() -> None:
    study = study_of(trial(TrialState.COMPLETE, 0.1))
    for i in range(MAX_DUPLICATES_IN_A_ROW - 1):
        study.add_trial(trial(TrialState.PRUNED, 0.1, **{DUPLICATE_ATTR: 0}))
        if i % 3 == 0:
            study.add_trial(trial(TrialState.WAITING, 0.5))  # a default or a retry queued in between
    b = budget(study.get_trials(), 3)
    assert (b.duplicates, b.duplicates_in_a_row, b.waiting, b.counted) == (
        MAX_DUPLICATES_IN_A_ROW - 1, MAX_DUPLICATES_IN_A_ROW - 1, 3, 1)
    assert not b.exhausted, "one duplicate short of the limit"
    study.add_trial(trial(TrialState.PRUNED, 0.1, **{DUPLICATE_ATTR: 0}))
    assert budget(study.get_trials(), 3).exhausted
    study.add_trial(trial(TrialState.RUNNING, 0.7))  # a new configuration being evaluated ends the run
    b = budget(study.get_trials(), 3)
    assert (b.duplicates_in_a_row, b.exhausted, b.running) == (0, False, 1)


def test_with_max_retries_0_an_interrupted_trial_counts_as_failed_at_once() -> None:
    trials = study_of(trial(TrialState.FAIL), trial(TrialState.COMPLETE)).get_trials()
    none = budget(trials, max_retries=0)
    assert (none.counted, none.to_retry, none.interrupted) == (2, (), 0)
    assert trial_counts(trials, 0) == {"complete": 1, "pruned": 0, "fail": 1, "interrupted": 0, "duplicate": 0}
    one = budget(trials, max_retries=1)
    assert (one.counted, [t.number for t in one.to_retry], one.interrupted) == (1, [0], 0)
    assert trial_counts(trials, 1) == {"complete": 1, "pruned": 0, "fail": 0, "interrupted": 0, "duplicate": 0}


def test_trial_counts_tell_failed_configurations_from_retried_interruptions() -> None:
    trials = study_of(
        trial(TrialState.FAIL, 0.5),  # 0: interrupted, retried by 1
        trial(TrialState.FAIL, 0.5, retries=[0]),  # 1: interrupted again, retried by 2
        trial(TrialState.COMPLETE, 0.5, retries=[0, 1]),  # 2: the configuration's result
        trial(TrialState.FAIL, 0.6, **{ERROR_ATTR: "ValueError: n_neighbors > n_samples"}),  # 3: cannot be fitted
        trial(TrialState.PRUNED, 0.6, **{DUPLICATE_ATTR: 3}),  # 4: not fitted
        trial(TrialState.PRUNED, 0.7),  # 5: pruned
    ).get_trials()
    assert trial_counts(trials, max_retries=3) == {
        "complete": 1, "pruned": 1, "fail": 1, "interrupted": 2, "duplicate": 1,
    }
    b = budget(trials, max_retries=3)
    assert (b.counted, b.interrupted, b.to_retry, b.duplicates, b.duplicates_in_a_row) == (3, 2, (), 1, 0)


def test_a_retry_of_a_retry_extends_its_history_and_is_asked_with_the_same_parameters() -> None:
    study = study_of(
        trial(TrialState.FAIL, 0.25),
        trial(TrialState.FAIL, 0.25, retries=[0], **{WORKER_ATTR: "host-1-abc", FOLD_SCORES_ATTR: [0.8]}),
    )
    b = budget(study.get_trials(), max_retries=3)
    assert ([t.number for t in b.to_retry], b.interrupted) == ([1], 1)
    retry(study, b.to_retry[0])
    queued = study.get_trials()[2]
    assert (queued.state, queued.params, queued.distributions) == (
        TrialState.WAITING, {"x": 0.25}, {"x": FloatDistribution(0, 1)})
    assert queued.system_attrs == {"failed_trial": 0, "retry_history": [0, 1]}
    assert queued.user_attrs == {}, "the interrupted attempt's worker and partial scores stay behind"
    b = budget(study.get_trials(), max_retries=3)
    assert (b.counted, b.waiting, b.to_retry, b.interrupted) == (0, 1, (), 2)
    asked = study.ask()
    assert asked.number == 2 and asked.suggest_float("x", 0, 1) == 0.25


def test_first_evaluation_prefers_a_trial_with_a_result_and_ignores_queued_trials_and_duplicates() -> None:
    study = study_of(
        trial(TrialState.FAIL, 0.5),  # 0: interrupted (to be retried)
        trial(TrialState.FAIL, 0.5, **{ERROR_ATTR: "ValueError"}),  # 1: its configuration failed: a result
        trial(TrialState.WAITING, 0.6),  # 2: queued, not evaluated yet
        trial(TrialState.PRUNED, 0.7, **{DUPLICATE_ATTR: 0}),  # 3: a duplicate, not evaluated
        trial(TrialState.RUNNING, 0.8),  # 4: being evaluated
    )
    assert first_evaluation(study, 9, {"x": 0.5}) == 1, "the failed configuration, not the earlier interruption"
    assert first_evaluation(study, 9, {"x": 0.6}) is None
    assert first_evaluation(study, 9, {"x": 0.7}) is None
    assert first_evaluation(study, 9, {"x": 0.8}) == 4
    assert first_evaluation(study, 4, {"x": 0.8}) is None, "a trial is not a duplicate of itself"
