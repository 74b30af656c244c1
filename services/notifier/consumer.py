"""Keeps the notifier's view of assignments and agency contacts from the tracker's events.

Each assignment event replaces the assignment's due dates: its own (deadline, recurring
years, follow-up, UPR mid-term and next review) as the tracker sends them, plus one row per
quarterly progress report still owed, which the notifier computes itself from
``active_from``, the last own due date and ``reported_periods`` (policy.report_periods).
Report rows are written only for a rolling window of due dates (policy.report_dates_window
of the clock's today: what a pass looks at, from the overdue horizon behind to some months
ahead), not for the assignment's whole life (20 and more quarters for a five-year action,
years of past quarters for an old UPR recommendation); ``reports_from`` and
``reports_until`` record which, and each reminder pass first adds the quarters it needs
(ReminderService.extend_report_dates). Closed assignments keep no due dates. Older
versions never overwrite newer ones. Only an event the database rejects as data (SQLSTATE
22, 23) goes to the dead letters; any other error is waited out.

A batch of assignment events is one transaction, run on asyncpg directly: a look-up of the
assignments stored already, a COPY of the new ones, one unnest upsert of the others, one
DELETE of their due rows and one COPY of the due rows. The tracker announces thousands of
assignments per second, and per row SQLAlchemy work and per row triggers had made this the
notifier's largest cost (bench/notifier_ingest.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import date
from operator import attrgetter
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.notifier.models import SCHEMA, AgencyContact, utcnow
from services.notifier.policy import (
    Period,
    ReminderPolicy,
    owed_reports_within,
    report_dates_window,
)
from services.notifier.settings import NotifierSettings
from shared.clock import Clock
from shared.db import driver_connection
from shared.events import (
    AgencyEvent,
    AssignmentEvent,
    AssignmentStatus,
    DueKind,
    Source,
    latest_per_key,
)
from shared.kafka import send_to_dead_letters
from shared.retry import is_data_error, retry_transient

log = logging.getLogger(__name__)
AGENCIES = AgencyContact.__table__  # type: ignore[attr-defined]

# Records per batch: a batch costs one transaction and a few round trips whatever its size;
# measured (bench/notifier_ingest.py), 5000 cost more CPU per event than 1000-2000 (the
# collector walks the larger batch's objects).
MAX_RECORDS = 2000


def raw_bodies(msg: Any) -> Any:
    return msg.body


def latest_pairs(pairs: list[tuple[Any, Any]], key: str) -> list[tuple[Any, Any]]:
    """The (event, record) pairs of the last event per id: within a batch only that one
    matters (events of one key are ordered). ``key`` names the events' UUID id field."""
    id_of = attrgetter(f"{key}.int")  # an int hashes in C, a UUID in Python
    return latest_per_key(pairs, lambda pair: id_of(pair[0]))


# The due_dates columns, in the order of the rows due_rows makes (COPY writes them as is).
DUE_COLUMNS = ("assignment_id", "kind", "due_date", "period_start", "agency_id", "status",
               "role")
REPORT = DueKind.REPORT.value
# Plain strings for the database; a dict look-up is cheaper than Enum.value.
KIND_VALUES = {kind: kind.value for kind in DueKind}
STATUS_VALUES = {status: status.value for status in AssignmentStatus}
SOURCE_VALUES = {source: source.value for source in Source}

# The batch's assignments stored already, in one statement, one array per column, through
# asyncpg directly: PostgreSQL plans it once, the rows travel in one round trip, and no
# SQLAlchemy statement is compiled per batch. reported_periods travels as an array literal
# (unnest cannot take an array of arrays of different lengths). A re-delivered older version
# never overwrites a newer one (reports_from and reports_until included: they describe the
# rows of the version stored); RETURNING names the assignments it changed.
ASSIGNMENT_COLUMNS = {
    "id": "uuid", "recommendation_id": "uuid", "agency_id": "uuid", "agency_name": "text",
    "role": "text", "status": "text", "source": "text", "reference": "text", "text": "text",
    "deadline": "jsonb", "active_from": "date", "reported_periods": "text", "version": "int",
    "reports_from": "date", "reports_until": "date",
}
_NAMES = ", ".join(ASSIGNMENT_COLUMNS)
UPSERT_ASSIGNMENTS = (
    f"INSERT INTO notifier.assignments AS a ({_NAMES}, updated_at) SELECT "
    + ", ".join(f"{c}::date[]" if c == "reported_periods" else c for c in ASSIGNMENT_COLUMNS)
    + f", ${len(ASSIGNMENT_COLUMNS) + 1}::timestamptz FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(ASSIGNMENT_COLUMNS.values(), start=1))
    + f") AS e({_NAMES}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in [*ASSIGNMENT_COLUMNS, "updated_at"] if c != "id")
    + " WHERE a.version <= excluded.version RETURNING a.id")
# Which of a batch's assignments are stored already: the others go in with COPY (no
# speculative insertion, no array parameters to encode; a concurrent insert of the same id
# fails the COPY, and the batch is stored again event by event, through the upsert).
STORED_ASSIGNMENTS = "SELECT id FROM notifier.assignments WHERE id = ANY($1::uuid[])"
COPY_ASSIGNMENT_COLUMNS = [*ASSIGNMENT_COLUMNS, "updated_at"]
REPORTED_PERIODS = list(ASSIGNMENT_COLUMNS).index("reported_periods")
# Read by the trigger assignments_state_to_due_dates (migration 0004); for this transaction.
REPLACING_DUE_DATES = text("SET LOCAL hrtrack.replacing_due_dates = on")
DELETE_DUE_DATES = "DELETE FROM notifier.due_dates WHERE assignment_id = ANY($1::uuid[])"


# The report periods to write, reports_from, reports_until
Reports = tuple[tuple[Period, ...], date | None, date | None]
# status, own due dates {(kind, due): start}, Reports
DuePlan = tuple[str, dict[tuple[str, date], date | None], Reports]
NO_REPORTS: Reports = ((), None, None)


class DueRows:
    """The due_dates rows (DUE_COLUMNS) of assignment events under one policy.

    The report periods owed within a window are remembered: most assignments share their
    dates (a plan's deadline, the day they were created), the window changes once a day,
    and working out the quarters costs several microseconds an event.
    """

    CACHE_SIZE = 10_000

    def __init__(self, policy: ReminderPolicy) -> None:
        self.policy = policy
        self._reports: dict[tuple[Any, ...], Reports] = {}

    def owed_reports(self, active_from: date | None, last_own_due: date | None,
                     reported: tuple[date, ...], window: tuple[date, date]) -> Reports:
        """(quarter start, due date) of each report still owed and due within ``window``,
        and the assignment's reports_from and reports_until (policy.report_periods,
        policy.reports_due_within)."""
        key = (active_from, last_own_due, reported, window)
        found = self._reports.get(key)
        if found is None:
            if len(self._reports) >= self.CACHE_SIZE:
                self._reports.clear()
            write, since, until = owed_reports_within(active_from, last_own_due, reported,
                                                      self.policy, *window)
            found = self._reports[key] = (tuple(write), since, until)
        return found

    def plan(self, event: AssignmentEvent, window: tuple[date, date]) -> DuePlan:
        """What one assignment's rows are made of (none once it is closed), with report rows
        due within ``window``, and its reports_from and reports_until (None: every owed
        report due before, or after, the window has its row). The rows themselves are made
        by ``rows``, for the events stored only."""
        status = STATUS_VALUES[event.status]
        if status in self.policy.closed_statuses:
            return status, {}, NO_REPORTS
        own: dict[tuple[str, date], date | None] = {}  # a due date named twice: one row
        last_own: date | None = None
        for d in event.due_dates:
            kind = d.kind
            if kind is DueKind.REPORT:
                continue  # computed here, below
            own[(KIND_VALUES[kind], d.due)] = d.start
            if kind is DueKind.DEADLINE and (last_own is None or d.due > last_own):
                last_own = d.due
        return status, own, self.owed_reports(event.active_from, last_own,
                                              tuple(event.reported_periods), window)

    @staticmethod
    def rows(event: AssignmentEvent, plan: DuePlan) -> list[tuple[Any, ...]]:
        status, own, (reports, _since, _until) = plan
        aid, agency, role = event.assignment_id, event.agency_id, event.role
        rows = [(aid, kind, due, start, agency, status, role)
                for (kind, due), start in own.items()]
        # One per quarter, so no two alike, and of another kind than the own ones.
        rows += [(aid, REPORT, due, start, agency, status, role) for start, due in reports]
        return rows


def assignment_rows(events: list[AssignmentEvent], plans: list[DuePlan]
                    ) -> list[tuple[Any, ...]]:
    """The rows of these assignments, one value per column of ASSIGNMENT_COLUMNS.
    ``plans``: each event's (DueRows.plan), in the same order."""
    return [(e.assignment_id, e.recommendation_id, e.agency_id, e.agency_name, e.role,
             STATUS_VALUES[e.status], SOURCE_VALUES[e.source], e.reference, e.text,
             e.deadline.model_dump_json(), e.active_from, e.reported_periods, e.version,
             *plan[2][1:]) for e, plan in zip(events, plans, strict=True)]


def assignment_columns(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The parameters of UPSERT_ASSIGNMENTS: one sequence per column of ASSIGNMENT_COLUMNS,
    with each reported_periods list as an array literal (unnest cannot take an array of
    arrays of different lengths)."""
    columns = list(zip(*rows, strict=True))
    columns[REPORTED_PERIODS] = tuple("{" + ",".join(d.isoformat() for d in periods) + "}"
                                      for periods in columns[REPORTED_PERIODS])
    return columns


class TrackerEventsConsumer:
    def __init__(self, broker: KafkaBroker, sessions: async_sessionmaker,  # type: ignore[type-arg]
                 settings: NotifierSettings, clock: Clock) -> None:
        self.broker = broker
        self.sessions = sessions
        self.settings = settings
        self.policy = settings.policy
        self.clock = clock  # the service's: report rows are written ahead of its today
        self.due_rows = DueRows(settings.policy)

    def register(self) -> None:
        for topic, handler in ((self.settings.assignments_topic, self.handle_assignments),
                               (self.settings.agencies_topic, self.handle_agencies)):
            self.broker.subscriber(
                topic, group_id=self.settings.consumer_group, batch=True,
                max_records=MAX_RECORDS, batch_timeout_ms=100,
                fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
                auto_offset_reset="earliest", ack_policy=AckPolicy.MANUAL,
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
        pairs = latest_pairs(pairs, key)
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
        """None once stored; the error if the database rejects the data itself (anything
        else is waited out)."""
        try:
            await retry_transient(lambda: store(events), what=f"storing {topic} events",
                                  is_transient=lambda exc: not is_data_error(exc))
        except Exception as exc:  # noqa: BLE001 - only a data error is not retried
            return exc
        return None

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
        """Store the assignments and replace the due dates of those that changed.

        ``events`` holds one event per assignment (the latest of the batch). Assignments
        not stored yet go in with COPY; the others are upserted under the version guard. An
        assignment inserted now has no due dates yet (they are written only here, with their
        assignment, and assignments are never deleted), so only updated ones need the
        DELETE; the due rows then go in with COPY, several times cheaper than INSERTs.
        """
        if not events:
            return
        # Each event worked out once: its report window goes in with the upsert (under its
        # version guard); rows are made for the events applied only (a re-delivered stale
        # batch makes none), and go in with COPY.
        window = report_dates_window(self.clock.today(), self.policy)
        due_rows = self.due_rows
        plans = [due_rows.plan(e, window) for e in events]
        rows = assignment_rows(events, plans)  # pure work, before the transaction
        async with self.sessions() as session, session.begin():
            # The due rows of every changed assignment are replaced below, so the trigger
            # that copies a new status or role onto them (migrations 0003, 0004) is told it
            # has no work. The asyncpg calls run in the session's transaction.
            await session.execute(REPLACING_DUE_DATES)
            driver = await driver_connection(session)
            now = utcnow()
            stored = {r["id"] for r in await driver.fetch(
                STORED_ASSIGNMENTS, [e.assignment_id for e in events])}
            new = [row for row in rows if row[0] not in stored]
            if new:
                await driver.copy_records_to_table(
                    "assignments", schema_name=SCHEMA, columns=COPY_ASSIGNMENT_COLUMNS,
                    records=[(*row, now) for row in new])
            known = [row for row in rows if row[0] in stored]
            replaced = [r["id"] for r in await driver.fetch(
                UPSERT_ASSIGNMENTS, *assignment_columns(known), now)] if known else []
            if replaced:
                await driver.execute(DELETE_DUE_DATES, replaced)
            fresh = {row[0] for row in new} | set(replaced)
            if not fresh:
                return
            due = [row for e, plan in zip(events, plans, strict=True)
                   if e.assignment_id in fresh for row in due_rows.rows(e, plan)]
            if due:
                await driver.copy_records_to_table("due_dates", schema_name=SCHEMA,
                                                   columns=DUE_COLUMNS, records=due)

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
