"""The services' data migrations on a real PostgreSQL, each test on a database of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from hrtrack.devstack import migrate, migrations_dir
from services.notifier import models as notifier_models
from services.tracker import models as tracker_models
from shared.db import alembic_config, asyncpg_dsn, make_engine, upgrade
from shared.migration_env import in_schema
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


def downgrade(database_url: str, revision: str, service: str = "tracker") -> None:
    command.downgrade(alembic_config(migrations_dir(service), database_url), revision)


INSERT_RECOMMENDATION = """
INSERT INTO tracker.recommendations (id, source, reference, natural_key, text, deadline,
    due_dates, executors, payload, content_hash, version, needs_deadline, created_at,
    updated_at)
VALUES ($1, 'plan', 'ref', $6, $2, $7, $8, $9, $3, $4, $5, false, now(), now())
"""


def insert_recommendation(database: str, rid: uuid.UUID, text: str, payload: str,
                          content_hash: str, version: int, *, natural_key: str = "[]",
                          deadline: str = "{}", due_dates: str = "[]",
                          executors: str = "[]") -> None:
    """A recommendation row as the tracker wrote it (the JSON documents as JSON text)."""
    fetch(database, INSERT_RECOMMENDATION, rid, text, payload, content_hash, version,
          natural_key, deadline, due_dates, executors)


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
    insert_recommendation(database, new, "only", '{"text": "only"}', "h-new", 1)
    fetch(database, INSERT_VERSION, new, 1, "h-new", '{"text": "only"}')
    insert_recommendation(database, changed, "second", '{"text": "second"}', "h2", 2)
    fetch(database, INSERT_VERSION, changed, 1, "h1", '{"text": "first"}')
    fetch(database, INSERT_VERSION, changed, 2, "h2", '{"text": "second"}')

    upgrade(migrations_dir("tracker"), database)
    assert [tuple(r) for r in fetch(database, VERSIONS)] == [(changed, 1, "h1", "first")]

    downgrade(database, "0005")
    assert [tuple(r) for r in fetch(database, VERSIONS)] == [
        (new, 1, "h-new", "only"), (changed, 1, "h1", "first"), (changed, 2, "h2", "second")]


COLUMN_TYPES = """
SELECT table_name || '.' || column_name, data_type FROM information_schema.columns
WHERE table_schema = $1 AND data_type IN ('json', 'jsonb') ORDER BY 1
"""
TRACKER_DOCUMENTS = ["history.data", "progress_reports.evidence_links",
                     "recommendation_versions.payload", "recommendations.deadline",
                     "recommendations.due_dates", "recommendations.executors",
                     "recommendations.natural_key", "recommendations.payload"]
DOCUMENTS = """
SELECT r.natural_key::text, r.deadline::jsonb, r.due_dates::jsonb, r.executors::jsonb,
       r.payload::jsonb, v.payload::jsonb, h.data::jsonb
FROM tracker.recommendations r JOIN tracker.recommendation_versions v
     ON v.recommendation_id = r.id
JOIN tracker.history h ON h.entity_id = r.id
"""


def column_types(database: str, schema: str) -> dict[str, str]:
    return {name: data_type for name, data_type in fetch(database, COLUMN_TYPES, schema)}


def test_0007_stores_the_tracker_documents_as_json_and_its_downgrade_as_jsonb(
        database: str) -> None:
    upgrade(migrations_dir("tracker"), database, "0006")
    rid = uuid.uuid4()
    insert_recommendation(
        database, rid, "text", '{"text": "<b>verbatim</b>", "themes": ["torture"]}', "h", 2,
        natural_key='["plan", "1.1"]', deadline='{"text": "2011"}',
        due_dates='[{"kind": "deadline", "due": "2011-12-31"}]',
        executors='[{"name": "Ministry of Justice", "role": "lead"}]')
    fetch(database, INSERT_VERSION, rid, 1, "h1", '{"text": "first"}')
    fetch(database, """INSERT INTO tracker.history (entity, entity_id, action, actor, data, at)
        VALUES ('recommendation', $1, 'created', 'intake',
                '{"assignments": {"a": {"role": "lead"}}}', now())""", rid)
    before = [tuple(r) for r in fetch(database, DOCUMENTS)]
    assert set(column_types(database, "tracker").values()) == {"jsonb"}

    upgrade(migrations_dir("tracker"), database)
    assert column_types(database, "tracker") == dict.fromkeys(TRACKER_DOCUMENTS, "json")
    assert [tuple(r) for r in fetch(database, DOCUMENTS)] == before

    downgrade(database, "0006")
    assert column_types(database, "tracker") == dict.fromkeys(TRACKER_DOCUMENTS, "jsonb")
    assert [tuple(r) for r in fetch(database, DOCUMENTS)] == before


def test_notifier_0006_stores_the_deadline_as_json_and_its_downgrade_as_jsonb(
        database: str) -> None:
    upgrade(migrations_dir("notifier"), database, "0005")
    deadline = '{"text": "4th quarter of 2009", "due": "2009-12-31"}'
    fetch(database, """
        INSERT INTO notifier.assignments (id, recommendation_id, agency_id, agency_name, role,
            status, source, reference, text, deadline, reported_periods, version, updated_at)
        VALUES ($1, $2, $3, 'MoJ', 'lead', 'not_started', 'plan', 'ref', 'text', $4, '{}', 1,
                now())""", uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), deadline)
    read = "SELECT deadline::jsonb FROM notifier.assignments"
    before = [tuple(r) for r in fetch(database, read)]
    assert column_types(database, "notifier") == {"assignments.deadline": "jsonb"}

    upgrade(migrations_dir("notifier"), database)
    assert column_types(database, "notifier") == {"assignments.deadline": "json"}
    assert [tuple(r) for r in fetch(database, read)] == before

    downgrade(database, "0005", service="notifier")
    assert column_types(database, "notifier") == {"assignments.deadline": "jsonb"}
    assert [tuple(r) for r in fetch(database, read)] == before


def schema_drift(database: str, schema: str, metadata: MetaData) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match the models
    (column types compared too); each service's version table is Alembic's own."""
    def compare(connection: Connection) -> list[Any]:
        own = in_schema(schema)
        context = MigrationContext.configure(connection, opts={
            "compare_type": True, "include_schemas": True,
            "include_name": lambda name, type_, parent: own(name, type_, parent)
                and not (type_ == "table" and name == "alembic_version")})
        return list(compare_metadata(context, metadata))

    async def run() -> list[Any]:
        engine = make_engine(database)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()
    return asyncio.run(run())


@pytest.mark.parametrize("service", [tracker_models, notifier_models],
                         ids=["tracker", "notifier"])
def test_the_models_describe_the_schema_the_migrations_build(database: str,
                                                             service: Any) -> None:
    migrate(database)
    assert schema_drift(database, service.SCHEMA, service.metadata) == []
