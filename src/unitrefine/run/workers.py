"""One worker of a study: join it, claim trials within the study-wide budget, and elect the one exporter.

Any number of workers (processes on one host or many, each with ``search.n_jobs`` threads) run the same
command against one storage. They cooperate through three things the storage provides (see
:mod:`unitrefine.search.storage`):

* the **study lock**: joining (create or resume, check the identity, create the MLflow parent run) and
  *claiming* a trial happen under it. A claim fails orphaned trials (their worker died), queues retries of
  interrupted trials, and starts a trial only if ``counted + running < n_trials``; Optuna's ``ask`` (which
  pops a queued trial first) runs while the lock is held, and so does drawing the trial's parameters; then
  the lock is released and the trial runs. So no two workers can both take the last slot of the budget, and
  the study ends with exactly ``n_trials`` counted trials (:func:`unitrefine.search.study.budget`).
* **liveness**: Optuna's heartbeat (RDB storages) or a lock file per worker (journal files), so a killed
  worker's running trial is failed and retried by another worker, or by the next run of the command.
* the **finalize lock**, taken without waiting by a worker that finds no trial running and the budget
  used up: the one that gets it refits, exports and registers; it records that in the study, so that a
  later worker (or a re-run) finds nothing left to do.

A worker with nothing left to claim waits for the trials other workers are running (one of them may be
orphaned and retried), so the last worker to finish is the one that exports.

Reproducibility. One worker process gives the same trials, and so the same model, on a busy or an idle machine,
whatever its ``search.n_jobs``. What the sampler and the pruner know when they decide must not depend on which
trial finished first, so a worker with ``n`` threads keeps a window of ``n`` trials (:class:`_Window`):

* trial ``k`` is asked (in trial-number order, under the study lock) only once trial ``k - n`` is told, and all
  its parameters are drawn then (the objective's ``sample``), so the sampler's random draws are taken in that
  order and it sees exactly trials ``<= k - n`` finished and trials ``k - n + 1 .. k - 1`` running (TPE's
  ``constant_liar`` counts those with their parameters);
* a finished trial ``k`` is told only after trial ``k + n - 1`` is asked and every earlier trial is told: a
  fast trial waits for the slower ones started before it (the cost: an idle thread while it waits);
* the pruner judges trial ``k`` by trials ``<= k - n`` only (:class:`unitrefine.search.study.WindowedPruner`);
* trials are told, logged to MLflow and counted by the callbacks in trial-number order;
* a trial the objective's ``sample`` marks a duplicate (its configuration was evaluated by an earlier trial:
  :data:`unitrefine.search.study.DUPLICATE_ATTR`) is not run: it is told PRUNED at once, under the study lock, so in ask
  order, and takes no place in the window (the next trial is asked at once); it is not logged to MLflow nor
  passed to the callbacks, and does not count toward the budget. A worker stops asking when the last
  :data:`unitrefine.search.study.MAX_DUPLICATES_IN_A_ROW` trials were all duplicates (the search space looks exhausted).

With ``n = 1`` this is the sequential study. Reproducibility ends where timing decides what runs: a time cap
(``search.timeout_s``; a search it stops is recorded as such, :func:`unitrefine.search.study.stopped_by_timeout`);
several worker processes, on one host or many, on one study (each keeps its own window; what one sees of the
others' trials depends on timing); resuming an interrupted study (the resumed sampler draws from a fresh random
stream, so that workers joining a study do not repeat the creator's draws); and an objective without a
``sample`` method (its parameters are drawn while other trials run).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import optuna

from unitrefine.errors import is_interrupt
from unitrefine.run.session import Session
from unitrefine.search.locks import Lock
from unitrefine.search.storage import WORKER_ATTR
from unitrefine.search.study import (
    DUPLICATE_ATTR,
    EXPORTED_ATTR,
    MAX_DUPLICATES_IN_A_ROW,
    Budget,
    WindowedPruner,
    budget,
    is_duplicate,
    record_stopped_by_timeout,
    retry,
)
from unitrefine.tracking.tracker import NullTracker

log = logging.getLogger(__name__)

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
TrialParams = Callable[[optuna.trial.FrozenTrial], Mapping[str, Any]]


class Finalizer:
    """Held by the one worker that refits, exports and registers; records the export in the study on success.

    Use as a context manager around the export; call :meth:`exported` with what was produced.
    """

    def __init__(self, lock: Lock, study: optuna.Study, n_finished: int, run_id: str) -> None:
        self.lock = lock
        self.study = study
        self.n_finished = n_finished
        self.run_id = run_id
        self._record: dict[str, Any] = {}

    def exported(self, folder: Any, model_version: str | None) -> None:
        """Note the model folder and registered version, to be recorded in the study."""
        self._record = {"model_folder": str(folder), "model_version": model_version}

    def __enter__(self) -> Finalizer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self.study.set_user_attr(
                    EXPORTED_ATTR, {"n_finished": self.n_finished, "run_id": self.run_id, **self._record}
                )
        finally:
            self.lock.release()


@runtime_checkable
class SampledObjective(Protocol):
    """An objective that can draw all of a trial's parameters before it evaluates the trial."""

    def sample(self, trial: optuna.Trial) -> object:
        """Draw every parameter of ``trial`` (a trial that has them gets them back unchanged)."""
        ...

    def __call__(self, trial: optuna.Trial) -> float:
        """Evaluate ``trial``."""
        ...


class _Window:
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
        A finished trial's parameters as logged to MLflow.
    callbacks : sequence of callable
        Optuna callbacks run after each trial this worker finishes (after it is logged to MLflow); not after a
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
    _window: _Window = field(init=False)

    def __post_init__(self) -> None:
        self._window = _Window(self.n_jobs)

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
                self._reconcile()
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
                continue  # this worker's oldest trial still runs (see _Window)
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
        """Whether ``search.timeout_s`` has passed (then noting whether it leaves the budget unused)."""
        if self._deadline is None or time.monotonic() < self._deadline:
            return False
        self._window.close()
        b = budget(self.study.get_trials(deepcopy=False), self.max_retries)
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
        return its result (or raise TrialPruned) only when it is its turn to be told (:class:`_Window`)."""
        trial.set_user_attr(WORKER_ATTR, self.session.store.worker_id)
        self._running[threading.get_ident()] = trial.number
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
        self._track(study, trial)
        for callback in self.callbacks:
            callback(study, trial)

    def _told(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """First callback after each trial: it is told, so the next trial may be asked."""
        self._window.told(trial.number)
        if isinstance(study.pruner, WindowedPruner):
            study.pruner.finish(trial.number)

    def _prepare(self) -> Budget:
        """Under the study lock: fail orphaned trials, queue retries of interrupted ones, count the budget."""
        self.session.store.fail_orphaned(self.study)
        b = budget(self.study.get_trials(deepcopy=False), self.max_retries)
        if b.to_retry:
            for t in b.to_retry:
                retry(self.study, t)
                log.warning("Trial %d was interrupted before it finished: it is run again.", t.number)
                if not self.session.tracker.has_trial_run(self.study.study_name, t.number):
                    self.session.tracker.log_trial(
                        self.study, t, self._params(t), status="KILLED",
                        error="its worker stopped before the trial finished; the trial was run again",
                    )
            b = budget(self.study.get_trials(deepcopy=False), self.max_retries)
        return b

    def _reconcile(self) -> None:
        """Log to MLflow the finished trials whose worker died before it could (killed right after the trial).

        Only trials of workers that are gone: a live worker logs its own trials, so none is logged twice.
        """
        tracker = self.session.tracker
        if isinstance(tracker, NullTracker):
            return
        alive: dict[str | None, bool] = {}
        orphans = []
        for t in self.study.get_trials(deepcopy=False):
            worker = t.user_attrs.get(WORKER_ATTR)
            if worker not in alive:
                alive[worker] = self.session.store.is_alive(worker)
            if t.state.is_finished() and not alive[worker] and not is_duplicate(t):
                orphans.append(t)
        if not orphans:
            return
        logged = tracker.logged_trials(self.study.study_name)
        for t in orphans:
            if t.number not in logged:
                log.info("Trial %d finished but was not in MLflow (its worker stopped): logging it.", t.number)
                tracker.log_trial(self.study, t, self._params(t))

    def _params(self, trial: optuna.trial.FrozenTrial) -> Mapping[str, Any]:
        """:attr:`trial_params`, or Optuna's parameters of a trial stopped while they were drawn (some missing)."""
        try:
            return self.trial_params(trial)
        except KeyError:
            return trial.params

    def _track(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.session.tracker.log_trial(study, trial, self.trial_params(trial))

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
        trials = self.study.get_trials(deepcopy=False)
        for number in list(self._running.values()):
            self.study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            trial = self.study.get_trials(deepcopy=False)[number]
            if trial.state == optuna.trial.TrialState.FAIL and "error" not in trial.user_attrs \
                    and not is_duplicate(trial):
                self.session.tracker.log_trial(
                    self.study, trial, self._params(trial), status=status,
                    error=f"{why}; the trial is run again when the study is resumed",
                )
        trials = self.study.get_trials(deepcopy=False)
        b = budget(trials, self.max_retries)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = max(complete, key=lambda t: (t.value, -t.number), default=None)
        best_text = "no trial completed" if best is None else (
            f"best so far: trial {best.number}, CV score {best.value:.4f} with {dict(self.trial_params(best))}"
        )
        log.warning(
            "Search stopped: %d of %d trials of study '%s' finished; %s. Nothing was exported. Run the same "
            "command again to resume the study (%s).",
            b.counted, self.n_trials, self.study.study_name, best_text, self.session.store.label,
        )
        if b.running == 0:
            self.session.tracker.end_parent(status)
        self.session.tracker.flush()

    def _elect(self, lock: Lock) -> Finalizer | None:
        final = self.session.store.finalize_lock(self.study.study_name)
        if not final.acquire(blocking=False):
            log.info("Another worker is exporting study '%s'; this worker is done.", self.study.study_name)
            return None
        try:
            with lock:
                b = self._prepare()
                self._reconcile()
            if b.running:
                log.info(
                    "This worker is done; %d trials still run in other workers, and the last to finish exports.",
                    b.running,
                )
                final.release()
                return None
            exported = self.study.user_attrs.get(EXPORTED_ATTR) or {}
            if exported.get("n_finished") == b.counted and exported.get("run_id") == self.session.run_id:
                further = ("Widen search_space to search further (the sampler proposes only configurations evaluated "
                           "already)" if b.exhausted else "Raise search.n_trials to search further")
                log.info(
                    "Study '%s' has its %d trials and was exported to %s (model version %s): nothing to do. "
                    "%s, or set search.resume=false for a fresh study.",
                    self.study.study_name, b.counted, exported.get("model_folder"), exported.get("model_version"),
                    further,
                )
                final.release()
                return None
        except BaseException:
            final.release()
            raise
        log.info("Study '%s': %d trials finished; this worker exports the model.", self.study.study_name, b.counted)
        return Finalizer(final, self.study, b.counted, self.session.run_id)
