"""Helpers for the tracker's integration tests: build events, produce them, read the DB."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.tracker.repository import AGENCIES, ALIASES, ASSIGNMENTS, RECOMMENDATIONS
from shared.events import RecommendationEvent
from shared.executors import agency_key
from shared.kafka import EventProducer, OutgoingRecord
from shared.recommendations import RECOMMENDATION_ADAPTER, to_event


class UnacknowledgedOnce(EventProducer):
    """The real producer, except that the first batch it is given is never acknowledged:
    its records may reach the broker, but the relay learns of a failure."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, "test-relay")
        self.failed = False

    async def send(self, topic: str, records: Iterable[OutgoingRecord]
                   ) -> list[asyncio.Future[object]]:
        futures = await super().send(topic, records)
        if self.failed:
            return futures
        self.failed = True
        refused: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        refused.set_exception(ConnectionError("broker went away before acknowledging"))
        return [*futures[:-1], refused]


def plan_event(plan: str, number: str, executors: Any, *, text: str | None = None,
               deadline: str | None = "4th quarter of 2009", chapter: str = "Chapter",
               submitted_by: str = "test") -> RecommendationEvent:
    """A National Plan action as intake would publish it."""
    rec = RECOMMENDATION_ADAPTER.validate_python({
        "source": "plan", "plan": plan, "chapter": chapter, "number": number,
        "text": text or f"Action {number} of {plan}", "deadline": deadline,
        "executors": executors})
    return to_event(rec, submitted_by=submitted_by)


def upr_event(paragraph: str, executors: Any, *, state: str = "KAZ", cycle: int = 2,
              text: str | None = None) -> RecommendationEvent:
    rec = RECOMMENDATION_ADAPTER.validate_python({
        "source": "upr", "state": state, "cycle": cycle, "paragraph": paragraph,
        "review_date": "2014-10-30", "text": text or f"UPR recommendation {paragraph}",
        "executors": executors})
    return to_event(rec, submitted_by="test")


async def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]
                  ) -> int:
    """Publish raw (key, value) pairs straight to a topic, as a foreign producer would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=1024 * 1024)
    await producer.start()
    count = 0
    try:
        futures = []
        for key, value in messages:
            futures.append(await producer.send(topic, value=value, key=key))
            count += 1
        for future in futures:
            await future
    finally:
        await producer.stop()
    return count


def encoded(events: Iterable[RecommendationEvent]) -> list[tuple[bytes, bytes]]:
    return [(str(e.recommendation_id).encode(), e.model_dump_json().encode()) for e in events]


async def count_recommendations(sessions: async_sessionmaker, ids: list[uuid.UUID]  # type: ignore[type-arg]
                                ) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(RECOMMENDATIONS)
                                          .where(RECOMMENDATIONS.c.id.in_(ids)))).scalar_one())


async def assignments_of(sessions: async_sessionmaker, ids: list[uuid.UUID]  # type: ignore[type-arg]
                         ) -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = (await session.execute(
            select(ASSIGNMENTS, AGENCIES.c.name.label("agency_name"),
                   AGENCIES.c.needs_review)
            .join(AGENCIES, AGENCIES.c.id == ASSIGNMENTS.c.agency_id)
            .where(ASSIGNMENTS.c.recommendation_id.in_(ids)))).mappings().all()
        return [dict(r) for r in rows]


async def agency_by_name(sessions: async_sessionmaker, name: str  # type: ignore[type-arg]
                         ) -> dict[str, Any] | None:
    async with sessions() as session:
        row = (await session.execute(
            select(AGENCIES).join(ALIASES, ALIASES.c.agency_id == AGENCIES.c.id)
            .where(ALIASES.c.key == agency_key(name)))).mappings().first()
        return dict(row) if row else None


async def published(bootstrap: str, topic: str, keys: Iterable[str], at_least: int
                    ) -> list[Any]:
    """The topic's records for these keys, in partition order, once at least `at_least`
    distinct events (by x-event-id) are there. A relay retry may repeat an event."""
    from tests.helpers import eventually
    from tests.integration.tracker.test_dead_letters import read_topic

    wanted = {k.encode() for k in keys}

    async def enough() -> list[Any]:
        records = [r for r in await read_topic(bootstrap, topic) if r.key in wanted]
        distinct = {dict(r.headers).get("x-event-id") for r in records}
        return records if len(distinct) >= at_least else []
    return list(await eventually(enough, timeout=30, what=f"{at_least} events on {topic}"))


def distinct_events(records: list[Any], model: Any) -> list[Any]:
    """The events of these records, each event id once (first occurrence), in order.
    ``model``: an event model or a TypeAdapter."""
    validate_json = getattr(model, "model_validate_json", None) or model.validate_json
    seen: dict[str, Any] = {}
    for record in records:
        event = validate_json(record.value)
        seen.setdefault(str(event.event_id), event)
    return list(seen.values())


def announced_assignments(records: list[Any]) -> list[Any]:
    """The AssignmentEvents these `assignments` records announce: an AssignmentsChanged
    as one event per assignment it carries; each event id once (first occurrence)."""
    from shared.events import ASSIGNMENT_TOPIC_EVENT, AssignmentsChanged

    seen: dict[str, Any] = {}
    for record in records:
        event = ASSIGNMENT_TOPIC_EVENT.validate_json(record.value)
        for single in (event.assignment_events() if isinstance(event, AssignmentsChanged)
                       else [event]):
            seen.setdefault(str(single.event_id), single)
    return list(seen.values())


ORPHANS_SQL = """
SELECT (SELECT count(*) FROM tracker.assignments a
        WHERE NOT EXISTS (SELECT 1 FROM tracker.recommendations r WHERE r.id = a.recommendation_id)
           OR NOT EXISTS (SELECT 1 FROM tracker.agencies g WHERE g.id = a.agency_id))
     + (SELECT count(*) FROM tracker.recommendation_versions v
        WHERE NOT EXISTS (SELECT 1 FROM tracker.recommendations r
                          WHERE r.id = v.recommendation_id))
"""


async def orphans(sessions: async_sessionmaker) -> int:  # type: ignore[type-arg]
    """Assignments or versions without their parent rows (no foreign keys: migration 0004)."""
    from sqlalchemy import text

    async with sessions() as session:
        return int((await session.execute(text(ORPHANS_SQL))).scalar_one())
