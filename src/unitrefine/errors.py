"""The one exception type for mistakes a user can fix, and how to tell a Ctrl-C in disguise."""

from __future__ import annotations


class UnitRefineError(Exception):
    """A problem with the user's input or configuration.

    The message says what is wrong (which file, column, unit or config key) and what to do about it.
    Entry points print it without a traceback and exit with status 2.
    """


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
