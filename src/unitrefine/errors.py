"""The one exception type for mistakes a user can fix, how to tell a Ctrl-C in disguise, and how commands exit."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("unitrefine")


class UnitRefineError(Exception):
    """A problem with the user's input or configuration.

    The message says what is wrong (which file, column, unit or config key) and what to do about it.
    Entry points print it without a traceback and exit with :attr:`exit_status`.
    """

    #: The command's exit status for this error.
    exit_status = 2


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C, or an error raised while handling one.

    Optuna's journal file lock cleans up after any exception while it releases the lock; a Ctrl-C that lands
    before its rename turns into a ``FileNotFoundError`` of that clean-up, with the interrupt as its context.
    """
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, KeyboardInterrupt):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def command_exits(interrupted: str = "Interrupted.") -> Iterator[None]:
    """Run a command's work: a user error ends it with its message and exit status, a Ctrl-C with ``interrupted``
    and status 130, both without a traceback; any other error propagates."""
    try:
        yield
    except UnitRefineError as exc:
        log.error("%s", exc)
        sys.exit(exc.exit_status)
    except BaseException as exc:  # a Ctrl-C, or an error raised while handling one (see is_interrupt)
        if not is_interrupt(exc):
            raise
        log.error("%s", interrupted)
        sys.exit(130)
