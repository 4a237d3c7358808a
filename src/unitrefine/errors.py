"""The one exception type for mistakes a user can fix."""

from __future__ import annotations


class UnitRefineError(Exception):
    """A problem with the user's input or configuration.

    The message says what is wrong (which file, column, unit or config key) and what to do about it.
    Entry points print it without a traceback and exit with status 2.
    """
