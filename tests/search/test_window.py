"""One worker's ask/tell order (:class:`unitrefine.search.window.Window`), driven by real threads."""

from __future__ import annotations

import threading
import time

from unitrefine.search.window import Window

POLL_S = 0.01


class _Run:
    """Trials ``0 .. n_trials - 1`` run by ``size`` threads the way a worker runs them, each trial finishing only
    after the later trials of its group of ``size`` finished, so that within a group the last asked finishes first.
    What each ask saw and the order of finishes and tells are recorded."""

    def __init__(self, size: int, n_trials: int) -> None:
        self.window = Window(size)
        self.size = size
        self.n_trials = n_trials
        self.lock = threading.Lock()  # the study lock: asks and tells happen under it
        self.cond = threading.Condition()
        self.next = 0
        self.asked: list[int] = []
        self.finished: list[int] = []
        self.told: list[int] = []
        self.told_when_asked: dict[int, set[int]] = {}
        self.cutoffs: dict[int, int] = {}

    def _ask(self) -> int | None:
        while not self.window.wait_to_ask(POLL_S):
            pass
        with self.lock:
            if not self.window.may_ask():
                return -1  # another thread took the turn
            if self.next >= self.n_trials:
                self.window.close()  # the budget is taken
                return None
            number, self.next = self.next, self.next + 1
            self.cutoffs[number] = self.window.cutoff(number)
            self.told_when_asked[number] = set(self.told)
            self.window.asked(number)
            self.asked.append(number)
            return number

    def _finish(self, number: int) -> None:
        group = range(number + 1, min((number // self.size + 1) * self.size, self.n_trials))
        with self.cond:
            ok = self.cond.wait_for(lambda: all(k in self.finished for k in group), timeout=10)
            assert ok, f"trial {number} waited for {list(group)}; finished: {self.finished}"
            self.finished.append(number)
            self.cond.notify_all()

    def thread_main(self) -> None:
        while (number := self._ask()) is not None:
            if number < 0:
                continue
            self._finish(number)
            self.window.wait_to_tell(number, POLL_S)
            with self.lock:
                self.told.append(number)
                self.window.told(number)

    def run(self) -> None:
        threads = [threading.Thread(target=self.thread_main, daemon=True) for _ in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert not any(t.is_alive() for t in threads), f"stuck: asked {self.asked}, told {self.told}"


def test_trials_are_told_in_ask_order_when_later_trials_finish_first() -> None:
    run = _Run(size=3, n_trials=8)
    run.run()
    # Within each window the last trial asked finished first ...
    assert run.finished == [2, 1, 0, 5, 4, 3, 7, 6]
    # ... yet they were asked and told in trial-number order.
    assert run.asked == list(range(8))
    assert run.told == list(range(8))
    # Trial k was asked only once trial k - 3 was told, and not before trial k - 2 could be told: it saw exactly
    # the trials <= k - 3 told, and its pruner may see those only (the cutoff is the oldest untold trial).
    assert run.told_when_asked == {k: set(range(max(k - 2, 0))) for k in range(8)}
    assert run.cutoffs == {k: max(k - 2, 0) for k in range(8)}


def test_a_window_of_one_is_the_sequential_study() -> None:
    run = _Run(size=1, n_trials=4)
    run.run()
    assert run.asked == run.told == run.finished == [0, 1, 2, 3]
    assert run.told_when_asked == {k: set(range(k)) for k in range(4)}
    assert run.cutoffs == {0: 0, 1: 1, 2: 2, 3: 3}


def test_an_ask_waits_until_the_trial_a_window_earlier_is_told() -> None:
    window = Window(2)
    window.asked(0)
    assert window.may_ask()
    window.asked(1)
    assert not window.may_ask()
    start = time.monotonic()
    assert window.wait_to_ask(0.05) is False
    assert time.monotonic() - start >= 0.04
    got: list[bool] = []
    asker = threading.Thread(target=lambda: got.append(window.wait_to_ask(10)))
    asker.start()
    asker.join(0.1)
    assert asker.is_alive() and got == []
    window.told(0)
    asker.join(5)
    assert got == [True] and window.may_ask()
    # A trial not in the window (a duplicate, told at once) frees no place.
    window.asked(2)
    window.told(7)
    assert not window.may_ask() and window.cutoff(3) == 1


def _waiting_to_tell(window: Window, number: int, done: list[int]) -> threading.Thread:
    def wait() -> None:
        window.wait_to_tell(number, POLL_S)
        done.append(number)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    thread.join(0.1)
    assert thread.is_alive() and done == [], f"trial {number} was let through before its turn"
    return thread


def test_close_tells_the_held_results_at_once_in_order() -> None:
    window = Window(3)
    for number in (0, 1):
        window.asked(number)
    done: list[int] = []
    first = _waiting_to_tell(window, 0, done)  # waits for trial 2 to be asked
    second = _waiting_to_tell(window, 1, done)  # waits for trial 0 to be told
    window.close()  # the budget is taken: no trial 2 will be asked
    first.join(5)
    assert done == [0] and second.is_alive()
    window.told(0)
    second.join(5)
    assert done == [0, 1]
    window.told(1)
    # For good: a trial asked after the close (a retry) is told as soon as the earlier ones are.
    window.asked(2)
    window.wait_to_tell(2, POLL_S)
    window.told(2)
    assert window.cutoff(9) == 9


def test_halt_releases_every_wait_and_dropped_trials_are_not_counted_as_told() -> None:
    window = Window(2)
    window.asked(0)
    window.asked(1)
    done: list[int] = []
    waiter = _waiting_to_tell(window, 1, done)  # trial 0 still runs
    start = time.monotonic()
    window.wait_released(0.1)  # trial 1 is held
    assert time.monotonic() - start >= 0.09
    window.halt()
    waiter.join(5)
    assert done == [1] and window.may_ask() and window.wait_to_ask(0)
    # The stopping worker does not tell it: dropped, it no longer holds the worker back, but is still untold.
    window.dropped(1)
    start = time.monotonic()
    window.wait_released(5)
    assert time.monotonic() - start < 4  # not the whole timeout: nothing is held
    assert window.cutoff(5) == 0


def test_a_dropped_trial_keeps_its_place_until_it_is_told() -> None:
    window = Window(1)
    window.asked(0)
    window.wait_to_tell(0, POLL_S)  # its turn at once: the window is one trial wide
    window.dropped(0)
    assert not window.may_ask() and window.cutoff(1) == 0
    window.told(0)
    assert window.may_ask() and window.cutoff(1) == 1
