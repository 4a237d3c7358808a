"""Several workers on one study, and workers killed mid-search: real processes, Optuna, MLflow and PostgreSQL.

Every worker is the real command (``python -m unitrefine.train``) in its own process. The assertions read
the study back from its storage and the runs from MLflow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from _postgres import create_database, postgres_server
from conftest import features_for, interruptible, make_config, overlapping_recordings, write_recording
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileOpenLock

from unitrefine.errors import is_interrupt
from unitrefine.export.folder import load_model_folder
from unitrefine.export.report import TrainResult
from unitrefine.run.training import train
from unitrefine.search.budget import budget, retry_history
from unitrefine.search.objective import Objective
from unitrefine.search.trial_attrs import DUPLICATE_ATTR

TrialState = optuna.trial.TrialState


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """One throwaway PostgreSQL server for this module's tests."""
    with postgres_server() as url:
        yield url


def write_data(root: Path, n_units: int) -> str:
    """Four recordings (two subjects) under ``root/data``; the Hydra override listing them."""
    items = []
    for i in range(4):
        write_recording(root / "data" / f"rec{i}", n_units=n_units, seed=200 + i)
        items.append(f"{{id:rec{i},subject:s{i // 2},metrics:'data/rec{i}/quality_metrics.csv',"
                     f"labels:'data/rec{i}/cluster_group.tsv'}}")
    return "dataset.recordings=[" + ",".join(items) + "]"


def command(root: Path, recordings: str, n_trials: int, *extra: str) -> list[str]:
    """The training command on the tiny data, with outputs under ``root``.

    Random forests get a continuous ``max_features`` and logistic regression has a continuous ``C``, so two
    trials with equal parameters can only come from one trial run twice.
    """
    return [
        sys.executable, "-m", "unitrefine.train", "+experiment=smoke", f"root={root}", recordings,
        "dataset.name=tiny", "cv.holdout_recordings=[rec3]", "cv.group_by=recording", "cv.n_splits=3",
        f"search.n_trials={n_trials}", "search.n_jobs=1", "search.n_startup_trials=3", "search.pruner=none",
        "+search_space.classifier.random_forest.max_features={low:0.2,high:1.0}", *extra,
    ]


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, preexec_fn=interruptible)


def finish(procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 300) -> list[str]:
    texts = []
    for proc, log in zip(procs, logs):
        proc.wait(timeout=timeout)
        texts.append(log.read_text(errors="replace"))
    return texts


def journal(path: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def check_study(study: optuna.Study, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``n_trials`` counted trials, nothing running or queued, no trial run twice."""
    trials = study.get_trials()
    b = budget(trials, max_retries=3)
    assert (b.counted, b.running, b.waiting) == (n_trials, 0, 0), [(t.number, t.state.name) for t in trials]
    counted = [t for t in trials if t.state != TrialState.FAIL or "error" in t.user_attrs]
    assert len(counted) == n_trials
    assert len({json.dumps(t.params, sort_keys=True) for t in counted}) == n_trials, "a trial was run twice"
    # Every trial names its worker, except an interrupted one whose worker was killed between creating it
    # and naming itself (the storage treats such a trial as orphaned and retries it).
    assert all(t.user_attrs.get("worker") for t in trials if t.state != TrialState.FAIL or "error" in t.user_attrs)
    return trials


def check_mlflow(root: Path, trials: list[optuna.trial.FrozenTrial], n_parents: int = 1) -> list:
    """One nested run per trial (no duplicates) under the study's parent run(s); one registered version."""
    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == n_parents
    assert {r.data.tags["mlflow.parentRunId"] for r in nested} <= {p.info.run_id for p in parents}
    numbers = sorted(int(r.data.tags["optuna.trial_number"]) for r in nested)
    assert numbers == sorted(t.number for t in trials), "every trial exactly once in MLflow"
    assert len(client.search_model_versions("name='smoke'")) == 1
    assert len(list((root / "experiments" / "smoke" / "models").iterdir())) == 1
    return runs


def run_workers(tmp_path: Path, storage: str, n_workers: int, n_trials: int, *extra: str) -> list[str]:
    recordings = write_data(tmp_path, n_units=150)
    cmd = command(tmp_path, recordings, n_trials, f"search.storage={storage}", *extra)
    logs = [tmp_path / f"worker{i}.log" for i in range(n_workers)]
    procs = [start(cmd, log) for log in logs]
    texts = finish(procs, logs)
    for proc, text in zip(procs, texts):
        assert proc.returncode == 0, text[-3000:]
    assert sum("this worker exports the model" in t for t in texts) == 1, [t[-800:] for t in texts]
    return texts


def test_three_workers_share_a_journal_file_study(tmp_path: Path) -> None:
    n_trials = 12
    path = tmp_path / "study.journal"
    texts = run_workers(tmp_path, str(path), 3, n_trials)
    study = optuna.load_study(study_name="smoke", storage=journal(path))
    trials = check_study(study, n_trials)
    assert len({t.user_attrs["worker"] for t in trials}) >= 2, "the workers did not run side by side"
    runs = check_mlflow(tmp_path, trials)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FINISHED" and parent.data.tags["unitrefine.search.study"] == "smoke"
    assert sum("nothing to do" in t or "Another worker is exporting" in t or "the last to finish exports" in t
               for t in texts) == 2


def test_three_workers_share_a_postgresql_study(tmp_path: Path, postgres: str) -> None:
    n_trials = 12
    url = create_database(postgres, "workers")
    run_workers(tmp_path, url, 3, n_trials, "search.heartbeat_s=1", "search.grace_period_s=3")
    storage = optuna.storages.RDBStorage(url)
    try:  # its pooled connections closed here, not by the garbage collector during a later test
        trials = check_study(optuna.load_study(study_name="smoke", storage=storage), n_trials)
    finally:
        storage.engine.dispose()
    assert len({t.user_attrs["worker"] for t in trials}) >= 2, "the workers did not run side by side"
    check_mlflow(tmp_path, trials)


def wait_for(study_path: Path, proc: subprocess.Popen[bytes], finished: int, timeout: float = 120) -> list:
    """Poll the journal until ``finished`` trials are counted and one is running; return the trials."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker ended before it could be stopped"
        if study_path.exists():
            storage = journal(study_path)
            if storage.get_all_studies():
                trials = optuna.load_study(study_name="smoke", storage=storage).get_trials()
                b = budget(trials, max_retries=3)
                if b.counted >= finished and b.running >= 1:
                    return trials
        time.sleep(0.1)
    raise AssertionError("the search did not get going")


def test_sigkill_mid_search_then_rerun_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    n_trials = 10
    recordings = write_data(tmp_path, n_units=300)
    cmd = command(tmp_path, recordings, n_trials, "search.n_jobs=2")
    path = tmp_path / "mlruns" / "optuna" / "smoke.journal"  # the default: next to the MLflow store
    proc = start(cmd, tmp_path / "first.log")
    wait_for(path, proc, finished=3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = optuna.load_study(study_name="smoke", storage=journal(path)).get_trials()
    killed = {t.number for t in before if t.state == TrialState.RUNNING}
    done_before = {t.number: t.value for t in before if t.state == TrialState.COMPLETE}
    assert killed and len(done_before) >= 3
    assert not (tmp_path / "experiments" / "smoke" / "models").exists()

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming study 'smoke'" in second.stderr
    study = optuna.load_study(study_name="smoke", storage=journal(path))
    trials = check_study(study, n_trials)
    by_number = {t.number: t for t in trials}
    assert {n: by_number[n].value for n in done_before} == done_before, "a completed trial was lost or changed"
    for n in killed:
        assert by_number[n].state == TrialState.FAIL
        retries = [t for t in trials if retry_history(t)[-1:] == [n]]
        # The retry keeps what the killed attempt had sampled (maybe nothing yet) and samples the rest.
        assert len(retries) == 1 and by_number[n].params.items() <= retries[0].params.items()
    runs = check_mlflow(tmp_path, trials)
    status = {int(r.data.tags["optuna.trial_number"]): r.info.status
              for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert all(status[n] == "KILLED" for n in killed)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FINISHED"


def test_sigint_stops_cleanly_and_the_study_resumes(tmp_path: Path) -> None:
    n_trials = 30  # far more than run before the signal, even on a loaded machine
    recordings = write_data(tmp_path, n_units=300)
    cmd = command(tmp_path, recordings, n_trials)
    path = tmp_path / "mlruns" / "optuna" / "smoke.journal"
    proc = start(cmd, tmp_path / "first.log")
    wait_for(path, proc, finished=2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    text = (tmp_path / "first.log").read_text()
    assert proc.returncode == 130, text[-3000:]
    assert "best so far: trial" in text and "Run the same command again to resume" in text
    assert "Traceback" not in text
    models = tmp_path / "experiments" / "smoke" / "models"
    assert not models.exists() or not any(models.iterdir()), "nothing may be exported, not even partly"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "KILLED"
    trials = optuna.load_study(study_name="smoke", storage=journal(path)).get_trials()
    assert not [t.number for t in trials if t.state == TrialState.RUNNING], "a trial was left running"
    # One trial ran when the signal was sent; it may just have finished, so at most one was interrupted.
    interrupted = [t.number for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) <= 1
    nested = {int(r.data.tags["optuna.trial_number"]): r.info.status
              for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert {n: nested.get(n) for n in interrupted} == dict.fromkeys(interrupted, "KILLED")
    assert "RUNNING" not in nested.values()

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    trials = check_study(optuna.load_study(study_name="smoke", storage=journal(path)), n_trials)
    runs = check_mlflow(tmp_path, trials)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FINISHED"


def test_a_ctrl_c_that_optunas_journal_lock_turns_into_another_error_still_counts_as_an_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race seen in test_sigint_stops_cleanly_and_the_study_resumes: Ctrl-C lands while Optuna releases its
    # journal lock, before the rename; the lock's clean-up then raises FileNotFoundError in its place.
    lock = JournalFileOpenLock(str(tmp_path / "study.journal"))
    lock.acquire()

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(FileNotFoundError) as raised:
        lock.release()
    monkeypatch.undo()
    assert is_interrupt(raised.value)
    assert not is_interrupt(FileNotFoundError("a real missing file")) and is_interrupt(KeyboardInterrupt())


# --------------------------------------------------------------------------------------------------
# One worker, trials side by side (search.n_jobs=2): the same trials and model whatever the timing
# --------------------------------------------------------------------------------------------------


@contextmanager
def cpu_load() -> Iterator[None]:
    """A CPU-bound process spinning for as long as the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait(timeout=30)


def train_slowed(
    tmp_path: Path, recordings: list[dict[str, str]], slow_parity: int, monkeypatch: pytest.MonkeyPatch, *extra: str,
    **changes: Any,
) -> TrainResult:
    """Train with ``search.n_jobs=2``, every trial whose number is ``slow_parity`` modulo 2 made 0.3 s slower.

    The objective is the real one (real Optuna, real fits); only its duration changes, so that trials finish in
    another order than in a run with the other parity. ``changes`` go to :func:`make_config`.
    """
    objective = Objective.__call__

    def slowed(self: Objective, trial: optuna.Trial) -> float:
        if trial.number % 2 == slow_parity:
            time.sleep(0.3)
        return objective(self, trial)

    monkeypatch.setattr(Objective, "__call__", slowed)
    try:
        cfg = make_config(tmp_path, recordings, [
            "search.n_trials=12", "search.n_jobs=2", "search.n_startup_trials=3", "tracking.enabled=false",
            "cv.n_splits=3", *extra,
        ], **changes)
        result = train(cfg)
    finally:
        monkeypatch.setattr(Objective, "__call__", objective)
    assert result is not None
    return result


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_two_threads_give_the_same_trials_and_model_on_a_busy_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pruner: str
) -> None:
    recordings = overlapping_recordings(tmp_path / "data", 3, seed=11, spread=2.5, n_units=60)
    first = train_slowed(tmp_path / "a", recordings, 0, monkeypatch, f"search.pruner={pruner}")
    with cpu_load():
        second = train_slowed(tmp_path / "b", recordings, 1, monkeypatch, f"search.pruner={pruner}")

    def trials(result: TrainResult) -> list[tuple[int, str, dict]]:
        return [(t.number, t.state.name, t.params) for t in result.study.get_trials()]

    assert trials(second) == trials(first)
    assert [t.value for t in second.study.trials] == [t.value for t in first.study.trials]
    assert len(trials(first)) == 12
    a, _ = load_model_folder(first.model_folder)
    b, _ = load_model_folder(second.model_folder)
    X = pd.concat([features_for(a, r["metrics"]) for r in recordings])
    assert np.abs(a.predict_proba(X) - b.predict_proba(X)).max() == 0


#: Eight configurations: the sampler proposes some twice within a dozen trials.
DISCRETE_SPACE = {"imputer": {"median": {}, "mean": {}}, "scaler": {"standard": {}, "none": {}},
                  "resampler": {"none": {}}, "classifier": {"logistic_regression": {"C": [0.1, 1.0]}}}


def test_two_threads_skip_the_same_duplicates_and_fit_each_configuration_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recordings = overlapping_recordings(tmp_path / "data", 3, seed=11, spread=2.5, n_units=60)
    fits: list[int] = []
    fit_fold = Objective.fit_fold

    def counted(self: Objective, spec: Any, train: np.ndarray) -> Any:
        fits.append(1)
        return fit_fold(self, spec, train)

    monkeypatch.setattr(Objective, "fit_fold", counted)
    runs = []
    for parity in (0, 1):
        fits.clear()
        result = train_slowed(tmp_path / f"run{parity}", recordings, parity, monkeypatch, "search.n_trials=6",
                              "cv.estimate_new_recordings=false", search_space=DISCRETE_SPACE)
        trials = result.study.get_trials()
        evaluated = [t for t in trials if DUPLICATE_ATTR not in t.user_attrs]
        duplicates = [t for t in trials if DUPLICATE_ATTR in t.user_attrs]
        assert budget(trials, 3).counted == len(evaluated) == 6 and duplicates
        assert result.trial_counts["duplicate"] == len(duplicates)
        # Each duplicate names the trial that evaluated its configuration, and was neither fitted nor scored.
        for d in duplicates:
            original = trials[d.user_attrs[DUPLICATE_ATTR]]
            assert original.params == d.params and DUPLICATE_ATTR not in original.user_attrs
            assert d.state == TrialState.PRUNED and not d.intermediate_values and "fold_scores" not in d.user_attrs
        assert len({json.dumps(t.params, sort_keys=True) for t in evaluated}) == 6
        assert len(fits) == sum(len(t.user_attrs["fold_scores"]) for t in evaluated), "a duplicate was fitted"
        board = pd.read_csv(result.model_folder / "model_accuracies.csv")
        assert set(board.loc[board["state"] == "complete", "trial"]) <= {t.number for t in evaluated}
        runs.append([(t.number, t.state.name, t.params, t.value, t.user_attrs.get(DUPLICATE_ATTR)) for t in trials])
    assert runs[0] == runs[1], "the same trials and duplicates whichever trials finish first"
