"""Database plumbing shared by the services: engine, readiness, the driver connection under
a session's transaction, migrations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger(__name__)


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    # pool_pre_ping: connections broken by a database restart are replaced, not reused.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True, pool_recycle=1800
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's transaction, for COPY and array statements.

    SQLAlchemy's asyncpg adapter sends BEGIN with the first statement it runs itself; a
    statement sent on the driver connection before that would commit on its own. So the
    transaction is opened here first if nothing has opened it yet.
    """
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    if driver is not None and not driver.is_in_transaction():
        await connection.execute(text("SELECT 1"))
    return driver


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def asyncpg_dsn(database_url: str) -> str:
    """The database URL as asyncpg itself takes it (without SQLAlchemy's driver name)."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    """Alembic's configuration for one service's migrations on this database."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(migrations_dir: Path, database_url: str, revision: str = "head") -> None:
    """Run one service's Alembic migrations (synchronous: call it outside an event loop)."""
    command.upgrade(alembic_config(migrations_dir, database_url), revision)
