"""The order of one worker's asks and tells, so that what the sampler and the pruner see does not depend on timing.

One worker process gives the same trials, and so the same model, on a busy or an idle machine, whatever its
``search.n_jobs``. What the sampler and the pruner know when they decide must not depend on which trial finished
first, so a worker with ``n`` threads keeps a window of ``n`` trials (:class:`Window`):

* trial ``k`` is asked (in trial-number order, under the study lock) only once trial ``k - n`` is told, and all
  its parameters are drawn then (the objective's ``sample``), so the sampler's random draws are taken in that
  order and it sees exactly trials ``<= k - n`` finished and trials ``k - n + 1 .. k - 1`` running (TPE's
  ``constant_liar`` counts those with their parameters);
* a finished trial ``k`` is told only after trial ``k + n - 1`` is asked and every earlier trial is told: a
  fast trial waits for the slower ones started before it (the cost: an idle thread while it waits);
* the pruner judges trial ``k`` by trials ``<= k - n`` only (:class:`unitrefine.search.pruning.WindowedPruner`);
* trials are told, logged to MLflow and counted by the callbacks in trial-number order;
* a trial the objective's ``sample`` marks a duplicate (its configuration was evaluated by an earlier trial:
  :data:`unitrefine.search.trial_attrs.DUPLICATE_ATTR`) is not run: it is told PRUNED at once, under the study
  lock, so in ask order, and takes no place in the window (the next trial is asked at once); it is not logged to
  MLflow nor passed to the callbacks, and does not count toward the budget. A worker stops asking when the last
  :data:`unitrefine.search.budget.MAX_DUPLICATES_IN_A_ROW` trials were all duplicates (the search space looks
  exhausted).

With ``n = 1`` this is the sequential study. Reproducibility ends where timing decides what runs: a time cap
(``search.timeout_s``; a search it stops is recorded as such, :func:`unitrefine.search.study.stopped_by_timeout`);
several worker processes, on one host or many, on one study (each keeps its own window; what one sees of the
others' trials depends on timing); resuming an interrupted study (the resumed sampler draws from a fresh random
stream, so that workers joining a study do not repeat the creator's draws); and an objective without a
``sample`` method (its parameters are drawn while other trials run).
"""

from __future__ import annotations

import threading


class Window:
    """Orders one worker's asks and tells so that what the sampler and the pruner see does not depend on timing.

    Positions count this worker's asks (other workers' trials are not in it). Ask ``s`` waits until the trial
    asked at ``s - size`` is told. The trial asked at ``s`` is told once every earlier one is told and the
    trial at ``s + size - 1`` is asked, or at once when this worker will ask no more (:meth:`close`: budget
    used, time cap) or stops (:meth:`halt`).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._cond = threading.Condition()
        self._asked = 0
        self._told = 0
        self._untold: dict[int, int] = {}  # trial number -> its position, until it is told
        self._held: set[int] = set()  # trials finished and waiting for their turn to be told
        self._closed = False
        self._halted = False

    def _free(self) -> bool:
        return self._halted or self._asked - self._told < self.size

    def may_ask(self) -> bool:
        """Whether this worker may ask a trial now."""
        with self._cond:
            return self._free()

    def wait_to_ask(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until this worker may ask a trial; whether it may."""
        with self._cond:
            return self._cond.wait_for(self._free, timeout)

    def cutoff(self, number: int) -> int:
        """What a trial asked now may see: the trials numbered below this worker's oldest untold trial."""
        with self._cond:
            return min(self._untold, default=number)

    def asked(self, number: int) -> None:
        """Trial ``number`` was asked and its parameters drawn."""
        with self._cond:
            self._untold[number] = self._asked
            self._asked += 1
            self._cond.notify_all()

    def _turn(self, number: int) -> bool:
        position = self._untold.get(number)
        if self._halted or position is None:
            return True
        return position == self._told and (self._closed or self._asked >= position + self.size)

    def wait_to_tell(self, number: int, poll_s: float) -> None:
        """Wait until finished trial ``number`` may be told."""
        with self._cond:
            self._held.add(number)
            while not self._turn(number):
                self._cond.wait(poll_s)

    def told(self, number: int) -> None:
        """Trial ``number`` was told."""
        with self._cond:
            if self._untold.pop(number, None) is not None:
                self._told += 1
            self._held.discard(number)
            self._cond.notify_all()

    def dropped(self, number: int) -> None:
        """Trial ``number`` stopped waiting for its turn without being told (the worker stops)."""
        with self._cond:
            self._held.discard(number)
            self._cond.notify_all()

    def close(self) -> None:
        """This worker asks no more trials (budget used, time cap): results are told at once, in order.

        For good: a thread that still asks one later (a retry of another worker's trial, or a thread that was
        past its time check) must not wait for asks that no thread will make.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def halt(self) -> None:
        """The worker stops: nothing waits any more."""
        with self._cond:
            self._halted = True
            self._cond.notify_all()

    def wait_released(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until no finished trial waits to be told."""
        with self._cond:
            self._cond.wait_for(lambda: not self._held, timeout)

