"""What a run shows while it works: stage times, bars that log lines don't break, fits side by side."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time

import pytest

from unitrefine.progress import Stages, bar, parallel_map, shown, ticking


def test_parallel_map_runs_n_jobs_at_once_and_keeps_the_items_order() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def work(x: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05 * (5 - x))  # later items finish first
        with lock:
            running -= 1
        return x * x

    assert parallel_map(work, list(range(5)), n_jobs=2, desc="test") == [0, 1, 4, 9, 16]
    assert most == 2


def test_parallel_map_raises_the_error_of_a_failed_item() -> None:
    def work(x: int) -> int:
        if x == 2:
            raise ValueError("item 2")
        return x

    with pytest.raises(ValueError, match="item 2"):
        parallel_map(work, [0, 1, 2, 3], n_jobs=2, desc="test")


def test_ticking_redraws_a_bar_while_a_long_step_runs() -> None:
    class Counter:
        refreshed = 0

        def refresh(self) -> None:
            self.refreshed += 1

    counter = Counter()
    with ticking(counter, every_s=0.05):
        time.sleep(0.4)
    after = counter.refreshed
    time.sleep(0.15)
    assert after >= 4
    assert counter.refreshed == after  # stops with the step


def test_stages_are_timed_in_order_and_announced(caplog: pytest.LogCaptureFixture) -> None:
    stage = Stages()
    with caplog.at_level("INFO", logger="unitrefine"):
        with stage("first", "doing the first thing"):
            time.sleep(0.05)
        with stage("second", "then the next"):
            pass
    assert list(stage.seconds) == ["first", "second"]
    assert stage.seconds["first"] >= 0.05
    assert "Stage first: doing the first thing." in caplog.text and "Stage second done in" in caplog.text


def test_a_log_line_printed_while_a_bar_is_on_screen_starts_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with shown():
            progress = bar(3, "trials", "trial")
            progress.update(1)
            logging.getLogger("unitrefine.test").warning("a line in the middle")
            progress.update(2)
            progress.close()
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    assert re.search(r"(^|[\r\n])LOG a line in the middle\n", err), err
    assert err.count("LOG a line in the middle") == 1
