"""Trials as the layers above the search see them: plain records, ranked as Optuna ranks them."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from unitrefine.search.outcomes import TrialOutcome, outcome, outcomes, ranked
from unitrefine.search.trial_attrs import ERROR_ATTR, FOLD_SCORES_ATTR


def _study(values: list[float | None]) -> optuna.Study:
    study = optuna.create_study(study_name="s", direction="maximize")
    for k, value in enumerate(values):
        study.add_trial(create_trial(
            state=TrialState.FAIL if value is None else TrialState.COMPLETE, value=value, params={"C": k / 10},
            distributions={"C": FloatDistribution(0, 1)},
            user_attrs={FOLD_SCORES_ATTR: [0.5, 0.7]} if value is not None else {ERROR_ATTR: "ValueError: k > n"},
        ))
    return study


def test_a_trial_becomes_a_record_of_plain_values() -> None:
    study = _study([0.8, None])
    done, failed = outcomes(study)
    assert (done.study, done.number, done.state, done.value, done.params) == ("s", 0, "complete", 0.8, {"C": 0.0})
    assert done.user_attrs == {FOLD_SCORES_ATTR: [0.5, 0.7]}
    frozen = study.trials[0]
    assert done.duration_s == (frozen.datetime_complete - frozen.datetime_start).total_seconds()
    assert (failed.state, failed.value, failed.user_attrs[ERROR_ATTR]) == ("fail", None, "ValueError: k > n")
    running = outcome("s", create_trial(state=TrialState.RUNNING, params={}, distributions={}))
    assert (running.state, running.completed, running.duration_s) == ("running", None, None)


def test_ranked_is_best_first_with_ties_by_number_and_starts_with_optunas_best_trial() -> None:
    study = _study([0.7, None, 0.9, 0.9, 0.8])
    order = ranked(outcomes(study))
    assert [t.number for t in order] == [2, 3, 4, 0]
    assert order[0].number == study.best_trial.number
    assert ranked([TrialOutcome("s", 0, "pruned", None), TrialOutcome("s", 1, "fail", None)]) == []
