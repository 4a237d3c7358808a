"""What a run shows while it works: each stage's start and duration, and progress bars that log lines don't break.

Log lines go through tqdm while a run is shown (:func:`shown`), so that a line printed while a bar is on
screen appears above the bar instead of glued to it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@contextmanager
def shown() -> Iterator[None]:
    """Route console log lines through tqdm for the duration (they print above any bar on screen)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def bar(total: int | None, desc: str, unit: str, initial: int = 0) -> Any:
    """A progress bar on stderr that stays on screen when it closes (``total=None``: a counter with elapsed time)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


@contextmanager
def ticking(progress: Any, every_s: float = 1.0) -> Iterator[Any]:
    """Redraw ``progress`` every ``every_s`` seconds, so that its elapsed time moves while a long step runs."""
    stop = threading.Event()

    def redraw() -> None:
        while not stop.wait(every_s):
            progress.refresh()

    thread = threading.Thread(target=redraw, name="unitrefine-progress", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join()


@contextmanager
def working(desc: str) -> Iterator[None]:
    """Show ``desc`` with the time it has taken so far, for a step that reports no progress of its own."""
    progress = bar(None, desc, "step")
    try:
        with ticking(progress):
            yield
        progress.update(1)
    finally:
        progress.close()


class Stages:
    """Times the stages of a run: logs when each starts and how long it took, and keeps the durations."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, what: str) -> Iterator[None]:
        """Run one stage: ``with stages("refit", "fitting ..."):``."""
        log.info("Stage %s: %s.", name, what)
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 2)
        log.info("Stage %s done in %.1f s.", name, self.seconds[name])


class Scored(Protocol):
    """A trial, as far as a progress bar shows it."""

    number: int
    value: float | None


class TrialProgress:
    """A progress bar over trials showing the best score so far (a callback of the search's workers)."""

    def __init__(self, total: int, done: int) -> None:
        self.bar = bar(total, "trials", "trial", initial=done)
        self._lock = threading.Lock()
        self._ticking = ticking(self.bar)  # a trial can take longer than a few seconds: keep its clock moving
        self._ticking.__enter__()

    def __call__(self, trial: Scored, best: Scored | None) -> None:
        """Advance the bar by one finished ``trial``; show the ``best`` trial so far (None: none completed)."""
        with self._lock:
            self.bar.update(1)
            if best is not None and best.value is not None:
                self.bar.set_postfix(best=f"{best.value:.4f}", trial=best.number)

    def close(self) -> None:
        """Close the bar."""
        self._ticking.__exit__(None, None, None)
        self.bar.close()


def parallel_map(fn: Callable[[T], R], items: Sequence[T], n_jobs: int, desc: str, unit: str = "fit") -> list[R]:
    """``[fn(item) for item in items]`` on ``n_jobs`` threads, with a progress bar; results in the items' order.

    Threads, not processes: the fits release the GIL, share the data and hand fitted models back without
    copying them (each fit keeps to one thread, see :mod:`unitrefine.process`). joblib's thread workers are
    daemons, so a Ctrl-C ends the command without waiting for fits still running.
    """
    from joblib import Parallel, delayed

    def indexed(i: int) -> tuple[int, R]:
        return i, fn(items[i])

    results: dict[int, R] = {}
    progress = bar(len(items), desc, unit)
    try:
        jobs = Parallel(n_jobs=max(1, min(n_jobs, len(items))), prefer="threads", return_as="generator_unordered")
        with ticking(progress):
            for i, result in jobs(delayed(indexed)(i) for i in range(len(items))):
                results[i] = result
                progress.update(1)
    finally:
        progress.close()
    return [results[i] for i in range(len(items))]
