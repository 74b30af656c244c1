"""Keeps the notifier's view of assignments and agency contacts from the tracker's events.

The `assignments` topic carries two shapes (shared.events.ASSIGNMENT_TOPIC_EVENT): an
AssignmentsChanged, several assignments of one recommendation change with the
recommendation's fields once, and an AssignmentEvent, one assignment. Both are read as
``Tracked`` pairs (an assignment's own fields, its recommendation's), and what the
recommendation gives is worked out once per event.

Each assignment's state replaces its due dates: its own (deadline, recurring
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
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from operator import attrgetter
from typing import Any

import orjson
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.notifier.models import AGENCIES, SCHEMA, utcnow
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
    ASSIGNMENT_TOPIC_EVENT,
    AgencyEvent,
    AssignmentChange,
    AssignmentEvent,
    AssignmentsChanged,
    AssignmentStatus,
    DueDate,
    DueKind,
    Source,
    deadline_json,
    latest_per_key,
)
from shared.kafka import send_to_dead_letters
from shared.retry import is_data_error, retry_transient

log = logging.getLogger(__name__)

# Records per batch: a batch costs one transaction and a few round trips whatever its size;
# measured (bench/notifier_ingest.py), 5000 cost more CPU per event than 1000-2000 (the
# collector walks the larger batch's objects).
MAX_RECORDS = 2000


def raw_bodies(msg: Any) -> Any:
    return msg.body


def latest_pairs(pairs: list[tuple[Any, Any]], id_of: Callable[[Any], Any]
                 ) -> list[tuple[Any, Any]]:
    """The (item, record) pairs of the last item per id: within a batch only that one
    matters (events of one key are ordered). ``id_of``: an item's id, best an int (an int
    hashes in C, a UUID in Python)."""
    return latest_per_key(pairs, lambda pair: id_of(pair[0]))


# One assignment as an event left it: (its own fields, its recommendation's). An
# AssignmentEvent is both; an AssignmentsChanged event holds several AssignmentChanges and
# their recommendation's fields once.
AssignmentFields = AssignmentEvent | AssignmentChange
RecommendationFields = AssignmentEvent | AssignmentsChanged
Tracked = tuple[AssignmentFields, RecommendationFields]


def assignment_key(tracked: Tracked) -> int:
    """The assignment's id as an int (hashed in C; a UUID hashes in Python)."""
    return tracked[0].assignment_id.int


def tracked_assignments(event: AssignmentEvent | AssignmentsChanged) -> list[Tracked]:
    """The assignments an event of the `assignments` topic carries, in its order."""
    if isinstance(event, AssignmentsChanged):
        return [(change, event) for change in event.assignments]
    return [(event, event)]


def latest_tracked(events: Sequence[AssignmentEvent | AssignmentsChanged]) -> list[Tracked]:
    """Each assignment's state from the last of these events that carries it."""
    return [t for t, _ in latest_pairs(
        [(t, None) for e in events for t in tracked_assignments(e)], assignment_key)]


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
    "deadline": "json", "active_from": "date", "reported_periods": "text", "version": "int",
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
# A recommendation's own due dates {(kind, due): start}, and its last own deadline
OwnDates = tuple[dict[tuple[str, date], date | None], date | None]
# status, own due dates, Reports
DuePlan = tuple[str, dict[tuple[str, date], date | None], Reports]
NO_REPORTS: Reports = ((), None, None)


def own_dates(due_dates: list[DueDate]) -> OwnDates:
    """A recommendation's due dates as its assignments' rows have them (a date named twice:
    one row; report dates: the notifier computes its own), and its last own deadline, from
    which report periods are owed (policy.report_periods)."""
    own: dict[tuple[str, date], date | None] = {}
    last_own: date | None = None
    for d in due_dates:
        kind = d.kind
        if kind is DueKind.REPORT:
            continue
        own[(KIND_VALUES[kind], d.due)] = d.start
        if kind is DueKind.DEADLINE and (last_own is None or d.due > last_own):
            last_own = d.due
    return own, last_own


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

    def plan(self, assignment: AssignmentFields, dates: OwnDates, window: tuple[date, date]
             ) -> DuePlan:
        """What one assignment's rows are made of (none once it is closed): ``dates``, its
        recommendation's (own_dates), and report rows due within ``window``; and its
        reports_from and reports_until (None: every owed report due before, or after, the
        window has its row). The rows themselves are made by ``rows``, for the assignments
        stored only."""
        status = STATUS_VALUES[assignment.status]
        if status in self.policy.closed_statuses:
            return status, {}, NO_REPORTS
        own, last_own = dates
        return status, own, self.owed_reports(assignment.active_from, last_own,
                                              tuple(assignment.reported_periods), window)

    @staticmethod
    def rows(assignment: AssignmentFields, plan: DuePlan) -> list[tuple[Any, ...]]:
        status, own, (reports, _since, _until) = plan
        aid, agency, role = assignment.assignment_id, assignment.agency_id, assignment.role
        rows = [(aid, kind, due, start, agency, status, role)
                for (kind, due), start in own.items()]
        # One per quarter, so no two alike, and of another kind than the own ones.
        rows += [(aid, REPORT, due, start, agency, status, role) for start, due in reports]
        return rows


class Recommendations:
    """What the assignments of one recommendation share, worked out once per event that
    carries it (an AssignmentsChanged event carries several assignments)."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[OwnDates, str]] = {}

    def __call__(self, recommendation: RecommendationFields) -> tuple[OwnDates, str]:
        """Its own due dates (own_dates) and its deadline as JSON."""
        found = self._seen.get(id(recommendation))
        if found is None:
            found = self._seen[id(recommendation)] = (
                own_dates(recommendation.due_dates),
                orjson.dumps(deadline_json(recommendation.deadline)).decode())
        return found


def assignment_rows(tracked: list[Tracked], plans: list[DuePlan],
                    recommendations: Recommendations) -> list[tuple[Any, ...]]:
    """The rows of these assignments, one value per column of ASSIGNMENT_COLUMNS.
    ``plans``: each one's (DueRows.plan), in the same order."""
    return [(a.assignment_id, r.recommendation_id, a.agency_id, a.agency_name, a.role,
             STATUS_VALUES[a.status], SOURCE_VALUES[r.source], r.reference, r.text,
             recommendations(r)[1], a.active_from, a.reported_periods, a.version,
             *plan[2][1:]) for (a, r), plan in zip(tracked, plans, strict=True)]


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

    async def _parse(self, msg: KafkaMessage, topic: str, validate_json: Callable[[bytes], Any]
                     ) -> list[tuple[Any, Any]]:
        """(event, record) pairs; records that are no valid event go to the dead letters."""
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        parsed = []
        for record in records:
            try:
                parsed.append((validate_json(record.value), record))
            except (ValidationError, ValueError, TypeError) as exc:
                await send_to_dead_letters(self.broker, topic, record.value or b"", record.key, exc)
        return parsed

    async def _store(self, topic: str, pairs: list[tuple[Any, Any]],
                     id_of: Callable[[Any], Any],
                     store: Callable[[list[Any]], Awaitable[None]]) -> None:
        """Store the batch's (item, record) pairs, the last item of each id (``id_of``),
        waiting out anything but a data error (a lost connection, a restarting database:
        nothing is acknowledged before it is stored). If the database rejects the data,
        store item by item and park the records it rejects, so one bad event never blocks
        the topic."""
        pairs = latest_pairs(pairs, id_of)
        if not pairs:
            return
        if await self._store_waiting(topic, store, [item for item, _ in pairs]) is None:
            return
        log.warning("the database rejected a batch of %s events; storing one by one", topic)
        parked: set[int] = set()  # an event of several items goes to the dead letters once
        for item, record in pairs:
            rejected = await self._store_waiting(topic, store, [item])
            if rejected is not None and id(record) not in parked:
                parked.add(id(record))
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
        pairs = [(tracked, record) for event, record in
                 await self._parse(msg, topic, ASSIGNMENT_TOPIC_EVENT.validate_json)
                 for tracked in tracked_assignments(event)]
        await self._store(topic, pairs, assignment_key, self.store_tracked)
        await msg.ack()

    async def handle_agencies(self, bodies: list[bytes], msg: KafkaMessage) -> None:
        topic = self.settings.agencies_topic
        pairs = await self._parse(msg, topic, AgencyEvent.model_validate_json)
        await self._store(topic, pairs, attrgetter("agency_id.int"), self.store_agencies)
        await msg.ack()

    async def store_tracked(self, tracked: list[Tracked]) -> None:
        """Store the assignments and replace the due dates of those that changed.

        ``tracked`` holds one state per assignment (the latest of the batch). Assignments
        not stored yet go in with COPY; the others are upserted under the version guard. An
        assignment inserted now has no due dates yet (they are written only here, with their
        assignment, and assignments are never deleted), so only updated ones need the
        DELETE; the due rows then go in with COPY, several times cheaper than INSERTs.
        """
        if not tracked:
            return
        # Each assignment worked out once (what its recommendation gives, once per event):
        # its report window goes in with the upsert (under its version guard); rows are
        # made for the assignments applied only (a re-delivered stale batch makes none), and
        # go in with COPY.
        window = report_dates_window(self.clock.today(), self.policy)
        due_rows = self.due_rows
        recommendations = Recommendations()
        plans = [due_rows.plan(a, recommendations(r)[0], window) for a, r in tracked]
        rows = assignment_rows(tracked, plans, recommendations)  # pure, before the transaction
        async with self.sessions() as session, session.begin():
            # The due rows of every changed assignment are replaced below, so the trigger
            # that copies a new status or role onto them (migrations 0003, 0004) is told it
            # has no work. The asyncpg calls run in the session's transaction.
            await session.execute(REPLACING_DUE_DATES)
            driver = await driver_connection(session)
            now = utcnow()
            stored = {r["id"] for r in await driver.fetch(
                STORED_ASSIGNMENTS, [a.assignment_id for a, _ in tracked])}
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
            due = [row for (a, _), plan in zip(tracked, plans, strict=True)
                   if a.assignment_id in fresh for row in due_rows.rows(a, plan)]
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
