"""A reminder pass: find what is due, claim it in the ledger, send one digest per recipient
(the sending is delivery.py's).

Never twice (docs/notifier.md has the whole argument):
- each reminder (recipient, assignment, due kind, due date, kind, offset) is claimed by
  inserting its row in the ledger, whose unique key admits it once, whichever replica or
  restart tries again;
- a claimed reminder belongs to exactly one digest (recipient, day); a digest is sent by the
  one transaction that holds its row lock (SELECT ... FOR UPDATE SKIP LOCKED) and is marked
  sent in that same transaction;
- claiming takes the same row lock first, so a reminder never joins a digest that is being
  sent; one that comes after the day's digest went out waits for the recipient's next
  digest (``late``), which keeps "at most one email per recipient per day".

The one window: a crash (or a lost database connection) after the SMTP server accepted a
digest and before its transaction committed leaves the digest pending, and it is sent again,
with the same Message-ID, after the restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

import httpx
from prometheus_client import Counter, Histogram
from sqlalchemy import delete, exists, func, select, text
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.notifier.delivery import (
    DeliveryReport,
    DeliveryRound,
    DigestDelivery,
    digest_outcome,
)
from services.notifier.models import (
    AGENCIES,
    DIGESTS,
    DUE_DATES,
    LEDGER,
    SCHEMA,
)
from services.notifier.policy import (
    ReminderKind,
    ReminderPolicy,
    first_due_seen,
    last_due_seen,
    offsets_for_day,
    owed_reports_within,
    report_dates_window,
    route,
)
from services.notifier.settings import NotifierSettings
from services.notifier.tracker_client import TrackerClient
from shared.db import driver_connection
from shared.events import DueKind
from shared.retry import is_data_error

log = logging.getLogger(__name__)

PASS_DURATION = Histogram("hrtrack_reminder_pass_duration_seconds", "Reminder pass duration",
                          buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
DUE_SET_DURATION = Histogram("hrtrack_reminder_due_set_seconds", "Due-set computation",
                             buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
# Quarterly report rows are written for a rolling window; passes add the quarters entering
# it, for most assignments on the same few days a quarter: those passes take longer.
REPORT_DATES_EXTENDED = Counter(
    "hrtrack_reminder_report_dates_extended",
    "Assignments a pass gave the quarterly report due rows it needed (extend_report_dates)")

# due_query() as SQL for asyncpg (one array parameter for the dates keeps the statement the
# same whatever the policy, so the server's prepared statement is reused).
DUE_SQL = f"""
SELECT due_date, kind, assignment_id, agency_id FROM {SCHEMA}.due_dates
WHERE due_date = ANY($1::date[]) AND status <> ALL($2::text[])
  AND ($3::boolean OR role <> 'partner')
"""

# Report due rows for the passes: the consumer writes them for a window of due dates
# (assignments.reports_from, reports_until); a pass first extends the open assignments whose
# window falls short of its own. Locked (FOR UPDATE): the consumer's upsert of the same
# assignment, or another replica's pass, waits; rows someone else holds are skipped now and
# taken later. Each side has its partial index (migration 0005).
_SHORT = f"""FROM {SCHEMA}.assignments
WHERE ((reports_until IS NOT NULL AND reports_until < $1)
       OR (reports_from IS NOT NULL AND reports_from > $2))
  AND status <> ALL($3::text[])"""
LOCK_SHORT_SQL = f"""
SELECT id, agency_id, status, role, active_from, reported_periods, reports_from,
       reports_until {_SHORT}
ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED
"""
ANY_SHORT_SQL = f"SELECT EXISTS (SELECT {_SHORT})"
# Read once the assignments are locked, so as their locked version wrote them: the last own
# deadline (what the consumer gave policy.report_periods) and the quarters written.
WRITTEN_SQL = f"""
SELECT assignment_id,
       max(due_date) FILTER (WHERE kind = '{DueKind.DEADLINE.value}') AS last_deadline,
       min(period_start) FILTER (WHERE kind = '{DueKind.REPORT.value}') AS first_report,
       max(period_start) FILTER (WHERE kind = '{DueKind.REPORT.value}') AS last_report
FROM {SCHEMA}.due_dates WHERE assignment_id = ANY($1::uuid[]) GROUP BY assignment_id
"""
# The state columns written as the consumer writes them (the fill trigger need not run).
# A row there already (someone else wrote it) stays.
ADD_REPORTS_SQL = f"""
INSERT INTO {SCHEMA}.due_dates (assignment_id, kind, due_date, period_start, agency_id,
                                status, role)
SELECT a, '{DueKind.REPORT.value}', d, s, ag, st, r
FROM unnest($1::uuid[], $2::date[], $3::date[], $4::uuid[], $5::text[], $6::text[])
     AS t(a, d, s, ag, st, r)
ON CONFLICT DO NOTHING
"""
SET_REPORT_WINDOW_SQL = f"""
UPDATE {SCHEMA}.assignments AS a SET reports_from = t.since, reports_until = t.until
FROM unnest($1::uuid[], $2::date[], $3::date[]) AS t(id, since, until) WHERE a.id = t.id
"""

# A batch's reminders into the ledger in one statement: one array per column. The unique
# key skips those claimed before; RETURNING says which are new.
INSERT_LEDGER = text(f"""
INSERT INTO {SCHEMA}.reminder_ledger (digest_id, recipient, recipient_kind, language,
    agency_id, assignment_id, due_kind, due_date, kind, offset_days, as_of, flags, created_at)
SELECT d, r, rk, l, ag, a, dk, dd, k, o, CAST(:as_of AS date), string_to_array(f, ','),
       CAST(:now AS timestamptz)
FROM unnest(CAST(:digest_ids AS uuid[]), CAST(:recipients AS text[]),
            CAST(:recipient_kinds AS text[]), CAST(:languages AS text[]),
            CAST(:agencies AS uuid[]), CAST(:assignments AS uuid[]),
            CAST(:due_kinds AS text[]), CAST(:due_dates AS date[]), CAST(:kinds AS text[]),
            CAST(:offsets AS integer[]), CAST(:flags AS text[]))
     AS t(d, r, rk, l, ag, a, dk, dd, k, o, f)
ON CONFLICT DO NOTHING
RETURNING recipient
""")
# Late reminders of earlier days into the batch's pending digests of the day.
ATTACH_LATE = text(f"""
UPDATE {SCHEMA}.reminder_ledger AS l SET digest_id = t.digest_id
FROM unnest(CAST(:recipients AS text[]), CAST(:digest_ids AS uuid[])) AS t(recipient, digest_id)
WHERE l.recipient = t.recipient AND l.digest_id IS NULL AND l.as_of < CAST(:as_of AS date)
RETURNING l.recipient
""")

# Contacts looked up from the tracker lose against any event (events carry the newest).
LOOKED_UP_AT = datetime(1970, 1, 1, tzinfo=UTC)


class DueReminder(NamedTuple):
    """One reminder of the due set for one recipient."""

    recipient: str
    recipient_kind: str  # agency | escalation | coordinator
    language: str
    agency_id: uuid.UUID
    assignment_id: uuid.UUID
    due_kind: str
    due_date: date
    kind: ReminderKind
    offset_days: int
    flags: tuple[str, ...] = ()


# DueReminder without the recipient, as a plain tuple: a pass may build a hundred thousand.
DueRow = tuple[str, str, uuid.UUID, uuid.UUID, str, date, ReminderKind, int, tuple[str, ...]]
Target = tuple[str, str, str, tuple[str, ...]]  # recipient, recipient kind, language, flags
Contact = tuple[list[str] | None, str | None, str | None]  # emails, language, escalation


@dataclass
class DueSet:
    """What is due on a day, by recipient."""

    by_recipient: dict[str, list[DueRow]] = field(default_factory=lambda: defaultdict(list))
    count: int = 0
    unaddressed: int = 0  # reminders with nobody to send them to (no coordinators set)

    @property
    def reminders(self) -> list[DueReminder]:
        return [DueReminder(r, *d) for r, dues in self.by_recipient.items() for d in dues]


@dataclass(kw_only=True)
class PassReport(DeliveryReport):
    """A pass's answer: what was due and claimed, and (DeliveryReport) what became of the
    digests it delivered."""

    as_of: date
    candidates: int = 0  # reminders due today, claimed or not
    claimed: int = 0  # newly claimed into today's digests
    late: int = 0  # newly claimed after the recipient's digest of today went out
    attached: int = 0  # earlier late reminders put into today's digests
    unaddressed: int = 0
    errors: int = 0
    report_dates_extended: int = 0  # assignments given the report rows this pass needs
    report_dates_ms: float = 0.0  # adding them (before the due set, not in due_set_ms)
    due_set_ms: float = 0.0
    duration_ms: float = 0.0


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a due set of a hundred thousand tuples is built:
    it holds no cycles, and the collector's passes over it would cost more than building
    it. Restores the collector's previous state."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class ReminderService:
    # Recipients claimed per transaction (and whose digests are then sent): large enough
    # that a statement's overhead is shared by many, small enough that a batch's locks are
    # held briefly and its reminders are few.
    claim_batch = 100
    # Assignments whose report rows are extended per transaction.
    extend_batch = 5000
    # Due sets computed again because the consumer stored report rows short of the pass's
    # needs meanwhile (see _complete_due_set); beyond this the pass fails and is run again.
    due_set_attempts = 10

    def __init__(self, sessions: async_sessionmaker,  # type: ignore[type-arg]
                 settings: NotifierSettings, tracker: TrackerClient | None = None) -> None:
        self.sessions = sessions
        self.settings = settings
        self.policy: ReminderPolicy = settings.policy
        self.tracker = tracker
        self.coordinators = list(dict.fromkeys(
            e.strip() for e in settings.coordinator_emails if e.strip()))
        self.offsets = offsets_for_day(self.policy, self.policy.overdue_horizon_days)
        self.delivery = DigestDelivery(sessions, settings)

    # --- report due rows ------------------------------------------------------------------

    async def extend_report_dates(self, as_of: date) -> int:
        """Give every open assignment the report due rows a pass as of ``as_of`` needs, for
        policy.report_dates_window(as_of): the consumer writes them only for its own
        (assignments.reports_from, reports_until), and a replay may run years ahead of (or
        behind) its clock.

        Batches of ``extend_batch`` assignments, one transaction each. Assignments another
        transaction holds (the consumer replacing their rows, another replica extending
        them) are waited for, so that none is left short when this returns. Returns how
        many assignments were extended.
        """
        first, last = report_dates_window(as_of, self.policy)
        closed = sorted(self.policy.closed_statuses)
        extended = 0
        while True:
            async with self.sessions() as session, session.begin():
                driver = await driver_connection(session)
                locked = await driver.fetch(LOCK_SHORT_SQL, last, first, closed,
                                            self.extend_batch)
                if locked:
                    await self._extend(driver, locked, first, last)
                    extended += len(locked)
                    continue
                held = await driver.fetchval(ANY_SHORT_SQL, last, first, closed)
            if not held:
                return extended
            await asyncio.sleep(0.05)  # only assignments others hold are left

    async def _extend(self, driver: Any, locked: list[Any], first: date, last: date) -> None:
        """Write the missing report rows of these locked assignments and their new window,
        computed as the consumer computes them (policy.report_periods of the last own
        deadline, policy.reports_due_within of the old window widened to [first, last],
        leaving out the quarters written)."""
        written = {r["assignment_id"]: r for r in
                   await driver.fetch(WRITTEN_SQL, [a["id"] for a in locked])}
        columns: tuple[list[Any], ...] = tuple([] for _ in range(6))
        ids, dues, starts, agencies, statuses, roles = columns
        windows: tuple[list[Any], ...] = ([], [], [])
        for a in locked:
            found = written.get(a["id"])
            last_deadline = found["last_deadline"] if found else None
            quarters = (found["first_report"], found["last_report"]) \
                if found and found["first_report"] is not None else None
            since, until = a["reports_from"], a["reports_until"]
            add, since, until = owed_reports_within(
                a["active_from"], last_deadline, a["reported_periods"] or [], self.policy,
                None if since is None else min(since, first),
                None if until is None else max(until, last), quarters)
            for start, due in add:
                ids.append(a["id"])
                dues.append(due)
                starts.append(start)
                agencies.append(a["agency_id"])
                statuses.append(a["status"])
                roles.append(a["role"])
            windows[0].append(a["id"])
            windows[1].append(since)
            windows[2].append(until)
        if ids:
            await driver.execute(ADD_REPORTS_SQL, *columns)
        await driver.execute(SET_REPORT_WINDOW_SQL, *windows)

    async def _complete_due_set(self, as_of: date, report: PassReport) -> DueSet:
        """The due set, with every report row it needs: extend_report_dates first, then the
        due set in one snapshot with a check that no open assignment is short of what the
        pass reads. A consumer batch committed in between (its clock's window short of a
        replay's date) makes the check fail: extend again and read again."""
        for _attempt in range(self.due_set_attempts):
            started = time.perf_counter()
            extended = await self.extend_report_dates(as_of)
            report.report_dates_extended += extended
            REPORT_DATES_EXTENDED.inc(extended)
            report.report_dates_ms += (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            due = await self._due_set(as_of, check_reports=True)
            report.due_set_ms += (time.perf_counter() - started) * 1000
            if due is not None:
                return due
            log.info("report due rows fell short of the pass of %s meanwhile; extending again",
                     as_of)
        raise RuntimeError(f"report due rows kept falling short of the pass of {as_of}")

    # --- due set --------------------------------------------------------------------------

    def due_query(self, as_of: date) -> Any:
        """Due rows on the policy's offset days: an IN list on the indexed due_date of one
        table (each row carries its assignment's agency, status and role), only the four
        columns a claim needs."""
        due_days = [as_of + timedelta(days=d) for d in self.offsets]
        query = (
            select(DUE_DATES.c.due_date, DUE_DATES.c.kind, DUE_DATES.c.assignment_id,
                   DUE_DATES.c.agency_id)
            .where(DUE_DATES.c.due_date.in_(due_days),
                   DUE_DATES.c.status.not_in(sorted(self.policy.closed_statuses)))
        )
        if not self.policy.remind_partners:
            query = query.where(DUE_DATES.c.role != "partner")
        return query

    async def due_set(self, as_of: date) -> DueSet:
        """Every reminder due on ``as_of`` with its recipients, from the due rows as they
        are (run_pass first extends the report rows: _complete_due_set)."""
        found = await self._due_set(as_of, check_reports=False)
        assert found is not None
        return found

    async def _due_set(self, as_of: date, *, check_reports: bool) -> DueSet | None:
        """The due set; with ``check_reports``, None if some open assignment lacks report
        rows it needs (checked in the due rows' snapshot)."""
        async with self.sessions() as session:
            if check_reports:
                # One snapshot for the check and the due rows: REPEATABLE READ takes it at
                # the first statement (a read-only transaction: no serialization failures).
                # The check: some open assignment still lacks report rows this pass reads
                # (stored by the consumer, on its clock, after this pass extended them).
                await session.connection(
                    execution_options={"isolation_level": "REPEATABLE READ"})
                driver = await driver_connection(session)
                if await driver.fetchval(ANY_SHORT_SQL, last_due_seen(as_of, self.policy),
                                         first_due_seen(as_of, self.policy),
                                         sorted(self.policy.closed_statuses)):
                    return None
            with gc_paused():
                rows = await self._due_rows(session, as_of)
            agency_ids = {row[3] for row in rows}
            # The whole directory (thousands of rows at most): one constant statement.
            contacts: dict[uuid.UUID, Contact] = {
                r.id: (r.emails, r.language, r.escalation_email)
                for r in (await session.execute(
                    select(AGENCIES.c.id, AGENCIES.c.emails, AGENCIES.c.language,
                           AGENCIES.c.escalation_email))).all()
            } if agency_ids else {}
        unknown = agency_ids - contacts.keys()
        if unknown:
            contacts.update(await self._look_up_agencies(unknown))
        with gc_paused():
            result = self.route_rows(as_of, rows, contacts)
        if result.unaddressed:
            log.warning("%d reminders have nobody to go to: set HRTRACK_COORDINATOR_EMAILS",
                        result.unaddressed)
        return result

    def route_rows(self, as_of: date, rows: Iterable[Any],
                   contacts: dict[uuid.UUID, Contact]) -> DueSet:
        """Due rows (due date, due kind, assignment, agency) to reminders by recipient. The
        per-row work is a few dict look-ups: routes are resolved once per agency."""
        by_day = {as_of + timedelta(days=offset): (offset, kinds)
                  for offset, kinds in self.offsets.items()}
        result = DueSet()
        groups = result.by_recipient
        # Per agency, once: for each kind, the lists to append to and what to append.
        per_agency: dict[uuid.UUID, dict[ReminderKind, list[Any]]] = {}
        count = unaddressed = 0
        for due_date, due_kind, assignment_id, agency_id in rows:
            offset, kinds = by_day[due_date]
            per_kind = per_agency.get(agency_id)
            if per_kind is None:
                per_kind = per_agency[agency_id] = {
                    kind: [(groups[recipient].append, recipient_kind, language, flags)
                           for recipient, recipient_kind, language, flags
                           in self._targets(contacts.get(agency_id), kind)]
                    for kind in ReminderKind}
            for kind in kinds:
                found = per_kind[kind]
                if not found:
                    unaddressed += 1
                for append, recipient_kind, language, flags in found:
                    append((recipient_kind, language, agency_id, assignment_id, due_kind,
                            due_date, kind, offset, flags))
                count += len(found)
        result.count, result.unaddressed = count, unaddressed
        # Routes were prepared for every kind of an agency; keep the recipients with reminders.
        for recipient in [r for r, dues in groups.items() if not dues]:
            del groups[recipient]
        return result

    async def _due_rows(self, session: Any, as_of: date) -> list[Any]:
        """The due query, straight on the driver when it is asyncpg: with a hundred thousand
        rows the ORM's result processing would cost as much as the query itself."""
        connection = await session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        if not hasattr(raw, "fetch"):  # not asyncpg: the portable way
            return list((await session.execute(self.due_query(as_of))).all())
        return list(await raw.fetch(
            DUE_SQL, [as_of + timedelta(days=d) for d in self.offsets],
            sorted(self.policy.closed_statuses), self.policy.remind_partners))

    def _targets(self, contact: Contact | None, kind: ReminderKind) -> list[Target]:
        emails, language, escalation = contact or (None, None, None)
        return [(r.recipient, r.recipient_kind,
                 self.settings.coordinator_language if r.recipient_kind == "coordinator"
                 else language or "en", r.flags)
                for r in route(kind, emails, escalation, self.coordinators)]

    async def _look_up_agencies(self, ids: set[uuid.UUID]) -> dict[uuid.UUID, Contact]:
        """Agencies the events have not brought yet, from the tracker's directory; kept so
        the next pass need not ask again (any later event overwrites them)."""
        if self.tracker is None:
            return {}
        try:
            directory = await self.tracker.agencies()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.warning("agency look-up at the tracker failed (%s); %d agencies without "
                        "contacts go to the coordinators", type(exc).__name__, len(ids))
            return {}
        found = [a for a in directory if a.id in ids]
        if found:
            async with self.sessions() as session, session.begin():
                await session.execute(pg_insert(AGENCIES).on_conflict_do_nothing(), [
                    {"id": a.id, "name": a.name, "emails": a.emails, "language": a.language,
                     "escalation_email": a.escalation_email, "needs_review": a.needs_review,
                     "updated_at": LOOKED_UP_AT} for a in found])
        return {a.id: (a.emails, a.language, a.escalation_email) for a in found}

    # --- pass -----------------------------------------------------------------------------

    async def run_pass(self, as_of: date) -> PassReport:
        """Claim what is due on ``as_of`` and deliver every digest that is ready.

        Recipients are taken a batch at a time: their reminders are claimed in one
        transaction and their digests sent right after, over one SMTP connection for the
        whole pass, so only one batch's digests are ever in the works.

        Safe to run again (same day: nothing new is sent) and on several replicas at once.
        A database outage raises: the pass is simply run again (claims are idempotent).
        """
        started = time.perf_counter()
        report = PassReport(as_of=as_of)
        due = await self._complete_due_set(as_of, report)
        DUE_SET_DURATION.observe(report.due_set_ms / 1000)
        report.candidates, report.unaddressed = due.count, due.unaddressed
        by_recipient = due.by_recipient
        recipients = sorted(set(by_recipient) | await self._recipients_with_late(as_of))
        del due
        touched: list[uuid.UUID] = []
        state = DeliveryRound(report)
        async with self.delivery.connection() as smtp:
            for start in range(0, len(recipients), self.claim_batch):
                # Each recipient's reminders are let go of once they are claimed.
                batch = [(recipient, by_recipient.pop(recipient, []))
                         for recipient in recipients[start:start + self.claim_batch]]
                # This process's other deliveries (the scheduler) wait for the batch: its
                # digests go in recipient order over this pass's connection.
                async with self.delivery.lock:
                    digest_ids = await self._claim_batch(as_of, batch, report)
                    del batch
                    touched += digest_ids
                    await self.delivery.deliver(digest_ids, smtp, state)
            await self.delivery.deliver_pending(report, smtp)
        await self._report_outcomes(report, touched)
        PASS_DURATION.observe(time.perf_counter() - started)
        report.duration_ms = (time.perf_counter() - started) * 1000
        return report

    async def _report_outcomes(self, report: PassReport, digest_ids: list[uuid.UUID]) -> None:
        """Add the digests this pass filled that another delivery loop (the scheduler, or
        another replica) sent meanwhile: waits (FOR SHARE) for a delivery in progress, so
        the answer says what became of each of them."""
        known = {d["digest_id"] for d in [*report.sent, *report.failed, *report.retrying]}
        missing = [d for d in digest_ids if str(d) not in known]
        if not missing:
            return
        async with self.sessions() as session, session.begin():
            # Locked in recipient order, as claims lock them: the two never deadlock.
            digests = (await session.execute(
                select(DIGESTS).where(DIGESTS.c.id.in_(missing))
                .order_by(DIGESTS.c.recipient, DIGESTS.c.as_of).with_for_update(read=True)
            )).mappings().all()
            counts = (await session.execute(
                select(LEDGER.c.digest_id, LEDGER.c.kind, func.count())
                .where(LEDGER.c.digest_id.in_(missing))
                .group_by(LEDGER.c.digest_id, LEDGER.c.kind))).all()
        kinds: dict[uuid.UUID, dict[str, int]] = defaultdict(dict)
        for digest_id, kind, n in counts:
            kinds[digest_id][kind] = n
        for d in digests:
            outcome = digest_outcome(d, sum(kinds[d["id"]].values()), d["attempts"])
            if d["status"] == "sent":
                report.add(outcome | {"status": "sent", "subject": d["subject"],
                                      "message_id": d["message_id"], "kinds": kinds[d["id"]]})
            elif d["status"] == "failed":
                report.add(outcome | {"status": "failed", "error": d["last_error"]})
            else:
                report.add(outcome | {"status": "retry", "error": d["last_error"]})

    async def _recipients_with_late(self, as_of: date) -> set[str]:
        async with self.sessions() as session:
            return set((await session.execute(
                select(LEDGER.c.recipient).distinct()
                .where(LEDGER.c.digest_id.is_(None), LEDGER.c.as_of < as_of))).scalars())

    # --- claims ---------------------------------------------------------------------------

    async def _claim_batch(self, as_of: date, batch: list[tuple[str, list[DueRow]]],
                           report: PassReport) -> list[uuid.UUID]:
        """Claim a batch of recipients' reminders; the digests to deliver now."""
        try:
            outcomes = await self._claim(as_of, batch)
        except Exception as exc:
            if not is_data_error(exc):
                raise  # an outage: the whole pass is run again, nothing is skipped
            if len(batch) > 1:
                # One recipient's bad data never stops the others: claim them one by one.
                found: list[uuid.UUID] = []
                for claim in batch:
                    found += await self._claim_batch(as_of, [claim], report)
                return found
            log.exception("claiming reminders failed for one recipient")
            report.errors += 1
            return []
        digest_ids = []
        late_here = 0
        for claimed, late, attached, digest_id in outcomes:
            report.claimed += claimed
            late_here += late
            report.attached += attached
            if digest_id is not None:
                digest_ids.append(digest_id)
        if late_here:
            log.info("%d reminders came after today's digest to their recipient went out; "
                     "they go with its next digest", late_here)
            report.late += late_here
        return digest_ids

    async def _claim(self, as_of: date, batch: list[tuple[str, list[DueRow]]]
                     ) -> list[tuple[int, int, int, uuid.UUID | None]]:
        """Claim each recipient's reminders (and its late ones from earlier days) on
        ``as_of``, in one transaction: per recipient (claimed, late, attached, the digest
        they joined)."""
        async with self.sessions() as session, session.begin():
            # Whom each digest is for: its first reminder says, or (only late reminders
            # waiting) the first of those.
            heads = {recipient: rows[0][:3] for recipient, rows in batch if rows}
            lonely = [recipient for recipient, rows in batch if not rows]
            if lonely:
                heads.update((r, (kind, language, agency)) for r, kind, language, agency in (
                    await session.execute(
                        select(LEDGER.c.recipient, LEDGER.c.recipient_kind, LEDGER.c.language,
                               LEDGER.c.agency_id).ext(distinct_on(LEDGER.c.recipient))
                        .where(LEDGER.c.recipient.in_(lonely), LEDGER.c.digest_id.is_(None),
                               LEDGER.c.as_of < as_of)
                        .order_by(LEDGER.c.recipient, LEDGER.c.id))).all())
            if not heads:
                return [(0, 0, 0, None)] * len(batch)
            now = datetime.now(UTC)
            # The upsert locks the digest rows (in recipient order, the same in every
            # replica: no deadlocks): a delivery in progress (FOR UPDATE) finishes first,
            # and its status tells whether new reminders may still join it.
            insert = pg_insert(DIGESTS).values([{
                "id": uuid.uuid4(), "recipient": recipient, "recipient_kind": kind,
                "agency_id": None if kind == "coordinator" else agency_id, "as_of": as_of,
                "language": language, "status": "pending", "attempts": 0, "created_at": now,
                "next_attempt_at": now} for recipient, (kind, language, agency_id)
                in sorted(heads.items())])
            stmt = insert.on_conflict_do_update(
                constraint="uq_digest_recipient_day",
                set_={"recipient": insert.excluded.recipient},
            ).returning(DIGESTS.c.recipient, DIGESTS.c.id, DIGESTS.c.status)
            targets = {recipient: digest_id for recipient, digest_id, status
                       in (await session.execute(stmt)).all() if status == "pending"}
            claimed = await self._insert_ledger(session, as_of, now, batch, targets)
            attached: collections.Counter[str] = collections.Counter()
            if targets:
                attached.update((await session.execute(ATTACH_LATE, {
                    "recipients": list(targets), "digest_ids": list(targets.values()),
                    "as_of": as_of})).scalars())
            empty = [d for r, d in targets.items() if not claimed[r] and not attached[r]]
            if empty:
                # Nothing new for these recipients: no empty digest is kept.
                await session.execute(delete(DIGESTS).where(
                    DIGESTS.c.id.in_(empty), ~exists().where(LEDGER.c.digest_id == DIGESTS.c.id)))
        outcomes: list[tuple[int, int, int, uuid.UUID | None]] = []
        for recipient, _rows in batch:
            target = targets.get(recipient)
            if target is None:  # the day's digest went out already: late, for the next one
                outcomes.append((0, claimed[recipient], 0, None))
            else:
                new, old = claimed[recipient], attached[recipient]
                outcomes.append((new, 0, old, target if new or old else None))
        return outcomes

    @staticmethod
    async def _insert_ledger(session: Any, as_of: date, now: datetime,
                             batch: list[tuple[str, list[DueRow]]],
                             targets: dict[str, uuid.UUID]) -> collections.Counter[str]:
        """The batch's reminders into the ledger, one statement (column arrays): those
        already there (the unique key) are skipped. New ones per recipient."""
        columns: tuple[list[Any], ...] = tuple([] for _ in range(11))
        (digest_ids, recipients, recipient_kinds, languages, agencies, assignments, due_kinds,
         due_dates, kinds, offsets, flag_lists) = columns
        for recipient, rows in batch:
            target = targets.get(recipient)
            for rkind, language, agency, assignment, due_kind, due_date, kind, offset, flags \
                    in rows:
                digest_ids.append(target)
                recipients.append(recipient)
                recipient_kinds.append(rkind)
                languages.append(language)
                agencies.append(agency)
                assignments.append(assignment)
                due_kinds.append(due_kind)
                due_dates.append(due_date)
                kinds.append(kind.value)
                offsets.append(offset)
                # Flags are identifiers; a comma-joined text per row fits one text[] column.
                flag_lists.append(",".join(flags if target else (*flags, "late")))
        if not recipients:
            return collections.Counter()
        return collections.Counter((await session.execute(INSERT_LEDGER, {
            "digest_ids": digest_ids, "recipients": recipients, "recipient_kinds":
            recipient_kinds, "languages": languages, "agencies": agencies, "assignments":
            assignments, "due_kinds": due_kinds, "due_dates": due_dates, "kinds": kinds,
            "offsets": offsets, "flags": flag_lists, "as_of": as_of, "now": now})).scalars())

    async def deliver_pending(self) -> None:
        """The scheduler's round between passes: every digest whose (re)try time has come."""
        await self.delivery.deliver_pending()

    # --- ledger ---------------------------------------------------------------------------

    async def ledger(self, *, agency_id: uuid.UUID | None = None, status: str | None = None,
                     as_of: date | None = None, recipient: str | None = None,
                     limit: int = 500) -> list[dict[str, Any]]:
        """Ledger entries, newest first, with their digest's delivery state. ``status``:
        pending | sent | failed | late (waiting for the recipient's next digest)."""
        digest_status = func.coalesce(DIGESTS.c.status, "late")
        query = (select(LEDGER.c.id, LEDGER.c.recipient, LEDGER.c.recipient_kind,
                        LEDGER.c.agency_id, LEDGER.c.assignment_id, LEDGER.c.due_kind,
                        LEDGER.c.due_date, LEDGER.c.kind, LEDGER.c.offset_days, LEDGER.c.as_of,
                        LEDGER.c.flags, LEDGER.c.digest_id, LEDGER.c.created_at,
                        digest_status.label("status"), DIGESTS.c.as_of.label("digest_as_of"),
                        DIGESTS.c.attempts, DIGESTS.c.message_id, DIGESTS.c.subject,
                        DIGESTS.c.sent_at, DIGESTS.c.last_error)
                 .outerjoin(DIGESTS, DIGESTS.c.id == LEDGER.c.digest_id)
                 .order_by(LEDGER.c.id.desc()).limit(limit))
        if agency_id is not None:
            query = query.where(LEDGER.c.agency_id == agency_id)
        if status is not None:
            query = query.where(digest_status == status)
        if as_of is not None:
            query = query.where(LEDGER.c.as_of == as_of)
        if recipient is not None:
            query = query.where(LEDGER.c.recipient == recipient)
        async with self.sessions() as session:
            rows = (await session.execute(query)).mappings().all()
        return [{k: (v.isoformat() if isinstance(v, date | datetime) else
                     str(v) if isinstance(v, uuid.UUID) else v) for k, v in r.items()}
                for r in rows]
