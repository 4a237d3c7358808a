"""Create and run the Optuna study: seeded TPE, a pruner, a study-wide trial budget."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import optuna

from unitrefine.config import SearchConfig

log = logging.getLogger(__name__)

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def make_pruner(search: SearchConfig) -> optuna.pruners.BasePruner:
    """The configured pruner; folds are its steps."""
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.n_startup_trials, n_warmup_steps=1)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if search.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    return optuna.pruners.NopPruner()


def create_study(name: str, search: SearchConfig, seed: int) -> optuna.Study:
    """A maximising study with a seeded multivariate TPE sampler.

    Parameters
    ----------
    name : str
        Study name (the experiment name).
    search : SearchConfig
        ``storage`` (None: in memory), pruner and start-up settings.
    seed : int
        Sampler seed: the same seed gives the same sequential trial sequence.
    """
    with warnings.catch_warnings():
        # `group` (conditional spaces sampled jointly) is still flagged experimental; we rely on it knowingly.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=search.n_startup_trials
        )
    return optuna.create_study(
        study_name=name,
        storage=search.storage,
        sampler=sampler,
        pruner=make_pruner(search),
        direction="maximize",
        load_if_exists=search.storage is not None,
    )


def run_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    search: SearchConfig,
    callbacks: Sequence[Callback] = (),
) -> None:
    """Run trials until the study holds ``search.n_trials`` finished trials or ``timeout_s`` passes."""
    done = sum(t.state in FINISHED for t in study.trials)
    remaining = search.n_trials - done
    if remaining <= 0:
        log.info("Study '%s' already has %d finished trials (budget %d).", study.study_name, done, search.n_trials)
        return
    study.optimize(
        objective,
        n_trials=remaining,
        timeout=search.timeout_s,
        n_jobs=search.n_jobs,
        callbacks=list(callbacks),
        gc_after_trial=False,
    )
