"""Keeps the notifier's view of assignments and agency contacts from the tracker's events."""

from __future__ import annotations

import logging
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import ValidationError
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.notifier.models import AgencyContact, DueDateRow, TrackedAssignment, utcnow
from services.notifier.settings import NotifierSettings
from shared.events import AgencyEvent, AssignmentEvent
from shared.kafka import send_to_dead_letters
from shared.retry import retry_transient
from shared.settings import TOPIC_AGENCIES, TOPIC_ASSIGNMENTS

log = logging.getLogger(__name__)
AGENCIES = AgencyContact.__table__  # type: ignore[attr-defined]
ASSIGNMENTS = TrackedAssignment.__table__  # type: ignore[attr-defined]
DUE_DATES = DueDateRow.__table__  # type: ignore[attr-defined]


def raw_bodies(msg: Any) -> Any:
    return msg.body


def latest_by_key(events: list[Any], key: str) -> list[Any]:
    """Within a batch only the last event per id matters (events of one key are ordered)."""
    latest: dict[Any, Any] = {}
    for event in events:
        latest.pop(getattr(event, key), None)
        latest[getattr(event, key)] = event
    return list(latest.values())


class TrackerEventsConsumer:
    def __init__(self, broker: KafkaBroker, sessions: async_sessionmaker,  # type: ignore[type-arg]
                 settings: NotifierSettings) -> None:
        self.broker = broker
        self.sessions = sessions
        self.settings = settings

    def register(self) -> None:
        for topic, handler in ((TOPIC_ASSIGNMENTS, self.handle_assignments),
                               (TOPIC_AGENCIES, self.handle_agencies)):
            self.broker.subscriber(
                topic, group_id=self.settings.consumer_group, batch=True, max_records=2000,
                batch_timeout_ms=100, auto_offset_reset="earliest", ack_policy=AckPolicy.MANUAL,
                session_timeout_ms=self.settings.kafka_session_timeout_ms,
                heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
                max_poll_interval_ms=30 * 60 * 1000, decoder=raw_bodies, title=topic,
            )(handler)

    async def _parse(self, msg: KafkaMessage, topic: str, model: Any) -> list[Any]:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        events = []
        for record in records:
            try:
                events.append(model.model_validate_json(record.value))
            except (ValidationError, ValueError, TypeError) as exc:
                await send_to_dead_letters(self.broker, topic, record.value or b"", record.key, exc)
        return events

    async def handle_assignments(self, bodies: list[bytes],
                                 msg: KafkaMessage) -> None:
        events = latest_by_key(await self._parse(msg, TOPIC_ASSIGNMENTS, AssignmentEvent),
                               "assignment_id")
        if events:
            await retry_transient(lambda: self.store_assignments(events),
                                  what="storing assignment events")
        await msg.ack()

    async def handle_agencies(self, bodies: list[bytes],
                              msg: KafkaMessage) -> None:
        events = latest_by_key(await self._parse(msg, TOPIC_AGENCIES, AgencyEvent), "agency_id")
        if events:
            await retry_transient(lambda: self.store_agencies(events),
                                  what="storing agency events")
        await msg.ack()

    async def store_assignments(self, events: list[AssignmentEvent]) -> None:
        rows = [{
            "id": e.assignment_id, "recommendation_id": e.recommendation_id,
            "agency_id": e.agency_id, "agency_name": e.agency_name, "role": e.role,
            "status": e.status.value, "source": e.source.value, "reference": e.reference,
            "text": e.text, "deadline": e.deadline.model_dump(mode="json"),
            "active_from": e.active_from, "reported_periods": e.reported_periods,
            "version": e.version, "updated_at": utcnow(),
        } for e in events]
        async with self.sessions() as session, session.begin():
            stmt = pg_insert(ASSIGNMENTS)
            # A re-delivered older version never overwrites a newer one.
            stmt = stmt.on_conflict_do_update(
                index_elements=[ASSIGNMENTS.c.id],
                set_={c.name: stmt.excluded[c.name] for c in ASSIGNMENTS.c if c.name != "id"},
                where=ASSIGNMENTS.c.version <= stmt.excluded.version,
            ).returning(ASSIGNMENTS.c.id)
            applied = {r.id for r in (await session.execute(stmt, rows)).all()} if rows else set()
            fresh = [e for e in events if e.assignment_id in applied]
            if fresh:
                await session.execute(delete(DUE_DATES).where(
                    DUE_DATES.c.assignment_id.in_([e.assignment_id for e in fresh])))
                due_rows = [{"assignment_id": e.assignment_id, "kind": d.kind.value,
                             "due_date": d.due, "period_start": d.start}
                            for e in fresh for d in e.due_dates]
                if due_rows:
                    await session.execute(pg_insert(DUE_DATES).on_conflict_do_nothing(), due_rows)

    async def store_agencies(self, events: list[AgencyEvent]) -> None:
        rows = [{"id": e.agency_id, "name": e.name, "emails": e.emails, "language": e.language,
                 "escalation_email": e.escalation_email, "needs_review": e.needs_review,
                 "updated_at": e.occurred_at} for e in events]
        async with self.sessions() as session, session.begin():
            stmt = pg_insert(AGENCIES)
            stmt = stmt.on_conflict_do_update(
                index_elements=[AGENCIES.c.id],
                set_={c.name: stmt.excluded[c.name] for c in AGENCIES.c if c.name != "id"},
                where=AGENCIES.c.updated_at <= stmt.excluded.updated_at,
            )
            await session.execute(stmt, rows)
