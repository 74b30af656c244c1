"""Waiting out an outage: which errors are temporary, and retry with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_transient_db_error(exc: BaseException) -> bool:
    """A lost or refused connection, not a problem with the data itself."""
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
