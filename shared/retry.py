"""Waiting out an outage: which errors are temporary, and retry with backoff.

Only errors about the data itself (SQLSTATE class 22, data exception, and 23, integrity
constraint violation) are the data's fault: such a message is poison. Everything else the
database says — a lost connection, "the database system is shutting down" (57P03), a
deadlock — is waited out: a wrong guess there would drop an event or skip a reminder,
which is worse than retrying.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

log = logging.getLogger(__name__)
T = TypeVar("T")

DATA_ERROR_CLASSES = ("22", "23")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, wherever it sits in the exception chain."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return None


def is_data_error(exc: BaseException) -> bool:
    """The database refused the data itself: retrying the same data cannot help."""
    code = sqlstate(exc)
    return code is not None and code[:2] in DATA_ERROR_CLASSES


def is_database_problem(exc: BaseException) -> bool:
    """Anything from the database or the way to it (for a 503 answer)."""
    return isinstance(exc, SQLAlchemyError | OSError | TimeoutError) or is_transient_db_error(exc)


def is_transient_db_error(exc: BaseException) -> bool:
    """An outage to wait out: not a problem with the data itself."""
    if is_data_error(exc):
        return False
    if sqlstate(exc) is not None:
        return True  # the server answered with a non-data error (shutting down, deadlock)
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    name = type(getattr(exc, "orig", None) or exc).__name__
    return any(word in name for word in ("Connection", "CannotConnect", "AdminShutdown",
                                         "CrashShutdown", "ConnectionDoesNotExist"))


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    max_delay: float = 10.0,
    is_transient: Callable[[BaseException], bool] = is_transient_db_error,
) -> T:
    """Run `operation` until it succeeds, backing off on temporary errors; others raise."""
    delay = 0.2
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
