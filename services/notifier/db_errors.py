"""Which database errors make an event (or a claim) poison, and which are waited out.

Only errors about the data itself (SQLSTATE class 22, data exception, and 23, integrity
constraint violation) are the data's fault. Everything else — a lost connection, "the
database system is shutting down" (57P03), a deadlock — is waited out: a wrong guess there
would drop an event or skip a reminder, which is worse than retrying.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from shared.retry import is_transient_db_error

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
    code = sqlstate(exc)
    return code is not None and code[:2] in DATA_ERROR_CLASSES


def is_database_problem(exc: BaseException) -> bool:
    """The database cannot answer right now (down, restarting, connection lost)."""
    return isinstance(exc, SQLAlchemyError | OSError | TimeoutError) or is_transient_db_error(exc)
