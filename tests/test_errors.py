"""Tests for :mod:`unitrefine.errors`: the user-error type, spotting a Ctrl-C in disguise, and command exits."""

from __future__ import annotations

import logging

import pytest

from unitrefine.errors import UnitRefineError, command_exits, is_interrupt


class _Exit5(UnitRefineError):
    """A user error with its own exit status, as commands define them (e.g. recreation's ``DataChanged``)."""

    exit_status = 5


def _raised_while_handling(first: BaseException, second: BaseException, *, cause: bool) -> BaseException:
    """``second`` raised inside ``except`` for ``first``: chained as ``__cause__`` (``raise ... from``) or as
    ``__context__`` (implicitly), as Python chains them."""
    try:
        try:
            raise first
        except BaseException as exc:
            if cause:
                raise second from exc
            raise second  # noqa: B904 - the implicit chaining is what is tested
    except BaseException as chained:
        return chained
    raise AssertionError("unreachable")


def test_user_error_exits_with_status_2_and_keeps_its_message() -> None:
    err = UnitRefineError("The metrics file m.csv does not exist.")
    assert UnitRefineError.exit_status == 2 and err.exit_status == 2
    assert str(err) == "The metrics file m.csv does not exist."
    assert isinstance(err, Exception)  # caught by ``except Exception``, unlike a Ctrl-C
    assert _Exit5("x").exit_status == 5 and UnitRefineError.exit_status == 2  # a subclass does not change the base


@pytest.mark.parametrize("cause", [True, False], ids=["raise-from", "implicit-context"])
def test_an_error_raised_while_handling_a_ctrl_c_is_an_interrupt(cause: bool) -> None:
    chained = _raised_while_handling(KeyboardInterrupt(), FileNotFoundError("journal.lock"), cause=cause)
    assert isinstance(chained, FileNotFoundError)
    assert is_interrupt(chained)
    # Two levels down the chain too.
    assert is_interrupt(_raised_while_handling(chained, RuntimeError("clean-up of the clean-up"), cause=cause))


def test_a_chain_without_a_ctrl_c_is_not_an_interrupt() -> None:
    chained = _raised_while_handling(ValueError("first"), FileNotFoundError("journal.lock"), cause=False)
    assert chained.__context__ is not None and isinstance(chained.__context__, ValueError)
    assert not is_interrupt(chained)
    assert not is_interrupt(SystemExit(130))


def test_command_exits_logs_a_user_error_and_exits_with_its_status(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="unitrefine"), pytest.raises(SystemExit) as exited:
        with command_exits():
            raise UnitRefineError("dataset.mode: 'parquet' is not one of 'csv', 'analyzers'.")
    assert exited.value.code == 2
    assert [r.getMessage() for r in caplog.records] == ["dataset.mode: 'parquet' is not one of 'csv', 'analyzers'."]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    with pytest.raises(SystemExit) as exited:
        with command_exits():
            raise _Exit5("changed data")
    assert exited.value.code == 5


@pytest.mark.parametrize("chained", [False, True], ids=["ctrl-c", "error-while-handling-ctrl-c"])
def test_command_exits_turns_a_ctrl_c_into_status_130(chained: bool, caplog: pytest.LogCaptureFixture) -> None:
    exc = (_raised_while_handling(KeyboardInterrupt(), FileNotFoundError("journal.lock"), cause=False)
           if chained else KeyboardInterrupt())
    with caplog.at_level(logging.ERROR, logger="unitrefine"), pytest.raises(SystemExit) as exited:
        with command_exits("Search interrupted; run again to resume."):
            raise exc
    assert exited.value.code == 130
    assert [r.getMessage() for r in caplog.records] == ["Search interrupted; run again to resume."]


def test_command_exits_lets_other_errors_and_success_through(caplog: pytest.LogCaptureFixture) -> None:
    original = FileNotFoundError("a real missing file")
    with caplog.at_level(logging.ERROR, logger="unitrefine"), pytest.raises(FileNotFoundError) as raised:
        with command_exits():
            raise original
    assert raised.value is original
    done = []
    with command_exits():
        done.append(1)
    assert done == [1]
    assert caplog.records == []
