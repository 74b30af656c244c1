"""Which database errors are the data's fault (poison) and which are waited out."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from shared.retry import is_data_error, is_transient_db_error, sqlstate


def wrapped(orig: BaseException) -> DBAPIError:
    return DBAPIError("INSERT ...", {}, orig)


@pytest.mark.parametrize(
    ("orig", "state", "data"),
    [
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), "23505", True),
        (asyncpg.exceptions.StringDataRightTruncationError("too long"), "22001", True),
        (asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
         "57P03", False),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), "57P01", False),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), "40P01", False),
    ],
)
def test_sqlstate_anywhere_in_the_chain(orig: BaseException, state: str, data: bool) -> None:
    exc = wrapped(orig)
    assert sqlstate(exc) == state
    assert is_data_error(exc) is data
    try:
        raise RuntimeError("while storing") from exc
    except RuntimeError as outer:
        assert sqlstate(outer) == state


def test_errors_without_sqlstate_are_waited_out() -> None:
    assert sqlstate(ConnectionRefusedError(111, "refused")) is None
    assert not is_data_error(ConnectionRefusedError(111, "refused"))
    assert not is_data_error(wrapped(OSError("connection reset")))


@pytest.mark.parametrize(
    ("orig", "transient"),
    [
        (asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), True),
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), False),
        (asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence"), False),
    ],
)
def test_outages_are_waited_out_and_bad_data_is_not(orig: BaseException, transient: bool) -> None:
    assert is_transient_db_error(wrapped(orig)) is transient


def test_a_refused_connection_is_waited_out() -> None:
    assert is_transient_db_error(ConnectionRefusedError(111, "refused"))
