"""Optuna's own figures of a study: the optimisation history and the hyperparameter importances."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna

from unitrefine.figures import plt, save

log = logging.getLogger(__name__)


def optimization_history(study: optuna.Study, path: Path) -> Path:
    """Score of every completed trial and the best so far."""
    from optuna.visualization.matplotlib import plot_optimization_history

    with warnings.catch_warnings(), plt.rc_context():  # Optuna's plots set a global style: keep it to them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = plot_optimization_history(study)
        return save(ax.figure, path)


def param_importances(study: optuna.Study, path: Path) -> Path | None:
    """Optuna hyperparameter importances; None (with a log line) when there are too few completed trials."""
    from optuna.visualization.matplotlib import plot_param_importances

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 3:
        log.info("Hyperparameter importance needs at least 3 completed trials (have %d): not drawn.", len(complete))
        return None
    try:
        with warnings.catch_warnings(), plt.rc_context():  # Optuna's plots set a global style: keep it to them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # PED-ANOVA notes parameters tried in few trials; the plot is still the best summary we have.
            warnings.filterwarnings("ignore", message="Some regimes for parameter", category=UserWarning)
            ax = plot_param_importances(study)
            return save(ax.figure, path)
    except (ValueError, RuntimeError) as exc:
        log.warning("Hyperparameter importance could not be computed: %s", exc)
        return None
