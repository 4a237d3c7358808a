"""The configured pruner, and windowed pruners judging each trial by the trials below its own cutoff.

Complements tests/search/test_study.py (the median pruner's window, Hyperband's unready trials, the pruners'
Optuna classes).
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from unitrefine.config import SearchConfig
from unitrefine.search.pruning import (
    WindowedHyperbandPruner,
    WindowedPruner,
    WindowedWilcoxonPruner,
    make_pruner,
)


def finished(study: optuna.Study, *curves: list[float]) -> None:
    """Add one completed trial per curve (its fold scores; its value their mean)."""
    for curve in curves:
        study.add_trial(create_trial(
            params={"x": curve[0]}, distributions={"x": FloatDistribution(0, 1)}, value=sum(curve) / len(curve),
            intermediate_values=dict(enumerate(curve)),
        ))


def frozen(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return study.get_trials(deepcopy=False)[number]


def wilcoxon() -> WindowedWilcoxonPruner:
    pruner = make_pruner(SearchConfig(pruner="wilcoxon"))  # no ExperimentalWarning for a pruner chosen knowingly
    assert isinstance(pruner, WindowedWilcoxonPruner) and isinstance(pruner, optuna.pruners.WilcoxonPruner)
    return pruner


def test_none_turns_pruning_off() -> None:
    pruner = make_pruner(SearchConfig(pruner="none"))
    assert type(pruner) is optuna.pruners.NopPruner and not isinstance(pruner, WindowedPruner)


def test_the_median_pruner_waits_for_search_n_startup_trials_and_for_the_second_fold() -> None:
    pruner = make_pruner(SearchConfig(pruner="median", n_startup_trials=3))
    study = optuna.create_study(direction="maximize", pruner=pruner)
    finished(study, [0.9, 0.9], [0.9, 0.9])
    poor = study.ask()
    poor.report(0.1, 0)
    poor.report(0.1, 1)
    assert not poor.should_prune(), "two finished trials, fewer than search.n_startup_trials=3"
    finished(study, [0.9, 0.9])
    assert poor.should_prune()
    first_fold_only = study.ask()
    first_fold_only.report(0.1, 0)
    assert not first_fold_only.should_prune(), "the first fold is a warm-up step"


def test_wilcoxon_compares_each_trial_with_the_best_trial_below_its_own_cutoff() -> None:
    pruner = wilcoxon()
    study = optuna.create_study(direction="maximize", pruner=pruner)
    finished(study, [0.30, 0.32, 0.28, 0.31, 0.29])  # 0
    early, late = study.ask(), study.ask()  # 1 and 2, run side by side
    pruner.start(study, frozen(study, early.number), cutoff=1)
    finished(study, [0.95, 0.93, 0.96, 0.94, 0.97])  # 3: finished while both ran
    pruner.start(study, frozen(study, late.number), cutoff=4)
    for trial in (early, late):
        for step, v in enumerate([0.50, 0.52, 0.48, 0.51, 0.49]):
            trial.report(v, step)
    assert not early.should_prune(), "its best visible trial is 0 (mean 0.30): it is better"
    assert late.should_prune(), "trial 3 is visible to it and better at every fold"
    pruner.finish(early.number)
    assert early.should_prune(), "without its cutoff, judged by the whole study as Optuna would"
    assert study.best_trial.number == 3, "the views do not change the study"


def test_hyperband_records_the_rungs_through_the_view_in_the_study(tmp_path: Path) -> None:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.journal")))
    pruner = make_pruner(SearchConfig(pruner="hyperband"))
    assert isinstance(pruner, WindowedHyperbandPruner)
    study = optuna.create_study(study_name="hb", storage=storage, direction="maximize", pruner=pruner)
    finished(study, *[[0.5 + i / 100] * 4 for i in range(6)])
    trial = study.ask()
    pruner.start(study, frozen(study, trial.number), cutoff=trial.number)
    for step in range(4):  # the best score at every fold: promoted, whichever bracket it is in
        trial.report(0.9, step)
        assert not trial.should_prune()
    # Successive halving's record of the rung it reached is written through the view, to the journal.
    reloaded = optuna.load_study(study_name="hb", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.journal"))))
    assert reloaded.trials[trial.number].system_attrs.get("completed_rung_0") == 0.9
