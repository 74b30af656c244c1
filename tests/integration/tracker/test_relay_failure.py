"""Transactions that span SQLAlchemy and the asyncpg driver connection, against the real
PostgreSQL and broker: the relay when the broker does not acknowledge (the claimed batch
stays in the outbox and goes out on the next attempt), and driver writes that roll back
with their session."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.tracker.outbox import OutboxRelay
from services.tracker.repository import OUTBOX, TrackerRepository
from shared.db import make_sessionmaker
from shared.events import AgencyEvent
from shared.kafka import ensure_topics
from tests.conftest import Infra, unique
from tests.integration.tracker.support import UnacknowledgedOnce, distinct_events, published


async def backlog(engine: AsyncEngine, keys: list[str]) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(OUTBOX)
                                       .where(OUTBOX.c.key.in_(keys)))).scalar_one())


async def test_an_unacknowledged_batch_stays_and_is_published_again(
        infra: Infra, engine: AsyncEngine) -> None:
    topic = unique("agencies")
    await ensure_topics(infra.bootstrap, [topic])
    events = [AgencyEvent(agency_id=uuid.uuid4(), name=f"Agency {n}") for n in range(25)]
    keys = [str(e.agency_id) for e in events]
    async with make_sessionmaker(engine)() as session, session.begin():
        repo = TrackerRepository(session)
        for event in events:
            repo.add_event(topic, event.agency_id, event)
        await repo.flush()

    producer = UnacknowledgedOnce(infra.bootstrap)
    await producer.start()
    try:
        relay = OutboxRelay(engine, producer, batch_size=10_000, poll_seconds=0.1)
        with pytest.raises(ConnectionError):
            await relay.publish_batch()
        assert await backlog(engine, keys) == len(events), "nothing removed unacknowledged"

        while await relay.publish_batch():  # other modules' leftovers may go out too
            pass
        assert await backlog(engine, keys) == 0
    finally:
        await producer.stop()

    records: list[Any] = await published(infra.bootstrap, topic, keys, at_least=len(events))
    got = distinct_events(records, AgencyEvent)
    assert sorted(str(e.event_id) for e in got) == sorted(str(e.event_id) for e in events)
    assert all(dict(r.headers)["x-event-id"] == str(AgencyEvent.model_validate_json(
        r.value).event_id).encode() for r in records)


async def test_driver_writes_roll_back_with_the_session(engine: AsyncEngine) -> None:
    """COPY on the driver connection as the transaction's first statement still belongs to
    the session's transaction."""
    event = AgencyEvent(agency_id=uuid.uuid4(), name="Rolled back")

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with make_sessionmaker(engine)() as session, session.begin():
            repo = TrackerRepository(session)
            repo.add_event(unique("agencies"), event.agency_id, event)
            await repo.flush()  # COPY before any SQLAlchemy statement
            raise Abort
    assert await backlog(engine, [str(event.agency_id)]) == 0
