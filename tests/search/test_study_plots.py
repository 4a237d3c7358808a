"""Optuna's figures of a study."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from unitrefine.search.study_plots import optimization_history, param_importances


def _study(n: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for k in range(n):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=k / 10, params={"x": k / n, "y": (k * 7 % n) / n},
                                     distributions={"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)}))
    return study


def test_optuna_figures_leave_the_global_style_alone(tmp_path: Path) -> None:
    """Optuna's matplotlib plots switch to the ggplot style; a user's later figures must not change with it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 3), n_trials=5)
    before = dict(matplotlib.rcParams)
    assert optimization_history(study, tmp_path / "history.png").is_file()
    assert param_importances(study, tmp_path / "importance.png") is not None
    assert dict(matplotlib.rcParams) == before


def test_hyperparameter_importance_needs_three_completed_trials(tmp_path: Path) -> None:
    assert param_importances(_study(2), tmp_path / "two.png") is None and not (tmp_path / "two.png").exists()
    drawn = param_importances(_study(6), tmp_path / "six.png")
    assert drawn == tmp_path / "six.png" and drawn.stat().st_size > 1000
