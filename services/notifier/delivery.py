"""Delivery: one digest at a time, locked, rendered, handed to the SMTP server and marked
sent in one transaction.

A digest row is locked (SELECT ... FOR UPDATE SKIP LOCKED) by the one transaction that
sends it, which also marks what became of it: sent, failed for good (a 5xx, a message that
cannot be built), or to retry after an exponential backoff (a 4xx, the server unreachable;
digests backing off for an unreachable server go as soon as it answers again). Claims take
the same lock first (reminders.py), so no reminder joins a digest being sent. One delivery
at a time per process (``DigestDelivery.lock``): a crash can catch at most one digest
between the server's "250" and the commit, and that one is sent again after the restart,
with the same Message-ID (docs/notifier.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from prometheus_client import Counter, Gauge
from sqlalchemy import bindparam, delete, func, or_, select, update
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
from services.notifier.models import ASSIGNMENTS, DIGESTS, LEDGER
from services.notifier.policy import ReminderKind
from services.notifier.settings import NotifierSettings

log = logging.getLogger(__name__)

REMINDERS_SENT = Counter("hrtrack_reminders_sent", "Reminders delivered, by kind", ["kind"])
EMAILS = Counter("hrtrack_reminder_emails", "Digest emails by delivery outcome "
                 "(sent | retried: temporary failure, will retry | failed: permanent)",
                 ["outcome"])
PENDING = Gauge("hrtrack_reminders_pending",
                "Reminders claimed and not delivered yet (in pending digests, or late)")
# Every label value exists from the start, so dashboards and alerts see zeros, not gaps.
for _kind in ReminderKind:
    REMINDERS_SENT.labels(kind=_kind.value)
for _outcome in ("sent", "retried", "failed"):
    EMAILS.labels(outcome=_outcome)

# The delivery loop's statements, built once: a pass runs them thousands of times.
_RETRY_TIME_CAME = or_(DIGESTS.c.next_attempt_at.is_(None),
                       DIGESTS.c.next_attempt_at <= bindparam("now"))
# Digests backing off because the server was unreachable (woken once it answers again).
_BACKED_OFF = (DIGESTS.c.status == "pending", DIGESTS.c.server_unreachable.is_(True),
               DIGESTS.c.next_attempt_at > bindparam("now"))
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

# Reminders claimed and not delivered: late ones (no digest yet) and those in pending digests.
PENDING_REMINDERS = select(
    select(func.count()).select_from(LEDGER).where(LEDGER.c.digest_id.is_(None))
    .scalar_subquery()
    + select(func.count()).select_from(LEDGER.join(DIGESTS, DIGESTS.c.id == LEDGER.c.digest_id))
    .where(DIGESTS.c.status == "pending").scalar_subquery())

# A message is rendered into memory up to this size, into a temporary file beyond it.
SPOOL_IN_MEMORY = 4 * 1024 * 1024


@dataclass
class DeliveryReport:
    """What became of the digests a delivery round handled (a pass answers with it)."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    retrying: list[dict[str, Any]] = field(default_factory=list)
    pending_reminders: int = 0

    def add(self, outcome: dict[str, Any]) -> None:
        """File a digest's outcome (``digest_outcome``) under its status."""
        {"sent": self.sent, "failed": self.failed, "retry": self.retrying}[
            outcome["status"]].append(outcome)


def digest_outcome(digest: Any, items: int, attempts: int) -> dict[str, Any]:
    """What a pass's answer says of a digest, whatever became of it (its status and the
    rest are added to it)."""
    return {"digest_id": str(digest["id"]), "recipient": digest["recipient"],
            "as_of": digest["as_of"].isoformat(), "items": items, "attempts": attempts}


@dataclass
class DeliveryRound:
    """One delivery round (a pass, or a scheduler round): what it reports, and whether the
    digests backing off for an unreachable server were woken already."""

    report: DeliveryReport | None
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


def message_id_for(digest_id: uuid.UUID, domain: str) -> str:
    """Stable per digest: a re-send after a crash carries the same Message-ID."""
    return f"<digest-{digest_id}@{domain.strip() or 'hrtrack.local'}>"


def backoff_seconds(attempts: int, base: float, ceiling: float) -> float:
    """Exponential backoff after ``attempts`` failed attempts: base, 2*base, 4*base, ..."""
    return float(min(base * 2 ** min(max(attempts - 1, 0), 40), ceiling))


class DigestDelivery:
    """Sends pending digests: those a pass has just filled (``deliver``), and every one
    whose (re)try time has come (``deliver_pending``, the scheduler's round)."""

    def __init__(self, sessions: async_sessionmaker,  # type: ignore[type-arg]
                 settings: NotifierSettings) -> None:
        self.sessions = sessions
        self.settings = settings
        # One delivery at a time per process (the scheduler and API passes share it): a
        # crash can then catch at most one digest between the server's "250" and the
        # commit that marks it sent.
        self.lock = asyncio.Lock()
        self._next_probe = 0.0  # time.monotonic() of the next SMTP probe allowed
        self.smtp = mailer.SmtpConfig(settings.smtp_host, settings.smtp_port,
                                      settings.smtp_timeout_seconds, settings.smtp_username,
                                      settings.smtp_password, settings.smtp_starttls)

    @property
    def _engine(self) -> AsyncEngine:
        """The delivery loop runs on connections of its own (one checkout per round, not
        per digest); other reads go through sessions."""
        engine: AsyncEngine = self.sessions.kw["bind"]
        return engine

    def connection(self) -> mailer.Connection:
        """An SMTP connection for a round of digests: opened by its first message, closed at
        the end of ``async with``."""
        return mailer.Connection(self.smtp)

    async def deliver_pending(self, report: DeliveryReport | None = None,
                              smtp: mailer.Connection | None = None) -> None:
        """Send every pending digest whose (re)try time has come, one transaction each, over
        ``smtp`` (or a connection of its own)."""
        async with contextlib.AsyncExitStack() as stack:
            if smtp is None:
                smtp = await stack.enter_async_context(self.connection())
            async with self.lock:
                await self._deliver_due(DeliveryRound(report), smtp)
        pending = await self.pending_reminders()
        if report is not None:
            report.pending_reminders = pending

    async def _deliver_due(self, state: DeliveryRound, smtp: mailer.Connection) -> None:
        now = datetime.now(UTC)
        state.woken = state.woken or await self._probe_if_unreachable(now)
        async with self._engine.connect() as conn:
            while True:
                found, prepared = await self._prepare(conn, NEXT_PENDING, {"now": now})
                if not found:
                    break
                if prepared is not None:
                    await self._record(await self._finish(prepared, smtp), state, now)

    async def deliver(self, digest_ids: list[uuid.UUID], smtp: mailer.Connection,
                      state: DeliveryRound) -> None:
        """Send these digests (those still pending and not backing off), one transaction
        each; one another replica's delivery holds is left to it. The caller holds
        ``lock``.

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

    async def _record(self, outcome: dict[str, Any] | None, state: DeliveryRound,
                      now: datetime) -> None:
        if outcome is None:
            return
        if outcome["status"] == "sent" and not state.woken:
            state.woken = True
            await self._wake_backed_off(now)
        if state.report is not None:
            state.report.add(outcome)

    async def _probe_if_unreachable(self, now: datetime) -> bool:
        """While digests back off because the server was unreachable, ask the server (at
        most once per retry interval) whether it is back; if so they go now. True when
        they were woken."""
        if time.monotonic() < self._next_probe:
            return False
        self._next_probe = time.monotonic() + self.settings.delivery_retry_seconds
        async with self.sessions() as session:
            waiting = (await session.execute(select(DIGESTS.c.id).where(*_BACKED_OFF).limit(1),
                                             {"now": now})).first()
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
            backed_off = (select(DIGESTS.c.id).where(*_BACKED_OFF)
                          .with_for_update(skip_locked=True)).scalar_subquery()
            await session.execute(update(DIGESTS).where(DIGESTS.c.id.in_(backed_off))
                                  .values(next_attempt_at=now), {"now": now})

    async def pending_reminders(self) -> int:
        async with self.sessions() as session:
            pending = int((await session.execute(PENDING_REMINDERS)).scalar_one())
        PENDING.set(pending)
        return pending

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
                base=digest_outcome(digest, len(entries), attempts))
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
        conn = prepared.transaction.connection
        try:
            if prepared.error is not None or prepared.spool is None \
                    or prepared.envelope is None:
                outcome = await self._fail(conn, prepared, prepared.error,
                                           f"cannot build the message: {prepared.error}")
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
                return await self._fail(conn, prepared, error, error, message_id=message_id,
                                        subject=prepared.subject)
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

    async def _fail(self, conn: AsyncConnection, prepared: _Prepared, error: str | None,
                    last_error: str, **values: Any) -> dict[str, Any]:
        """Mark the digest failed for good (retrying cannot help): ``last_error`` is stored,
        ``error`` is what the pass's answer says."""
        EMAILS.labels(outcome="failed").inc()
        await self._update(conn, prepared.digest["id"], status="failed",
                           attempts=prepared.attempts, last_error=last_error[:2000], **values)
        return prepared.base | {"status": "failed", "error": error}

    @staticmethod
    async def _update(conn: AsyncConnection, digest_id: uuid.UUID, **values: Any) -> None:
        await conn.execute(update(DIGESTS).where(DIGESTS.c.id == digest_id).values(**values))

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

