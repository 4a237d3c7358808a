"""Locks: one holder at a time among the threads of a process and, for a file lock, among processes; a file
lock is released by the kernel when its holder dies."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from _flock import held_by_another_process, other_process_gets

from unitrefine.search.locks import FileLock, Lock


def try_in_thread(lock: Lock) -> bool:
    """``lock.acquire(blocking=False)`` from another thread (released again there if it got it)."""
    got: list[bool] = []

    def attempt() -> None:
        got.append(lock.acquire(blocking=False))
        if got[0]:
            lock.release()

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(timeout=10)
    return got == [True]


@pytest.mark.parametrize("make", [lambda _: Lock(), lambda tmp: FileLock(tmp / "x.lock")], ids=["Lock", "FileLock"])
def test_the_threads_of_one_process_take_the_lock_one_at_a_time(tmp_path: Path, make: Callable[[Path], Lock]) -> None:
    lock = make(tmp_path)
    assert try_in_thread(lock)
    with lock as held:
        assert held is lock
        assert not try_in_thread(lock)
        assert not lock.acquire(blocking=False), "not re-entrant: the same thread cannot take it twice either"
    assert try_in_thread(lock)


def test_a_file_lock_excludes_other_processes_until_it_is_released(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "study.lock"
    path.parent.mkdir()
    lock = FileLock(path)
    assert not path.exists(), "nothing is created before the lock is taken"
    assert lock.acquire(blocking=False)
    assert path.is_file() and path.read_bytes() == b""
    assert not other_process_gets(path)
    assert not FileLock(path).acquire(blocking=False), "another FileLock on the same file, even in this process"
    lock.release()
    assert other_process_gets(path)
    assert path.is_file(), "the file stays (the holder's worker removes its own liveness file)"


def test_a_file_lock_held_by_a_process_that_dies_is_released(tmp_path: Path) -> None:
    path = tmp_path / "worker.lock"
    lock = FileLock(path)
    with held_by_another_process(path) as holder:
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            assert not lock.acquire(blocking=False)
        assert len(os.listdir("/proc/self/fd")) == fds, "a failed try closes the file it opened"
        holder.kill()  # SIGKILL: no clean-up in the holder; the kernel releases the flock
        holder.wait(timeout=10)
        assert lock.acquire(blocking=False), "a failed try left the lock free for this thread"
        assert len(os.listdir("/proc/self/fd")) == fds + 1, "the held lock keeps its file open"
        assert not other_process_gets(path)
        lock.release()
        assert len(os.listdir("/proc/self/fd")) == fds


def test_a_blocking_acquire_waits_for_the_other_process_and_another_thread_may_release_it(tmp_path: Path) -> None:
    path = tmp_path / "finalize.lock"
    lock = FileLock(path)
    acquired = threading.Event()

    def take() -> None:
        lock.acquire()
        acquired.set()

    with held_by_another_process(path) as holder:
        waiter = threading.Thread(target=take)
        waiter.start()
        assert not acquired.wait(0.3), "taken while another process held it"
        assert holder.stdin is not None
        holder.stdin.close()  # the holder ends normally
        assert acquired.wait(10)
        waiter.join(timeout=10)
    assert not other_process_gets(path)
    lock.release()  # from this thread, not the one that took it (the study lock is released in the objective)
    assert other_process_gets(path)
