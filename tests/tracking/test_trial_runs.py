"""A trial's nested MLflow run: what it holds, writing it to a real SQLite store, and the background writer.

tests/tracking/test_tracker.py covers these through :class:`~unitrefine.tracking.tracker.Tracker`; here each piece is
checked on its own: exact timestamps, metrics and statuses, the store's copy, the writer's thread and order.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from unitrefine.search.outcomes import TrialOutcome
from unitrefine.tracking.trial_runs import MAX_PARAM, RunWriter, TrialRun, ms, trial_run, write_trial_run

WRITER_THREAD = "unitrefine-mlflow-writer"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
END = START + dt.timedelta(seconds=12, milliseconds=345)
END_MS = START_MS + 12_345


def finished(number: int, state: str, value: float | None, completed: dt.datetime | None = END,
             **attrs: Any) -> TrialOutcome:
    return TrialOutcome(study="study-a", number=number, state=state, value=value, params={"C": 0.5},
                        user_attrs=attrs, started=START, completed=completed)


def now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------------------------------------
# ms and trial_run: the run as it is queued
# ------------------------------------------------------------------------------------------------


def test_ms_is_milliseconds_since_the_epoch() -> None:
    assert ms(None) is None
    assert ms(START) == START_MS and ms(END) == END_MS
    assert ms(pd.Timestamp("2026-01-01T00:00:00.250Z")) == START_MS + 250


@pytest.mark.parametrize(("state", "status"), [("complete", "FINISHED"), ("pruned", "KILLED"), ("fail", "FAILED"),
                                               ("running", "FAILED"), ("waiting", "FAILED")])
def test_the_run_status_follows_the_trial_state(state: str, status: str) -> None:
    run = trial_run("parent", finished(3, state, None), {})
    assert (run.status, run.tags["optuna.state"]) == (status, state)


def test_a_complete_trial_has_its_scores_duration_and_times() -> None:
    trial = finished(42, "complete", 0.75, fold_scores=[0.7, 0.8, 0.75], cv_std=0.04)
    run = trial_run("p-1", trial, {"classifier": "svc"})
    assert (run.name, run.start_ms, run.end_ms, run.status) == ("trial-0042", START_MS, END_MS, "FINISHED")
    # Every metric is stamped with the trial's end; the fold scores are steps 0, 1, 2.
    assert [(m.key, m.value, m.timestamp, m.step) for m in run.metrics] == [
        ("cv_fold_score", 0.7, END_MS, 0), ("cv_fold_score", 0.8, END_MS, 1), ("cv_fold_score", 0.75, END_MS, 2),
        ("cv_score", 0.75, END_MS, 0), ("cv_score_std", 0.04, END_MS, 0), ("duration_s", 12.345, END_MS, 0)]
    # Nothing the trial did not record: no worker, warm-start origin or error tag.
    assert run.tags == {"mlflow.parentRunId": "p-1", "optuna.study": "study-a", "optuna.trial_number": "42",
                        "optuna.state": "complete"}
    assert [(p.key, p.value) for p in run.params] == [("classifier", "svc")]


def test_a_trial_pruned_before_it_finished_has_its_folds_only_and_ends_now() -> None:
    before = now_ms()
    run = trial_run("p-1", finished(12345, "pruned", None, completed=None, fold_scores=[0.6, 0.5]), {})
    after = now_ms()
    assert (run.name, run.status, run.start_ms) == ("trial-12345", "KILLED", START_MS)
    assert before <= run.end_ms <= after
    assert [(m.key, m.value, m.step) for m in run.metrics] == [("cv_fold_score", 0.6, 0), ("cv_fold_score", 0.5, 1)]
    assert {m.timestamp for m in run.metrics} == {run.end_ms}


def test_a_trial_never_started_has_no_start_and_no_duration() -> None:
    trial = TrialOutcome(study="s", number=0, state="fail", value=None, completed=END)
    run = trial_run("p", trial, {})
    assert (run.start_ms, run.end_ms, run.metrics) == (None, END_MS, [])


def test_the_error_tag_comes_from_the_trial_unless_one_is_given() -> None:
    trial = finished(1, "fail", None, error="fold 0: ValueError: bad input")
    assert trial_run("p", trial, {}).tags["error"] == "fold 0: ValueError: bad input"
    given = trial_run("p", trial, {}, error="worker lost")
    assert (given.tags["error"], given.status) == ("worker lost", "FAILED")
    # A complete trial stopped with its worker: KILLED, and the reason, though the trial itself has no error.
    stopped = trial_run("p", finished(2, "complete", 0.9), {}, status="KILLED", error="interrupted")
    assert (stopped.status, stopped.tags["error"]) == ("KILLED", "interrupted")


def test_params_are_text_in_their_order_and_cut_at_the_limit() -> None:
    params = {"n": 60, "C": 0.25, "none": None, "list": [1, 2], "flag": True,
              "exact": "x" * MAX_PARAM, "over": "y" * (MAX_PARAM + 1)}
    run = trial_run("p", finished(0, "complete", 0.5), params)
    assert [(p.key, p.value) for p in run.params][:5] == [
        ("n", "60"), ("C", "0.25"), ("none", "None"), ("list", "[1, 2]"), ("flag", "True")]
    assert [(p.key, p.value) for p in run.params][5:] == [("exact", "x" * MAX_PARAM), ("over", "y" * MAX_PARAM)]


def test_a_long_warm_start_origin_is_cut_to_a_tag_mlflow_keeps() -> None:
    run = trial_run("p", finished(0, "complete", 0.5, **{"unitrefine.run.warm_start": "m" * 6000}), {})
    assert run.tags["unitrefine.run.warm_start"] == "m" * 5000


# ------------------------------------------------------------------------------------------------
# write_trial_run: a real SQLite store
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, str]:
    """A SQLite MLflow store with one experiment (made once: its tables take a second or two)."""
    root: Path = tmp_path_factory.mktemp("trial_runs")
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return client, client.create_experiment("exp", artifact_location=(root / "artifacts").as_uri())


def children(client: MlflowClient, experiment_id: str, parent: str) -> dict[int, Any]:
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=50)
    return {int(r.data.tags["optuna.trial_number"]): r for r in runs}


def test_written_runs_read_back_with_their_times_status_tags_params_and_metrics(
    store: tuple[MlflowClient, str]
) -> None:
    client, exp = store
    parent = client.create_run(exp, run_name="study").info.run_id
    complete = finished(0, "complete", 0.75, fold_scores=[0.7, 0.8], cv_std=0.05, worker="host-1")
    pruned = finished(1, "pruned", None, fold_scores=[0.4])
    failed = finished(2, "fail", None, error="fold 1: MemoryError")
    long_value = "z" * (MAX_PARAM + 100)
    for trial in (complete, pruned, failed):
        write_trial_run(client, exp, trial_run(parent, trial, {"classifier": "svc", "svc.kernel": long_value}))

    runs = children(client, exp, parent)
    assert sorted(runs) == [0, 1, 2]
    assert [(runs[n].info.run_name, runs[n].info.status) for n in range(3)] == [
        ("trial-0000", "FINISHED"), ("trial-0001", "KILLED"), ("trial-0002", "FAILED")]
    assert {(r.info.start_time, r.info.end_time) for r in runs.values()} == {(START_MS, END_MS)}
    first = runs[0]
    assert {k: first.data.tags[k] for k in ("optuna.study", "optuna.state", "unitrefine.worker")} == {
        "optuna.study": "study-a", "optuna.state": "complete", "unitrefine.worker": "host-1"}
    assert "error" not in first.data.tags and runs[2].data.tags["error"] == "fold 1: MemoryError"
    # MLflow keeps a value of MAX_PARAM characters.
    assert first.data.params == {"classifier": "svc", "svc.kernel": "z" * MAX_PARAM}
    assert first.data.metrics == pytest.approx(
        {"cv_fold_score": 0.8, "cv_score": 0.75, "cv_score_std": 0.05, "duration_s": 12.345})
    history = client.get_metric_history(first.info.run_id, "cv_fold_score")
    assert sorted((m.step, m.value, m.timestamp) for m in history) == [(0, 0.7, END_MS), (1, 0.8, END_MS)]
    assert runs[1].data.metrics == pytest.approx({"cv_fold_score": 0.4, "duration_s": 12.345})
    assert runs[2].data.metrics == pytest.approx({"duration_s": 12.345})


def test_a_write_the_store_refuses_reaches_the_search_and_writes_nothing(store: tuple[MlflowClient, str]) -> None:
    client, exp = store
    parent = client.create_run(exp, run_name="study").info.run_id
    missing = str(10**9)  # no such experiment
    writer = RunWriter(lambda run: write_trial_run(client, missing, run))
    writer.put(trial_run(parent, finished(0, "complete", 0.5), {}))
    with pytest.raises(MlflowException, match=missing):
        writer.flush()
    assert children(client, exp, parent) == {}


# ------------------------------------------------------------------------------------------------
# RunWriter: one thread, in order, errors kept
# ------------------------------------------------------------------------------------------------


def blank(i: int) -> TrialRun:
    return TrialRun(f"trial-{i:04d}", None, 0, "FINISHED", {}, [], [])


def writer_threads() -> int:
    return sum(t.name == WRITER_THREAD for t in threading.enumerate())


def test_put_does_not_wait_for_the_store_and_runs_are_written_in_order_on_one_thread() -> None:
    gate = threading.Event()
    seen: list[tuple[str, int, str]] = []

    def write(run: TrialRun) -> None:
        assert gate.wait(10), "the test never opened the gate"
        seen.append((run.name, threading.get_ident(), threading.current_thread().name))

    writer = RunWriter(write)
    for i in range(25):
        writer.put(blank(i))
    assert seen == []  # all 25 queued while the store is still busy with the first
    gate.set()
    writer.flush()
    assert [name for name, _, _ in seen] == [f"trial-{i:04d}" for i in range(25)]
    (ident, name), = {(i, n) for _, i, n in seen}
    assert name == WRITER_THREAD and ident != threading.get_ident()


def test_the_thread_starts_with_the_first_run_and_only_once() -> None:
    written: list[str] = []
    writer = RunWriter(lambda run: written.append(run.name))
    before = writer_threads()
    writer.flush()  # nothing queued: returns at once, no thread
    assert writer_threads() == before
    writer.put(blank(0))
    writer.put(blank(1))
    writer.flush()
    assert writer_threads() == before + 1 and written == ["trial-0000", "trial-0001"]


def test_runs_put_from_many_threads_are_all_written_each_threads_in_its_order() -> None:
    written: list[str] = []
    idents: set[int] = set()

    def write(run: TrialRun) -> None:
        idents.add(threading.get_ident())
        written.append(run.name)

    writer = RunWriter(write)
    start = threading.Barrier(4)

    def producer(k: int) -> None:
        start.wait(10)
        for i in range(10):
            writer.put(blank(100 * k + i))

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    writer.flush()
    assert sorted(written) == sorted(f"trial-{100 * k + i:04d}" for k in range(4) for i in range(10))
    for k in range(4):
        mine = [n for n in written if n.startswith(f"trial-{k:02d}")]
        assert mine == [f"trial-{100 * k + i:04d}" for i in range(10)]
    assert len(idents) == 1


def test_the_first_failure_is_kept_raised_again_and_no_later_run_is_tried() -> None:
    tried: list[str] = []
    first = OSError("disk I/O error")

    def write(run: TrialRun) -> None:
        tried.append(run.name)
        if run.name == "trial-0001":
            raise first
        if run.name == "trial-0002":
            raise KeyError("would replace the first error")

    writer = RunWriter(write)
    for i in range(4):
        writer.put(blank(i))
    for _ in range(2):  # every later flush raises it again: the search cannot miss it
        with pytest.raises(OSError, match="disk I/O error") as raised:
            writer.flush()
        assert raised.value is first
    assert tried == ["trial-0000", "trial-0001"]
