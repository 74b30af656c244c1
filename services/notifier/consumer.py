"""Keeps the notifier's view of assignments and agency contacts from the tracker's events.

Each assignment event replaces the assignment's due dates: its own (deadline, recurring
years, follow-up, UPR mid-term and next review) as the tracker sends them, plus one row per
quarterly progress report still owed, which the notifier computes itself from
``active_from``, the last own due date and ``reported_periods`` (policy.report_periods).
Closed assignments keep no due dates. Older versions never overwrite newer ones. Only an
event the database rejects as data (SQLSTATE 22, 23) goes to the dead letters; any other
error is waited out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.notifier.models import AgencyContact, DueDateRow, TrackedAssignment, utcnow
from services.notifier.policy import ReminderPolicy, report_periods
from services.notifier.settings import NotifierSettings
from shared.events import AgencyEvent, AssignmentEvent, DueKind, latest_per_key
from shared.kafka import send_to_dead_letters
from shared.retry import is_data_error

log = logging.getLogger(__name__)
AGENCIES = AgencyContact.__table__  # type: ignore[attr-defined]
ASSIGNMENTS = TrackedAssignment.__table__  # type: ignore[attr-defined]
DUE_DATES = DueDateRow.__table__  # type: ignore[attr-defined]


def raw_bodies(msg: Any) -> Any:
    return msg.body


def latest_by_key(events: list[Any], key: str) -> list[Any]:
    """Within a batch only the last event per id matters (events of one key are ordered)."""
    return latest_per_key(events, attrgetter(key))


DUE_COLUMNS = {"assignment_id": "uuid", "kind": "text", "due_date": "date",
               "period_start": "date", "agency_id": "uuid", "status": "text", "role": "text"}
INSERT_DUE_DATES = text(
    f"INSERT INTO notifier.due_dates ({', '.join(DUE_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in DUE_COLUMNS.items())
    + ") ON CONFLICT DO NOTHING")
REPLACE_DELETE = text("DELETE FROM notifier.due_dates WHERE assignment_id = ANY(:ids)")


def due_rows(event: AssignmentEvent, policy: ReminderPolicy) -> list[dict[str, Any]]:
    """The due_dates rows of one assignment (none once it is closed)."""
    if event.status.value in policy.closed_statuses:
        return []
    rows = {(d.kind.value, d.due): d.start for d in event.due_dates
            if d.kind is not DueKind.REPORT}  # reports: computed here, below
    own = [d.due for d in event.due_dates if d.kind is DueKind.DEADLINE]
    for start, due in report_periods(event.active_from, own, event.reported_periods, policy):
        rows[(DueKind.REPORT.value, due)] = start
    return [{"assignment_id": event.assignment_id, "kind": kind, "due_date": due,
             "period_start": start, "agency_id": event.agency_id,
             "status": event.status.value, "role": event.role}
            for (kind, due), start in rows.items()]


class TrackerEventsConsumer:
    def __init__(self, broker: KafkaBroker, sessions: async_sessionmaker,  # type: ignore[type-arg]
                 settings: NotifierSettings) -> None:
        self.broker = broker
        self.sessions = sessions
        self.settings = settings
        self.policy = settings.policy

    def register(self) -> None:
        for topic, handler in ((self.settings.assignments_topic, self.handle_assignments),
                               (self.settings.agencies_topic, self.handle_agencies)):
            self.broker.subscriber(
                topic, group_id=self.settings.consumer_group, batch=True, max_records=2000,
                batch_timeout_ms=100, auto_offset_reset="earliest", ack_policy=AckPolicy.MANUAL,
                session_timeout_ms=self.settings.kafka_session_timeout_ms,
                heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
                max_poll_interval_ms=30 * 60 * 1000, decoder=raw_bodies, title=topic,
            )(handler)

    async def _parse(self, msg: KafkaMessage, topic: str, model: Any) -> list[tuple[Any, Any]]:
        """(event, record) pairs; records that are no valid event go to the dead letters."""
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        parsed = []
        for record in records:
            try:
                parsed.append((model.model_validate_json(record.value), record))
            except (ValidationError, ValueError, TypeError) as exc:
                await send_to_dead_letters(self.broker, topic, record.value or b"", record.key, exc)
        return parsed

    async def _store(self, topic: str, pairs: list[tuple[Any, Any]], key: str,
                     store: Callable[[list[Any]], Awaitable[None]]) -> None:
        """Store the batch, waiting out anything but a data error (a lost connection, a
        restarting database: nothing is acknowledged before it is stored). If the database
        rejects the data, store event by event and park the ones it rejects, so one bad
        event never blocks the topic."""
        latest = {id(e) for e in latest_by_key([e for e, _ in pairs], key)}
        pairs = [(e, r) for e, r in pairs if id(e) in latest]
        if not pairs:
            return
        if await self._store_waiting(topic, store, [e for e, _ in pairs]) is None:
            return
        log.warning("the database rejected a batch of %s events; storing one by one", topic)
        for event, record in pairs:
            rejected = await self._store_waiting(topic, store, [event])
            if rejected is not None:
                await send_to_dead_letters(self.broker, topic, record.value or b"", record.key,
                                           rejected)

    @staticmethod
    async def _store_waiting(topic: str, store: Callable[[list[Any]], Awaitable[None]],
                             events: list[Any]) -> BaseException | None:
        """None once stored; the error if the database rejects the data itself."""
        delay = 0.2
        while True:
            try:
                await store(events)
                return None
            except Exception as exc:  # noqa: BLE001 - classified right below
                if is_data_error(exc):
                    return exc
                log.warning("storing %s events failed (%s); retrying in %.1fs", topic,
                            type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def handle_assignments(self, bodies: list[bytes], msg: KafkaMessage) -> None:
        topic = self.settings.assignments_topic
        pairs = await self._parse(msg, topic, AssignmentEvent)
        await self._store(topic, pairs, "assignment_id", self.store_assignments)
        await msg.ack()

    async def handle_agencies(self, bodies: list[bytes], msg: KafkaMessage) -> None:
        topic = self.settings.agencies_topic
        pairs = await self._parse(msg, topic, AgencyEvent)
        await self._store(topic, pairs, "agency_id", self.store_agencies)
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
            insert = pg_insert(ASSIGNMENTS)
            # A re-delivered older version never overwrites a newer one.
            stmt = insert.on_conflict_do_update(
                index_elements=[ASSIGNMENTS.c.id],
                set_={c.name: insert.excluded[c.name] for c in ASSIGNMENTS.c if c.name != "id"},
                where=ASSIGNMENTS.c.version <= insert.excluded.version,
            ).returning(ASSIGNMENTS.c.id)
            applied = {r.id for r in (await session.execute(stmt, rows)).all()} if rows else set()
            fresh = [e for e in events if e.assignment_id in applied]
            if fresh:
                await session.execute(REPLACE_DELETE,
                                      {"ids": [e.assignment_id for e in fresh]})
                new_rows = [row for e in fresh for row in due_rows(e, self.policy)]
                if new_rows:
                    # One statement for the whole batch (an executemany runs once per row).
                    await session.execute(INSERT_DUE_DATES, {
                        column: [row[column] for row in new_rows] for column in DUE_COLUMNS})

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
