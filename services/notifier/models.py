"""The notifier's own view of what is due (schema `notifier`) and its reminder ledger."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    MetaData,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON
from sqlmodel import Field, SQLModel

SCHEMA = "notifier"
metadata = MetaData(schema=SCHEMA)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **kw)


class NotifierModel(SQLModel):
    metadata = metadata


class AgencyContact(NotifierModel, table=True):
    """Kept from the tracker's `agencies` events."""

    __tablename__ = "agency_contacts"
    id: uuid.UUID = Field(primary_key=True)
    name: str
    emails: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(String)))
    language: str = "en"
    escalation_email: str | None = None
    needs_review: bool = False
    updated_at: datetime = _ts()


class TrackedAssignment(NotifierModel, table=True):
    """Kept from the tracker's `assignments` events (latest version wins)."""

    __tablename__ = "assignments"
    # The assignments whose report rows a pass may have to extend (migration 0005).
    __table_args__ = (Index("ix_assignments_reports_from", "reports_from",
                            postgresql_where=text("reports_from IS NOT NULL")),
                      Index("ix_assignments_reports_until", "reports_until",
                            postgresql_where=text("reports_until IS NOT NULL")))
    id: uuid.UUID = Field(primary_key=True)
    recommendation_id: uuid.UUID
    agency_id: uuid.UUID = Field(index=True)
    agency_name: str
    role: str
    status: str
    source: str
    reference: str
    text: str
    deadline: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    active_from: date | None = None
    reported_periods: list[date] = Field(default_factory=list, sa_column=Column(ARRAY(Date)))
    version: int
    # Report due rows are written for every owed quarter whose report is due from
    # reports_from to reports_until; NULL: no bound on that side (every owed report due
    # before, or after, has its row). Passes widen the window (ReminderService).
    reports_from: date | None = None
    reports_until: date | None = None
    updated_at: datetime = _ts()


class DueDateRow(NotifierModel, table=True):
    """One row per date an assignment is due on; the due-set query scans this table."""

    __tablename__ = "due_dates"
    __table_args__ = (Index("ix_due_dates_due", "due_date"),)
    assignment_id: uuid.UUID = Field(primary_key=True)
    kind: str = Field(primary_key=True)
    due_date: date = Field(primary_key=True)
    period_start: date | None = None
    # The assignment's, so the due-set query needs no join (kept by triggers, migration 0003).
    agency_id: uuid.UUID | None = None
    status: str | None = None
    role: str | None = None


class Digest(NotifierModel, table=True):
    """One email per recipient per pass date; its delivery state.

    status: pending (claimed, waiting for delivery or a retry) | sent | failed (the SMTP
    server refused it permanently, or it cannot be rendered).
    """

    __tablename__ = "digests"
    __table_args__ = (
        UniqueConstraint("recipient", "as_of", name="uq_digest_recipient_day"),
        Index("ix_digests_pending", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    )
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    recipient: str
    recipient_kind: str  # agency | escalation | coordinator
    agency_id: uuid.UUID | None = Field(default=None, index=True)
    as_of: date
    language: str = "en"
    status: str = "pending"  # pending | sent | failed
    attempts: int = 0
    message_id: str | None = None
    subject: str | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # The last failure was the server being unreachable (not a 4xx about this message).
    server_unreachable: bool = False
    created_at: datetime = _ts()
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class LedgerEntry(NotifierModel, table=True):
    """Each reminder once: the unique key makes a second claim, hence a second send,
    impossible. ``digest_id`` is NULL while a reminder that came after its recipient's
    digest of the day had gone out waits for the recipient's next digest."""

    __tablename__ = "reminder_ledger"
    __table_args__ = (
        UniqueConstraint("recipient", "assignment_id", "due_kind", "due_date", "kind",
                         "offset_days", name="uq_reminder_once"),
        Index("ix_reminder_ledger_carried", "recipient",
              postgresql_where=text("digest_id IS NULL")),
    )
    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True,
                                                           autoincrement=True))
    digest_id: uuid.UUID | None = Field(default=None, foreign_key="notifier.digests.id",
                                        index=True)
    recipient: str
    recipient_kind: str = "agency"  # agency | escalation | coordinator
    language: str = "en"
    agency_id: uuid.UUID = Field(index=True)
    assignment_id: uuid.UUID
    due_kind: str
    due_date: date
    kind: str
    offset_days: int
    as_of: date  # the pass date that claimed it
    flags: list[str] = Field(default_factory=list, sa_column=Column(
        ARRAY(String), nullable=False, server_default="{}"))
    created_at: datetime = _ts()


# The tables, for the Core statements of the consumer and the passes (the ORM's per-row
# work would cost more than the statements themselves at their sizes).
AGENCIES = AgencyContact.__table__  # type: ignore[attr-defined]
ASSIGNMENTS = TrackedAssignment.__table__  # type: ignore[attr-defined]
DUE_DATES = DueDateRow.__table__  # type: ignore[attr-defined]
DIGESTS = Digest.__table__  # type: ignore[attr-defined]
LEDGER = LedgerEntry.__table__  # type: ignore[attr-defined]
