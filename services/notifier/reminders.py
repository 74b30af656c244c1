"""A reminder pass: find what is due, claim it in the ledger, send one digest per recipient.

Never twice: each reminder is claimed by inserting its unique ledger row
(recipient, assignment, due kind, due date, kind, offset) before any mail is sent, and
each digest row (recipient, day) is sent by the one pass that holds its row lock
(FOR UPDATE SKIP LOCKED). The one window: a crash after the SMTP server accepted a
digest and before it was marked sent re-sends that digest once on restart.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.notifier import mailer
from services.notifier.digest import DigestItem, build_email, render_digest
from services.notifier.models import (
    AgencyContact,
    Digest,
    DueDateRow,
    LedgerEntry,
    TrackedAssignment,
)
from services.notifier.policy import ReminderKind, ReminderPolicy, offsets_for_day
from services.notifier.settings import NotifierSettings

log = logging.getLogger(__name__)

AGENCIES = AgencyContact.__table__  # type: ignore[attr-defined]
ASSIGNMENTS = TrackedAssignment.__table__  # type: ignore[attr-defined]
DUE_DATES = DueDateRow.__table__  # type: ignore[attr-defined]
DIGESTS = Digest.__table__  # type: ignore[attr-defined]
LEDGER = LedgerEntry.__table__  # type: ignore[attr-defined]

REMINDERS_SENT = Counter("hrtrack_reminders_sent", "Reminders delivered", ["kind"])
EMAILS = Counter("hrtrack_reminder_emails", "Digest emails by outcome", ["outcome"])
PENDING = Gauge("hrtrack_reminders_pending", "Digests waiting for delivery")
PASS_DURATION = Histogram("hrtrack_reminder_pass_duration_seconds", "Reminder pass duration",
                          buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
DUE_SET_DURATION = Histogram("hrtrack_reminder_due_set_seconds", "Due-set computation",
                             buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


@dataclass(frozen=True)
class DueReminder:
    recipient: str
    recipient_kind: str
    language: str
    agency_id: uuid.UUID
    item: DigestItem
    offset_days: int


@dataclass
class PassReport:
    as_of: date
    candidates: int = 0
    claimed: int = 0
    digests_sent: list[dict[str, Any]] = field(default_factory=list)
    digests_failed: list[dict[str, Any]] = field(default_factory=list)
    digests_pending: int = 0
    due_set_ms: float = 0.0


class ReminderService:
    def __init__(self, sessions: async_sessionmaker, settings: NotifierSettings  # type: ignore[type-arg]
                 ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.policy: ReminderPolicy = settings.policy
        self.smtp = mailer.SmtpConfig(settings.smtp_host, settings.smtp_port,
                                      settings.smtp_timeout_seconds, settings.smtp_username,
                                      settings.smtp_password, settings.smtp_starttls)

    # --- due set --------------------------------------------------------------------------

    async def due_reminders(self, as_of: date) -> list[DueReminder]:
        offsets = offsets_for_day(self.policy, horizon_days=5 * 366)
        closed = list(self.policy.closed_statuses)
        due_days = [as_of + timedelta(days=d) for d in offsets]
        query = (
            select(DUE_DATES.c.due_date, DUE_DATES.c.kind.label("due_kind"),
                   DUE_DATES.c.period_start, ASSIGNMENTS, AGENCIES.c.emails,
                   AGENCIES.c.language, AGENCIES.c.escalation_email)
            .join(ASSIGNMENTS, ASSIGNMENTS.c.id == DUE_DATES.c.assignment_id)
            .outerjoin(AGENCIES, AGENCIES.c.id == ASSIGNMENTS.c.agency_id)
            .where(DUE_DATES.c.due_date.in_(due_days), ASSIGNMENTS.c.status.not_in(closed))
        )
        if not self.policy.remind_partners:
            query = query.where(ASSIGNMENTS.c.role != "partner")
        async with self.sessions() as session:
            rows = (await session.execute(query)).mappings().all()
        reminders: list[DueReminder] = []
        for row in rows:
            offset = (row["due_date"] - as_of).days
            for kind in offsets.get(offset, []):
                reminders.extend(self._recipients(row, kind, offset))
        return reminders

    def _recipients(self, row: Any, kind: ReminderKind, offset: int) -> list[DueReminder]:
        emails = list(row["emails"] or [])
        flags: tuple[str, ...] = ()
        if kind is ReminderKind.ESCALATION_AGENCY:
            emails = [row["escalation_email"]] if row["escalation_email"] else []
        elif kind is ReminderKind.ESCALATION_COORDINATOR:
            emails = []
        recipient_kind = "agency" if kind in (ReminderKind.UPCOMING, ReminderKind.OVERDUE) \
            else "escalation"
        if not emails:
            # Nobody to tell at the agency: the coordinators hear of it, flagged.
            emails = list(self.settings.coordinator_emails)
            recipient_kind = "coordinator"
            if kind is not ReminderKind.ESCALATION_COORDINATOR:
                flags = ("no_contact",)
        item = DigestItem(
            assignment_id=str(row["id"]), recommendation_id=str(row["recommendation_id"]),
            source=row["source"], reference=row["reference"], text=row["text"],
            due_kind=row["due_kind"], due_date=row["due_date"], status=row["status"], kind=kind,
            agency_name=row["agency_name"], role=row["role"], flags=flags)
        language = (row["language"] or "en") if recipient_kind != "coordinator" else "en"
        return [DueReminder(e, recipient_kind, language, row["agency_id"], item, offset)
                for e in emails]

    # --- pass -----------------------------------------------------------------------------

    async def run_pass(self, as_of: date) -> PassReport:
        started = time.perf_counter()
        report = PassReport(as_of=as_of)
        due = await self.due_reminders(as_of)
        report.due_set_ms = (time.perf_counter() - started) * 1000
        DUE_SET_DURATION.observe(report.due_set_ms / 1000)
        report.candidates = len(due)
        by_recipient: dict[str, list[DueReminder]] = defaultdict(list)
        for reminder in due:
            by_recipient[reminder.recipient].append(reminder)
        for recipient, reminders in by_recipient.items():
            try:
                report.claimed += await self._claim(recipient, as_of, reminders)
            except Exception:  # noqa: BLE001 - one recipient's failure never stops the rest
                log.exception("claiming reminders for a recipient failed")
        await self.deliver_pending(report, as_of=as_of)
        PASS_DURATION.observe(time.perf_counter() - started)
        return report

    async def _claim(self, recipient: str, as_of: date, reminders: list[DueReminder]) -> int:
        first = reminders[0]
        async with self.sessions() as session, session.begin():
            digest_id = (await session.execute(
                pg_insert(DIGESTS).values(
                    id=uuid.uuid4(), recipient=recipient, recipient_kind=first.recipient_kind,
                    agency_id=first.agency_id if first.recipient_kind != "coordinator" else None,
                    as_of=as_of, language=first.language, status="pending", attempts=0,
                    created_at=datetime.now(UTC), next_attempt_at=datetime.now(UTC))
                .on_conflict_do_update(constraint="uq_digest_recipient_day",
                                       set_={"recipient": recipient})
                .returning(DIGESTS.c.id))).scalar_one()
            rows = [{"digest_id": digest_id, "recipient": recipient, "agency_id": r.agency_id,
                     "assignment_id": uuid.UUID(r.item.assignment_id), "due_kind": r.item.due_kind,
                     "due_date": r.item.due_date, "kind": r.item.kind.value,
                     "offset_days": r.offset_days, "as_of": as_of,
                     "created_at": datetime.now(UTC)} for r in reminders]
            claimed = (await session.execute(
                pg_insert(LEDGER).on_conflict_do_nothing().returning(LEDGER.c.id), rows)).all()
            if claimed:
                # New items after the digest went out (a late event): send them as a new digest
                # row only if the day's digest was already delivered.
                status = (await session.execute(select(DIGESTS.c.status).where(
                    DIGESTS.c.id == digest_id))).scalar_one()
                if status != "pending":
                    log.info("late reminders for a delivered digest are kept for tomorrow")
            return len(claimed)

    async def deliver_pending(self, report: PassReport | None = None,
                              as_of: date | None = None) -> None:
        now = datetime.now(UTC)
        while True:
            async with self.sessions() as session, session.begin():
                digest = (await session.execute(
                    select(DIGESTS).where(DIGESTS.c.status == "pending",
                                          or_(DIGESTS.c.next_attempt_at.is_(None),
                                              DIGESTS.c.next_attempt_at <= now))
                    .order_by(DIGESTS.c.created_at).limit(1)
                    .with_for_update(skip_locked=True))).mappings().first()
                if digest is None:
                    break
                outcome = await self._deliver(session, dict(digest))
            if report is not None and outcome is not None:
                (report.digests_sent if outcome["status"] == "sent"
                 else report.digests_failed).append(outcome)
        async with self.sessions() as session:
            pending = (await session.execute(select(func.count()).where(
                DIGESTS.c.status == "pending"))).scalar_one()
        PENDING.set(pending)
        if report is not None:
            report.digests_pending = pending

    async def _deliver(self, session: Any, digest: dict[str, Any]) -> dict[str, Any] | None:
        entries = (await session.execute(
            select(LEDGER, ASSIGNMENTS.c.recommendation_id, ASSIGNMENTS.c.source,
                   ASSIGNMENTS.c.reference, ASSIGNMENTS.c.text, ASSIGNMENTS.c.status,
                   ASSIGNMENTS.c.agency_name, ASSIGNMENTS.c.role)
            .join(ASSIGNMENTS, ASSIGNMENTS.c.id == LEDGER.c.assignment_id)
            .where(LEDGER.c.digest_id == digest["id"]))).mappings().all()
        if not entries:
            await session.execute(update(DIGESTS).where(DIGESTS.c.id == digest["id"])
                                  .values(status="empty"))
            return None
        items = [DigestItem(
            assignment_id=str(e["assignment_id"]), recommendation_id=str(e["recommendation_id"]),
            source=e["source"], reference=e["reference"], text=e["text"], due_kind=e["due_kind"],
            due_date=e["due_date"], status=e["status"], kind=ReminderKind(e["kind"]),
            agency_name=e["agency_name"], role=e["role"],
            flags=("no_contact",) if digest["recipient_kind"] == "coordinator"
            and e["kind"] != ReminderKind.ESCALATION_COORDINATOR else ()) for e in entries]
        name = entries[0]["agency_name"] if digest["recipient_kind"] != "coordinator" \
            else "coordinators"
        rendered = render_digest(recipient_name=name, language=digest["language"],
                                 as_of=digest["as_of"], items=items,
                                 report_url=self.settings.tracker_url)
        message = build_email(digest=rendered, sender=self.settings.mail_from,
                              recipient=digest["recipient"], as_of=digest["as_of"])
        attempts = digest["attempts"] + 1
        try:
            await mailer.send(message, self.smtp)
        except mailer.DeliveryError as exc:
            if exc.permanent:
                EMAILS.labels(outcome="failed").inc()
                values = {"status": "failed", "attempts": attempts, "last_error": str(exc)[:2000]}
            else:
                EMAILS.labels(outcome="retried").inc()
                backoff = min(self.settings.delivery_retry_seconds * 2 ** (attempts - 1),
                              self.settings.delivery_max_backoff_seconds)
                values = {"attempts": attempts, "last_error": str(exc)[:2000],
                          "next_attempt_at": datetime.now(UTC) + timedelta(seconds=backoff)}
            await session.execute(update(DIGESTS).where(DIGESTS.c.id == digest["id"])
                                  .values(**values))
            return {"recipient": digest["recipient"], "status": values.get("status", "retry"),
                    "error": str(exc)} if exc.permanent else None
        EMAILS.labels(outcome="sent").inc()
        for item in items:
            REMINDERS_SENT.labels(kind=item.kind.value).inc()
        await session.execute(update(DIGESTS).where(DIGESTS.c.id == digest["id"]).values(
            status="sent", attempts=attempts, sent_at=datetime.now(UTC),
            message_id=message["Message-ID"], subject=rendered.subject, last_error=None))
        return {"recipient": digest["recipient"], "status": "sent", "items": len(items),
                "subject": rendered.subject, "message_id": message["Message-ID"]}

    async def ledger(self, agency_id: uuid.UUID | None, limit: int = 500) -> list[dict[str, Any]]:
        query = (select(LEDGER, DIGESTS.c.status, DIGESTS.c.message_id, DIGESTS.c.attempts,
                        DIGESTS.c.sent_at, DIGESTS.c.last_error)
                 .join(DIGESTS, DIGESTS.c.id == LEDGER.c.digest_id)
                 .order_by(LEDGER.c.id.desc()).limit(limit))
        if agency_id:
            query = query.where(and_(LEDGER.c.agency_id == agency_id))
        async with self.sessions() as session:
            rows = (await session.execute(query)).mappings().all()
        return [{k: (v.isoformat() if isinstance(v, date | datetime) else
                     str(v) if isinstance(v, uuid.UUID) else v) for k, v in r.items()}
                for r in rows]
