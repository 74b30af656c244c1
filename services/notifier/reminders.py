"""A reminder pass: find what is due, claim it in the ledger, send one digest per recipient.

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
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, NamedTuple

import httpx
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import bindparam, delete, exists, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncTransaction,
    async_sessionmaker,
)

from services.notifier import mailer
from services.notifier.digest import (
    DigestItem,
    Envelope,
    digest_message,
    ledger_url,
    prepare_digest,
)
from services.notifier.models import (
    SCHEMA,
    AgencyContact,
    Digest,
    DueDateRow,
    LedgerEntry,
    TrackedAssignment,
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

AGENCIES = AgencyContact.__table__  # type: ignore[attr-defined]
ASSIGNMENTS = TrackedAssignment.__table__  # type: ignore[attr-defined]
DUE_DATES = DueDateRow.__table__  # type: ignore[attr-defined]
DIGESTS = Digest.__table__  # type: ignore[attr-defined]
LEDGER = LedgerEntry.__table__  # type: ignore[attr-defined]

REMINDERS_SENT = Counter("hrtrack_reminders_sent", "Reminders delivered, by kind", ["kind"])
EMAILS = Counter("hrtrack_reminder_emails", "Digest emails by delivery outcome "
                 "(sent | retried: temporary failure, will retry | failed: permanent)",
                 ["outcome"])
PENDING = Gauge("hrtrack_reminders_pending",
                "Reminders claimed and not delivered yet (in pending digests, or late)")
PASS_DURATION = Histogram("hrtrack_reminder_pass_duration_seconds", "Reminder pass duration",
                          buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
DUE_SET_DURATION = Histogram("hrtrack_reminder_due_set_seconds", "Due-set computation",
                             buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
# Quarterly report rows are written for a rolling window; passes add the quarters entering
# it, for most assignments on the same few days a quarter: those passes take longer.
REPORT_DATES_EXTENDED = Counter(
    "hrtrack_reminder_report_dates_extended",
    "Assignments a pass gave the quarterly report due rows it needed (extend_report_dates)")
# Every label value exists from the start, so dashboards and alerts see zeros, not gaps.
for _kind in ReminderKind:
    REMINDERS_SENT.labels(kind=_kind.value)
for _outcome in ("sent", "retried", "failed"):
    EMAILS.labels(outcome=_outcome)

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

# The delivery loop's statements, built once: a pass runs them thousands of times.
_RETRY_TIME_CAME = or_(DIGESTS.c.next_attempt_at.is_(None),
                       DIGESTS.c.next_attempt_at <= bindparam("now"))
NEXT_PENDING = (select(DIGESTS).where(DIGESTS.c.status == "pending", _RETRY_TIME_CAME)
                .order_by(DIGESTS.c.as_of, DIGESTS.c.created_at).limit(1)
                .with_for_update(skip_locked=True))
LOCK_PENDING = (select(DIGESTS).where(DIGESTS.c.id == bindparam("digest_id"),
                                      DIGESTS.c.status == "pending", _RETRY_TIME_CAME)
                .with_for_update(skip_locked=True))
DIGEST_ENTRIES = (
    select(LEDGER.c.assignment_id, LEDGER.c.agency_id, LEDGER.c.due_kind, LEDGER.c.due_date,
           LEDGER.c.kind, LEDGER.c.flags, ASSIGNMENTS.c.recommendation_id,
           ASSIGNMENTS.c.source, ASSIGNMENTS.c.reference, ASSIGNMENTS.c.text,
           ASSIGNMENTS.c.status, ASSIGNMENTS.c.agency_name, ASSIGNMENTS.c.role)
    .join(ASSIGNMENTS, ASSIGNMENTS.c.id == LEDGER.c.assignment_id)
    .where(LEDGER.c.digest_id == bindparam("digest_id")))
MARK_SENT = (update(DIGESTS).where(DIGESTS.c.id == bindparam("digest_id"))
             .values(status="sent", attempts=bindparam("new_attempts"), sent_at=bindparam("now"),
                     message_id=bindparam("new_message_id"), subject=bindparam("new_subject"),
                     last_error=None, server_unreachable=False))

# Contacts looked up from the tracker lose against any event (events carry the newest).
LOOKED_UP_AT = datetime(1970, 1, 1, tzinfo=UTC)
# A message is rendered into memory up to this size, into a temporary file beyond it.
SPOOL_IN_MEMORY = 4 * 1024 * 1024


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


@dataclass
class PassReport:
    as_of: date
    candidates: int = 0  # reminders due today, claimed or not
    claimed: int = 0  # newly claimed into today's digests
    late: int = 0  # newly claimed after the recipient's digest of today went out
    attached: int = 0  # earlier late reminders put into today's digests
    unaddressed: int = 0
    errors: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    retrying: list[dict[str, Any]] = field(default_factory=list)
    pending_reminders: int = 0
    report_dates_extended: int = 0  # assignments given the report rows this pass needs
    report_dates_ms: float = 0.0  # adding them (before the due set, not in due_set_ms)
    due_set_ms: float = 0.0
    duration_ms: float = 0.0


@dataclass
class _Round:
    """One delivery round (a pass, or a scheduler round): what it reports, and whether the
    digests backing off for an unreachable server were woken already."""

    report: PassReport | None
    woken: bool = False


@dataclass
class _Prepared:
    """A digest locked, read and rendered, its transaction open: ready to be sent."""

    transaction: AsyncTransaction
    digest: dict[str, Any]
    attempts: int
    message_id: str
    kinds: collections.Counter[str]
    base: dict[str, Any]  # what the pass's answer says of it, whatever the outcome
    spool: IO[bytes] | None = None  # the message
    envelope: Envelope | None = None
    subject: str = ""
    error: str | None = None  # why the message cannot be built

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    async def abandon(self) -> None:
        self.close()
        await self.transaction.rollback()


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


def message_id_for(digest_id: uuid.UUID, domain: str) -> str:
    """Stable per digest: a re-send after a crash carries the same Message-ID."""
    return f"<digest-{digest_id}@{domain.strip() or 'hrtrack.local'}>"


def backoff_seconds(attempts: int, base: float, ceiling: float) -> float:
    """Exponential backoff after ``attempts`` failed attempts: base, 2*base, 4*base, ..."""
    return float(min(base * 2 ** min(max(attempts - 1, 0), 40), ceiling))


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
        # The delivery loop runs on a connection of its own (one checkout per round, not
        # per digest); claims and reads go through sessions.
        self._engine: AsyncEngine = sessions.kw["bind"] if sessions is not None else None
        self.settings = settings
        self.policy: ReminderPolicy = settings.policy
        self.tracker = tracker
        self.coordinators = list(dict.fromkeys(
            e.strip() for e in settings.coordinator_emails if e.strip()))
        self.offsets = offsets_for_day(self.policy, self.policy.overdue_horizon_days)
        # One delivery at a time per process (the scheduler and API passes share it): a
        # crash can then catch at most one digest between the server's "250" and the
        # commit that marks it sent.
        self._delivering = asyncio.Lock()
        self._next_probe = 0.0  # time.monotonic() of the next SMTP probe allowed
        self.smtp = mailer.SmtpConfig(settings.smtp_host, settings.smtp_port,
                                      settings.smtp_timeout_seconds, settings.smtp_username,
                                      settings.smtp_password, settings.smtp_starttls)

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
        state = _Round(report)
        async with mailer.Connection(self.smtp) as smtp:
            for start in range(0, len(recipients), self.claim_batch):
                # Each recipient's reminders are let go of once they are claimed.
                batch = [(recipient, by_recipient.pop(recipient, []))
                         for recipient in recipients[start:start + self.claim_batch]]
                # This process's other deliveries (the scheduler) wait for the batch: its
                # digests go in recipient order over this pass's connection.
                async with self._delivering:
                    digest_ids = await self._claim_batch(as_of, batch, report)
                    del batch
                    touched += digest_ids
                    await self._deliver_ids(digest_ids, smtp, state)
            await self.deliver_pending(report, smtp)
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
            outcome = {"digest_id": str(d["id"]), "recipient": d["recipient"],
                       "as_of": d["as_of"].isoformat(), "items": sum(kinds[d["id"]].values()),
                       "attempts": d["attempts"]}
            if d["status"] == "sent":
                report.sent.append(outcome | {"status": "sent", "subject": d["subject"],
                                              "message_id": d["message_id"],
                                              "kinds": kinds[d["id"]]})
            elif d["status"] == "failed":
                report.failed.append(outcome | {"status": "failed", "error": d["last_error"]})
            else:
                report.retrying.append(outcome | {"status": "retry", "error": d["last_error"]})

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

    # --- delivery -------------------------------------------------------------------------

    async def deliver_pending(self, report: PassReport | None = None,
                              smtp: mailer.Connection | None = None) -> None:
        """Send every pending digest whose (re)try time has come, one transaction each, over
        ``smtp`` (or a connection of its own)."""
        async with contextlib.AsyncExitStack() as stack:
            if smtp is None:
                smtp = await stack.enter_async_context(mailer.Connection(self.smtp))
            async with self._delivering:
                await self._deliver_due(_Round(report), smtp)
        pending = await self.pending_reminders()
        if report is not None:
            report.pending_reminders = pending

    async def _deliver_due(self, state: _Round, smtp: mailer.Connection) -> None:
        now = datetime.now(UTC)
        state.woken = state.woken or await self._probe_if_unreachable(now)
        async with self._engine.connect() as conn:
            while True:
                found, prepared = await self._prepare(conn, NEXT_PENDING, {"now": now})
                if not found:
                    break
                if prepared is not None:
                    await self._record(await self._finish(prepared, smtp), state, now)

    async def _deliver_ids(self, digest_ids: list[uuid.UUID], smtp: mailer.Connection,
                           state: _Round) -> None:
        """Send these digests (those still pending and not backing off), one transaction
        each; one another replica's delivery holds is left to it. The caller holds
        ``_delivering``.

        The next digest is read and rendered (on a second database connection) while the
        current one is with the SMTP server, so the server's time and the rendering
        overlap; still only one digest at a time is between the server's "250" and the
        commit that marks it sent."""
        if not digest_ids:
            return
        now = datetime.now(UTC)
        async with self._engine.connect() as first, self._engine.connect() as second:
            connections = (first, second)

            def prepare(k: int) -> asyncio.Task[tuple[bool, _Prepared | None]]:
                return asyncio.create_task(self._prepare(
                    connections[k % 2], LOCK_PENDING, {"digest_id": digest_ids[k], "now": now}))

            upcoming: asyncio.Task[tuple[bool, _Prepared | None]] | None = prepare(0)
            try:
                for k in range(len(digest_ids)):
                    assert upcoming is not None
                    _found, prepared = await upcoming
                    upcoming = prepare(k + 1) if k + 1 < len(digest_ids) else None
                    if prepared is not None:
                        await self._record(await self._finish(prepared, smtp), state, now)
            finally:
                if upcoming is not None:  # an error: the one read ahead is let go
                    upcoming.cancel()
                    with contextlib.suppress(BaseException):
                        _found, prepared = await upcoming
                        if prepared is not None:
                            await prepared.abandon()

    async def _record(self, outcome: dict[str, Any] | None, state: _Round,
                      now: datetime) -> None:
        if outcome is None:
            return
        if outcome["status"] == "sent" and not state.woken:
            state.woken = True
            await self._wake_backed_off(now)
        if state.report is not None:
            {"sent": state.report.sent, "failed": state.report.failed,
             "retry": state.report.retrying}[outcome["status"]].append(outcome)

    async def _probe_if_unreachable(self, now: datetime) -> bool:
        """While digests back off because the server was unreachable, ask the server (at
        most once per retry interval) whether it is back; if so they go now. True when
        they were woken."""
        if time.monotonic() < self._next_probe:
            return False
        self._next_probe = time.monotonic() + self.settings.delivery_retry_seconds
        async with self.sessions() as session:
            waiting = (await session.execute(select(DIGESTS.c.id).where(
                DIGESTS.c.status == "pending", DIGESTS.c.server_unreachable.is_(True),
                DIGESTS.c.next_attempt_at > now).limit(1))).first()
        if waiting is None or not await mailer.probe(self.smtp):
            return False
        await self._wake_backed_off(now)
        return True

    async def _wake_backed_off(self, now: datetime) -> None:
        """The SMTP server takes mail again: digests backing off because it was unreachable
        go now rather than when their backoff ends (those refused with a 4xx keep their
        backoff). Its own transaction, skipping rows another delivery holds, so it never
        waits for (or deadlocks with) one."""
        async with self.sessions() as session, session.begin():
            backed_off = (select(DIGESTS.c.id).where(DIGESTS.c.status == "pending",
                                                     DIGESTS.c.server_unreachable.is_(True),
                                                     DIGESTS.c.next_attempt_at > now)
                          .with_for_update(skip_locked=True)).scalar_subquery()
            await session.execute(update(DIGESTS).where(DIGESTS.c.id.in_(backed_off))
                                  .values(next_attempt_at=now))

    async def pending_reminders(self) -> int:
        async with self.sessions() as session:
            waiting = (await session.execute(select(func.count()).select_from(LEDGER).where(
                LEDGER.c.digest_id.is_(None)))).scalar_one()
            in_digests = (await session.execute(
                select(func.count()).select_from(LEDGER.join(DIGESTS, DIGESTS.c.id ==
                                                             LEDGER.c.digest_id))
                .where(DIGESTS.c.status == "pending"))).scalar_one()
        PENDING.set(waiting + in_digests)
        return int(waiting + in_digests)

    async def _prepare(self, conn: AsyncConnection, lock: Any, params: dict[str, Any]
                       ) -> tuple[bool, _Prepared | None]:
        """Lock a pending digest (``lock``: which), read its contents under that lock and
        render its message, in a transaction left open for ``_finish``. (False, None): no
        digest to lock; (True, None): it was empty and is gone."""
        transaction = await conn.begin()
        prepared: _Prepared | None = None
        try:
            row = (await conn.execute(lock, params)).mappings().first()
            if row is None:
                await transaction.rollback()
                return False, None
            digest = dict(row)
            entries = (await conn.execute(DIGEST_ENTRIES, {"digest_id": digest["id"]})).all()
            if not entries:
                await conn.execute(delete(DIGESTS).where(DIGESTS.c.id == digest["id"]))
                await transaction.commit()
                return True, None
            attempts = digest["attempts"] + 1
            prepared = _Prepared(
                transaction=transaction, digest=digest, attempts=attempts,
                message_id=message_id_for(digest["id"], self.settings.message_id_domain),
                kinds=collections.Counter(entry.kind for entry in entries),
                base={"digest_id": str(digest["id"]), "recipient": digest["recipient"],
                      "as_of": digest["as_of"].isoformat(), "items": len(entries),
                      "attempts": attempts})
            try:
                content = prepare_digest(
                    recipient_name=self._recipient_name(digest, entries),
                    language=digest["language"], as_of=digest["as_of"],
                    items=[self._item(e) for e in entries],
                    report_url=self.settings.tracker_url,
                    # The most urgent in full, the rest counted: every digest stays a
                    # size mail servers take (all its reminders are sent with it).
                    max_items=self.settings.digest_max_items,
                    ledger_url=ledger_url(self.settings.public_url, digest["recipient"],
                                          digest["as_of"]))
                del entries
                prepared.envelope, chunks = digest_message(
                    digest=content, sender=self.settings.mail_from,
                    recipient=digest["recipient"], as_of=digest["as_of"],
                    message_id=prepared.message_id)
                prepared.subject = content.subject
                del content
                # In memory up to a few MB, on disk beyond (a coordinators' digest of a
                # large book). Closed by _finish, or below on an error.
                spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
                prepared.spool = spool
                for chunk in chunks:
                    spool.write(chunk)
                    await asyncio.sleep(0)  # a large digest takes seconds: others go on
            except (ValueError, KeyError, TypeError) as exc:
                # Bad data (e.g. a malformed address) never renders: retrying cannot help.
                log.warning("digest cannot be built: %s", exc)
                prepared.close()
                prepared.error = str(exc)
            return True, prepared
        except BaseException:
            if prepared is not None:
                prepared.close()
            with contextlib.suppress(Exception):
                await transaction.rollback()
            raise

    async def _finish(self, prepared: _Prepared, smtp: mailer.Connection) -> dict[str, Any]:
        """Send a prepared digest and mark what became of it, in its transaction."""
        digest, attempts = prepared.digest, prepared.attempts
        conn = prepared.transaction.connection
        try:
            if prepared.error is not None or prepared.spool is None \
                    or prepared.envelope is None:
                EMAILS.labels(outcome="failed").inc()
                await self._update(conn, digest["id"], status="failed", attempts=attempts,
                                   last_error=f"cannot build the message: {prepared.error}"
                                   [:2000])
                outcome = prepared.base | {"status": "failed", "error": prepared.error}
            else:
                outcome = await self._send(conn, prepared, smtp)
            await prepared.transaction.commit()
            return outcome
        except BaseException:
            with contextlib.suppress(Exception):
                await prepared.transaction.rollback()
            raise
        finally:
            prepared.close()

    async def _send(self, conn: AsyncConnection, prepared: _Prepared,
                    smtp: mailer.Connection) -> dict[str, Any]:
        digest, attempts, message_id = prepared.digest, prepared.attempts, prepared.message_id
        spool, envelope = prepared.spool, prepared.envelope
        assert spool is not None and envelope is not None
        try:
            size = spool.tell()
            spool.seek(0)
            await smtp.send(spool, size, envelope.sender, envelope.recipients)
        except mailer.DeliveryError as exc:
            error = str(exc)[:2000]
            if exc.permanent:
                EMAILS.labels(outcome="failed").inc()
                await self._update(conn, digest["id"], status="failed", attempts=attempts,
                                   last_error=error, message_id=message_id,
                                   subject=prepared.subject)
                return prepared.base | {"status": "failed", "error": error}
            EMAILS.labels(outcome="retried").inc()
            delay = backoff_seconds(attempts, self.settings.delivery_retry_seconds,
                                    self.settings.delivery_max_backoff_seconds)
            await self._update(conn, digest["id"], attempts=attempts, last_error=error,
                               server_unreachable=exc.unreachable,
                               next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay))
            return prepared.base | {"status": "retry", "error": error,
                                    "retry_in_seconds": delay}
        EMAILS.labels(outcome="sent").inc()
        for kind, n in prepared.kinds.items():
            REMINDERS_SENT.labels(kind=kind).inc(n)
        await conn.execute(MARK_SENT, {
            "digest_id": digest["id"], "new_attempts": attempts, "now": datetime.now(UTC),
            "new_message_id": message_id, "new_subject": prepared.subject})
        return prepared.base | {"status": "sent", "subject": prepared.subject,
                                "message_id": message_id, "kinds": dict(prepared.kinds)}

    @staticmethod
    async def _update(session: Any, digest_id: uuid.UUID, **values: Any) -> None:
        await session.execute(update(DIGESTS).where(DIGESTS.c.id == digest_id).values(**values))

    def _recipient_name(self, digest: dict[str, Any], entries: Sequence[Any]) -> str:
        if digest["recipient_kind"] == "coordinator":
            return self.settings.coordinator_name
        return str(next((e.agency_name for e in entries if e.agency_id == digest["agency_id"]),
                        entries[0].agency_name))

    @staticmethod
    def _item(entry: Any) -> DigestItem:
        return DigestItem(
            assignment_id=str(entry.assignment_id),
            recommendation_id=str(entry.recommendation_id), source=entry.source,
            reference=entry.reference, text=entry.text, due_kind=entry.due_kind,
            due_date=entry.due_date, status=entry.status, kind=ReminderKind(entry.kind),
            agency_name=entry.agency_name, role=entry.role,
            flags=tuple(entry.flags or ()), agency_id=str(entry.agency_id))

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
