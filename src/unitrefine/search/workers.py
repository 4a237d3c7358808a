"""One worker of a study: join it, claim trials within the study-wide budget, and elect the one exporter.

Any number of workers (processes on one host or many, each with ``search.n_jobs`` threads) run the same
command against one storage. They cooperate through three things the storage provides (see
:mod:`unitrefine.search.storage`):

* the **study lock**: joining (create or resume, check the identity, create the MLflow parent run) and
  *claiming* a trial happen under it. A claim fails orphaned trials (their worker died), queues retries of
  interrupted trials, and starts a trial only if ``counted + running < n_trials``; Optuna's ``ask`` (which
  pops a queued trial first) runs while the lock is held, and so does drawing the trial's parameters; then
  the lock is released and the trial runs. So no two workers can both take the last slot of the budget, and
  the study ends with exactly ``n_trials`` counted trials (:func:`unitrefine.search.budget.budget`).
* **liveness**: Optuna's heartbeat (RDB storages) or a lock file per worker (journal files), so a killed
  worker's running trial is failed and retried by another worker, or by the next run of the command
  (:mod:`unitrefine.search.trial_records`).
* the **finalize lock**, taken without waiting by a worker that finds no trial running and the budget
  used up: the one that gets it refits, exports and registers; it records that in the study, so that a
  later worker (or a re-run) finds nothing left to do (:mod:`unitrefine.search.election`).

A worker with nothing left to claim waits for the trials other workers are running (one of them may be
orphaned and retried), so the last worker to finish is the one that exports. Within a worker, the order of asks
and tells is fixed (:mod:`unitrefine.search.window`), so that one worker gives the same trials on a busy or an idle
machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import optuna

from unitrefine.errors import is_interrupt
from unitrefine.search.budget import MAX_DUPLICATES_IN_A_ROW, Budget, budget, is_duplicate
from unitrefine.search.election import Finalizer, elect
from unitrefine.search.locks import Lock
from unitrefine.search.outcomes import TrialOutcome, outcome
from unitrefine.search.pruning import WindowedPruner
from unitrefine.search.session import Session
from unitrefine.search.study import record_stopped_by_timeout
from unitrefine.search.trial_attrs import DUPLICATE_ATTR, WORKER_ATTR
from unitrefine.search.trial_records import TrialParams, fail_unnamed, log_orphans, log_trial, record_stopped, settle
from unitrefine.search.window import Window

log = logging.getLogger(__name__)

#: Called after each trial a worker finishes: the trial, and the study's best trial so far (None: none completed).
Callback = Callable[[TrialOutcome, TrialOutcome | None], None]


@runtime_checkable
class SampledObjective(Protocol):
    """An objective that can draw all of a trial's parameters before it evaluates the trial."""

    def sample(self, trial: optuna.Trial) -> object:
        """Draw every parameter of ``trial`` (a trial that has them gets them back unchanged)."""
        ...

    def __call__(self, trial: optuna.Trial) -> float:
        """Evaluate ``trial``."""
        ...


class _ThreadState(threading.local):
    """Per-thread: whether this thread holds the study lock (the objective releases it)."""

    holds_lock = False


@dataclass
class Worker:
    """Runs trials of ``session.study`` until the budget is used up, then takes part in the election.

    Parameters
    ----------
    session : Session
    objective : callable
        ``objective(trial) -> float``; with a ``sample(trial)`` method (:class:`SampledObjective`) the worker
        draws each trial's parameters as it starts it, which makes ``n_jobs > 1`` reproducible.
    n_trials, n_jobs, max_retries : int
        The study-wide budget, threads in this worker, retries of an interrupted trial.
    timeout_s : float or None
        Stop claiming trials after this many seconds; if that leaves the budget unused, the study records
        that the time cap stopped it (:func:`unitrefine.search.study.stopped_by_timeout`).
    poll_s : float
        How often a worker with nothing to claim looks at the others' running trials.
    trial_params : callable
        A finished trial's parameters as logged, from the parameters Optuna drew.
    callbacks : sequence of callable
        :data:`Callback` run after each trial this worker finishes (after it is logged); not after a
        duplicate, which is neither fitted nor logged.
    """

    session: Session
    objective: Callable[[optuna.Trial], float]
    n_trials: int
    n_jobs: int
    max_retries: int
    timeout_s: float | None
    poll_s: float
    trial_params: TrialParams
    callbacks: Sequence[Callback] = ()
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _running: dict[int, int] = field(default_factory=dict, init=False)
    _errors: list[BaseException] = field(default_factory=list, init=False)
    _state: _ThreadState = field(default_factory=_ThreadState, init=False)
    _deadline: float | None = field(default=None, init=False)
    _timed_out: bool = field(default=False, init=False)
    _exhausted: bool = field(default=False, init=False)
    _window: Window = field(init=False)

    def __post_init__(self) -> None:
        self._window = Window(self.n_jobs)

    @property
    def study(self) -> optuna.Study:
        """The study."""
        return self.session.study

    def run(self) -> Finalizer | None:
        """Take part in the search; return a :class:`Finalizer` if this worker is the one to export.

        Raises
        ------
        KeyboardInterrupt
            On Ctrl-C (or SIGTERM from the command line): this worker's running trials are marked FAIL in
            Optuna (to be retried on resume) and KILLED in MLflow, the best trial so far is reported, and
            the parent run is marked KILLED if no other worker is still running trials.
        """
        started, cpu_started = time.monotonic(), time.process_time()
        self._deadline = None if self.timeout_s is None else started + self.timeout_s
        lock = self.session.store.study_lock(self.session.experiment)
        threads = [
            threading.Thread(target=self._thread_main, args=(lock,), name=f"unitrefine-trials-{i}", daemon=True)
            for i in range(1, self.n_jobs)
        ]
        try:
            with lock:
                b = self._prepare()
                if b.counted < self.n_trials and not b.exhausted:
                    self.session.tracker.set_running()
                log_orphans(self.session, self._params)
            for t in threads:
                t.start()
            self._loop(lock)
            for t in threads:
                t.join()
            if self._errors:
                raise self._errors[0]
            self._record_timeout()
            self.session.tracker.flush()  # this worker's trial runs are written in the background
            log.info("This worker searched for %.1f s (its trials, and their MLflow runs written; CPU time of the "
                     "process %.1f s).", time.monotonic() - started, time.process_time() - cpu_started)
        except KeyboardInterrupt:
            self._stopped_safely("KILLED", "interrupted (Ctrl-C or SIGTERM)")
            raise
        except Exception as exc:
            if not is_interrupt(exc):
                self._stopped_safely("FAILED", "the worker stopped on an error")
                raise
            self._stopped_safely("KILLED", "interrupted (Ctrl-C or SIGTERM)")
            raise KeyboardInterrupt from exc
        finally:
            self.session.store.close()
        return self._elect(lock)

    def _thread_main(self, lock: Lock) -> None:
        try:
            self._loop(lock)
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self._errors.append(exc)
            self._halt()

    def _halt(self) -> None:
        self._stop.set()
        self._window.halt()

    def _loop(self, lock: Lock) -> None:
        while not self._stop.is_set():
            if self._past_deadline():
                return
            if not self._window.wait_to_ask(self.poll_s):
                continue  # this worker's oldest trial still runs (see Window)
            lock.acquire()
            self._state.holds_lock = True
            try:
                if self._stop.is_set():
                    return
                if not self._window.may_ask():
                    continue  # another thread of this worker took the turn
                b = self._prepare()
                if b.counted + b.running < self.n_trials and not b.exhausted:
                    self.study.optimize(self._claimed, n_trials=1, callbacks=[self._after_trial])
                    self._running.pop(threading.get_ident(), None)
                    continue
                if b.exhausted:
                    self._say_exhausted(b)
                self._window.close()  # the budget is taken: results held for later asks are told now
            finally:
                if self._state.holds_lock:
                    self._state.holds_lock = False
                    lock.release()
            if b.running == 0:
                return
            self._stop.wait(self.poll_s)

    def _say_exhausted(self, b: Budget) -> None:
        """Warn (once) that the search ends before its budget because the sampler repeats itself."""
        if self._exhausted:
            return
        self._exhausted = True
        log.warning(
            "The last %d configurations the sampler proposed had all been evaluated already: the search space looks "
            "exhausted, and the search of study '%s' stops after %d distinct configurations (search.n_trials=%d). "
            "Widen search_space to search further.", MAX_DUPLICATES_IN_A_ROW, self.study.study_name, b.counted,
            self.n_trials,
        )

    def _past_deadline(self) -> bool:
        """Whether ``search.timeout_s`` has passed (then noting whether it leaves the budget unused). A cap shorter
        than the start-up never leaves the study without a trial: the first one always runs."""
        if self._deadline is None or time.monotonic() < self._deadline:
            return False
        b = budget(self.study.get_trials(deepcopy=False), self.max_retries)
        if b.counted + b.running == 0:
            return False
        self._window.close()
        if b.counted + b.running < self.n_trials:
            self._timed_out = True
        return True

    def _record_timeout(self) -> None:
        """Record in the study whether the time cap ended the search before its budget; warn if it did."""
        counted = budget(self.study.get_trials(deepcopy=False), self.max_retries).counted
        stopped = self._timed_out and counted < self.n_trials
        if stopped:
            log.warning(
                "search.timeout_s=%g s stopped the search after %d of %d trials. How many trials fit in the time "
                "depends on this machine's speed and load, so this result is not reproducible; without a time cap "
                "(search.timeout_s=null) the same command gives the same model.",
                self.timeout_s, counted, self.n_trials,
            )
        record_stopped_by_timeout(self.study, stopped)

    def _claimed(self, trial: optuna.Trial) -> float:
        """The objective as Optuna calls it, under the study lock: start the trial, release the lock, run it, and
        return its result (or raise TrialPruned) only when it is its turn to be told (:class:`Window`)."""
        self._running[threading.get_ident()] = trial.number  # first: a Ctrl-C from here on finds the trial
        trial.set_user_attr(WORKER_ATTR, self.session.store.worker_id)
        earlier = self._start(trial)
        if earlier is not None:  # a duplicate: told now, still under the lock, so in ask order
            raise optuna.TrialPruned(f"the configuration of trial {earlier}, not fitted again")
        self._state.holds_lock = False
        self.session.store.study_lock(self.session.experiment).release()
        try:
            value = self.objective(trial)
        except optuna.TrialPruned:
            self._await_turn(trial.number)
            raise
        self._await_turn(trial.number)
        return value

    def _start(self, trial: optuna.Trial) -> int | None:
        """In ask order: draw the trial's parameters, fix which trials its pruner sees, count the ask.

        Returns the trial it duplicates (and then neither the pruner nor the window knows it), or None.
        """
        if isinstance(self.objective, SampledObjective):
            self.objective.sample(trial)
            earlier = trial.user_attrs.get(DUPLICATE_ATTR)
            if earlier is not None:
                return int(earlier)
        pruner = self.study.pruner
        if isinstance(pruner, WindowedPruner):
            frozen = next(t for t in reversed(self.study.get_trials(deepcopy=False)) if t.number == trial.number)
            pruner.start(self.study, frozen, self._window.cutoff(trial.number))
        self._window.asked(trial.number)
        return None

    def _await_turn(self, number: int) -> None:
        try:
            self._window.wait_to_tell(number, self.poll_s)
        except BaseException:
            self._window.dropped(number)
            raise

    def _after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna's callback: the trial is told; then, unless it is a duplicate, log it and run the callbacks."""
        self._told(study, trial)
        if is_duplicate(trial):
            return
        log_trial(self.session, trial, self.trial_params)
        if not self.callbacks:
            return
        try:
            best: TrialOutcome | None = outcome(study.study_name, study.best_trial)
        except ValueError:  # no completed trial yet
            best = None
        for callback in self.callbacks:
            callback(outcome(study.study_name, trial), best)

    def _told(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """First callback after each trial: it is told, so the next trial may be asked."""
        self._window.told(trial.number)
        if isinstance(study.pruner, WindowedPruner):
            study.pruner.finish(trial.number)

    def _prepare(self) -> Budget:
        """Under the study lock: fail orphaned trials, queue retries of interrupted ones, count the budget."""
        return settle(self.session, self.max_retries, self._params)

    def _params(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """:attr:`trial_params`, or Optuna's parameters of a trial stopped while they were drawn (some missing)."""
        try:
            return self.trial_params(params)
        except KeyError:
            return params

    def _stopped_safely(self, status: str, why: str) -> None:
        """:meth:`_stopped`, never masking the exception that stopped the worker."""
        try:
            self._stopped(status, why)
        except Exception as exc:  # the storage or MLflow may be what failed
            log.warning("Could not record the stopped trials (%s: %s).", type(exc).__name__, exc)

    def _stopped(self, status: str, why: str) -> None:
        """Record this worker's running trials as stopped, report the best so far, end the parent run if last.

        Trials that finished and wait for their turn to be told are told first, with their results.
        """
        self._halt()
        self._window.wait_released(timeout=5.0)
        unnamed = fail_unnamed(self.study, self.session.store.study_lock(self.session.experiment))
        record_stopped(self.session, [*self._running.values(), *unnamed], status, why, self._params,
                       self.n_trials, self.max_retries)

    def _elect(self, lock: Lock) -> Finalizer | None:
        def settled() -> Budget:
            b = self._prepare()
            log_orphans(self.session, self._params)
            return b

        return elect(self.session, lock, settled)
