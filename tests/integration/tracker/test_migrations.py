"""The tracker's data migrations on a real PostgreSQL, each on a database of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic import command

from hrtrack.devstack import migrations_dir
from shared.db import alembic_config, asyncpg_dsn, upgrade
from tests.conftest import Infra, unique


def fetch(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()
    return asyncio.run(run())


@pytest.fixture
def database(infra: Infra) -> Iterator[str]:
    """The URL of a new, empty database on the session's server."""
    name = unique("migrations").replace("-", "_")
    fetch(infra.database_url, f"CREATE DATABASE {name}")
    try:
        yield infra.database_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        fetch(infra.database_url, f"DROP DATABASE {name} WITH (FORCE)")


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(migrations_dir("tracker"), database_url), revision)


INSERT_RECOMMENDATION = """
INSERT INTO tracker.recommendations (id, source, reference, natural_key, text, deadline,
    due_dates, executors, payload, content_hash, version, needs_deadline, created_at,
    updated_at)
VALUES ($1, 'plan', 'ref', '{}', $2, '{}', '[]', '[]', $3::jsonb, $4, $5, false, now(), now())
"""
INSERT_VERSION = """
INSERT INTO tracker.recommendation_versions (recommendation_id, version, content_hash, payload,
    created_at) VALUES ($1, $2, $3, $4::jsonb, now())
"""
VERSIONS = """
SELECT recommendation_id, version, content_hash, payload->>'text' AS text
FROM tracker.recommendation_versions ORDER BY recommendation_id, version
"""


def test_0006_keeps_the_replaced_versions_only_and_its_downgrade_restores_the_current(
        database: str) -> None:
    upgrade(migrations_dir("tracker"), database, "0005")
    new, changed = sorted([uuid.uuid4(), uuid.uuid4()])
    # As the tracker wrote them before 0006: every version, the current one included.
    fetch(database, INSERT_RECOMMENDATION, new, "only", '{"text": "only"}', "h-new", 1)
    fetch(database, INSERT_VERSION, new, 1, "h-new", '{"text": "only"}')
    fetch(database, INSERT_RECOMMENDATION, changed, "second", '{"text": "second"}', "h2", 2)
    fetch(database, INSERT_VERSION, changed, 1, "h1", '{"text": "first"}')
    fetch(database, INSERT_VERSION, changed, 2, "h2", '{"text": "second"}')

    upgrade(migrations_dir("tracker"), database)
    assert [tuple(r) for r in fetch(database, VERSIONS)] == [(changed, 1, "h1", "first")]

    downgrade(database, "0005")
    assert [tuple(r) for r in fetch(database, VERSIONS)] == [
        (new, 1, "h-new", "only"), (changed, 1, "h1", "first"), (changed, 2, "h2", "second")]
