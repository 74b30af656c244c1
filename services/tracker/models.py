"""The tracker's tables (schema `tracker`), one SQLModel family per entity."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import EmailStr, HttpUrl, StringConstraints
from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, String
from sqlalchemy.dialects.postgresql import ARRAY, JSON
from sqlmodel import Field, SQLModel

from shared.events import AssignmentStatus, Source
from shared.inputs import IsoDate

SCHEMA = "tracker"
metadata = MetaData(schema=SCHEMA)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **kw)


class TrackerModel(SQLModel):
    metadata = metadata


# --- agencies ------------------------------------------------------------------------------

# SQLModel's Field(regex=...) is not enforced by pydantic 2: the constraint goes on the type.
Language = Annotated[str, StringConstraints(pattern="^(en|ru|kk)$")]


class AgencyBase(TrackerModel):
    name: str = Field(min_length=1, max_length=300)
    emails: list[EmailStr] = Field(default_factory=list, sa_column=Column(ARRAY(String)))
    language: Language = Field(default="en", description="en, ru or kk")
    escalation_email: EmailStr | None = None


class Agency(AgencyBase, table=True):
    __tablename__ = "agencies"
    id: uuid.UUID = Field(primary_key=True)
    key: str = Field(unique=True, index=True)
    aliases: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(String)))
    needs_review: bool = False
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class AgencyAlias(TrackerModel, table=True):
    """alias key (shared.executors.agency_key) -> agency; names resolve through it."""

    __tablename__ = "agency_aliases"
    key: str = Field(primary_key=True)
    agency_id: uuid.UUID = Field(foreign_key="tracker.agencies.id", index=True)


class AgencyCreate(AgencyBase):
    aliases: list[str] = Field(default_factory=list)


class AgencyUpdate(TrackerModel):
    name: str | None = Field(default=None, min_length=1, max_length=300)
    emails: list[EmailStr] | None = None
    language: Language | None = None
    escalation_email: EmailStr | None = None
    aliases: list[str] | None = None
    needs_review: bool | None = None


class AgencyPublic(AgencyBase):
    id: uuid.UUID
    aliases: list[str]
    needs_review: bool


# --- recommendations -----------------------------------------------------------------------


class Recommendation(TrackerModel, table=True):
    __tablename__ = "recommendations"
    id: uuid.UUID = Field(primary_key=True)
    source: str = Field(index=True)
    reference: str
    natural_key: list[str] = Field(sa_column=Column(JSON, nullable=False))
    text: str
    deadline: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    due_dates: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    executors: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    content_hash: str
    version: int = 1
    needs_deadline: bool = False
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    # occurred_at of the event last applied: a re-delivered older event never wins.
    last_event_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # event_id of that event: its re-delivery announces the assignments again (0005).
    last_event_id: uuid.UUID | None = None


class RecommendationVersion(TrackerModel, table=True):
    __tablename__ = "recommendation_versions"
    # No foreign keys on the rows a batch writes (migration 0004): references by construction.
    recommendation_id: uuid.UUID = Field(primary_key=True)
    version: int = Field(primary_key=True)
    content_hash: str
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts()


# --- assignments and reports ---------------------------------------------------------------


class Assignment(TrackerModel, table=True):
    __tablename__ = "assignments"
    __table_args__ = (
        Index("ix_assignments_agency_status", "agency_id", "status"),
        Index("ix_assignments_recommendation", "recommendation_id"),
        Index("ix_assignments_status_due", "status", "due"),
    )
    id: uuid.UUID = Field(primary_key=True)
    # No foreign keys on the rows a batch writes (migration 0004): references by construction.
    recommendation_id: uuid.UUID
    agency_id: uuid.UUID
    role: str
    status: str = "not_started"
    due: date | None = Field(default=None, index=True, description="The own deadline's last due")
    active_from: date | None = None
    version: int = 1
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    closed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class ProgressReport(TrackerModel, table=True):
    __tablename__ = "progress_reports"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    assignment_id: uuid.UUID = Field(foreign_key="tracker.assignments.id", index=True)
    period_start: date
    status: str
    text: str
    evidence_links: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    submitted_by: str
    submitted_at: datetime = _ts()


class HistoryEntry(TrackerModel, table=True):
    """Audit trail: every change, who made it and what it was."""

    __tablename__ = "history"
    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True,
                                                           autoincrement=True))
    entity: str
    entity_id: uuid.UUID = Field(index=True)
    action: str
    actor: str
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    at: datetime = _ts()


class OutboxEvent(TrackerModel, table=True):
    """Events written in the same transaction as the change, until the relay publishes them.

    The relay deletes an event once the broker has acknowledged it (migration 0003): what is
    here is what is not published yet.
    """

    __tablename__ = "outbox"
    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True,
                                                           autoincrement=True))
    event_id: uuid.UUID
    topic: str
    key: str
    payload: str
    created_at: datetime = _ts()


# --- HTTP schemas ---------------------------------------------------------------------------


class ReportCreate(TrackerModel):
    """A progress report on one assignment (POST /v1/assignments/{id}/reports)."""

    status: AssignmentStatus
    text: str = Field(min_length=1, max_length=20_000)
    evidence_links: list[HttpUrl] = Field(default_factory=list, max_length=50)
    period: IsoDate | None = Field(
        default=None, description="Any day of the quarter reported on; default the current one")


class ReportPublic(TrackerModel):
    id: uuid.UUID
    assignment_id: uuid.UUID
    period_start: date
    status: AssignmentStatus
    text: str
    evidence_links: list[str]
    submitted_by: str
    submitted_at: datetime


class HistoryPublic(TrackerModel):
    action: str
    actor: str
    data: dict[str, Any]
    at: datetime


class ReportPeriodPublic(TrackerModel):
    start: date
    end: date
    due: date
    reported: bool


class AssignmentPublic(TrackerModel):
    id: uuid.UUID
    recommendation_id: uuid.UUID
    source: Source
    reference: str
    agency_id: uuid.UUID
    agency_name: str
    role: str
    status: AssignmentStatus
    due: date | None
    overdue: bool
    active_from: date | None
    version: int
    updated_at: datetime
    closed_at: datetime | None


class AssignmentDetail(AssignmentPublic):
    text: str
    deadline: dict[str, Any]
    due_dates: list[dict[str, Any]]
    report_periods: list[ReportPeriodPublic]
    reports: list[ReportPublic]
    history: list[HistoryPublic]


class ReportAccepted(TrackerModel):
    report: ReportPublic
    assignment: AssignmentPublic


class AssignmentPage(TrackerModel):
    items: list[AssignmentPublic]
    total: int
    limit: int
    offset: int
    next: str | None = Field(description="URL of the next page, or null on the last one")


class RecommendationSummary(TrackerModel):
    id: uuid.UUID
    source: Source
    reference: str
    text: str
    due: date | None
    needs_deadline: bool
    version: int
    status: AssignmentStatus = Field(description="Overall status from its assignments")
    agencies: int
    updated_at: datetime


class RecommendationPage(TrackerModel):
    items: list[RecommendationSummary]
    total: int
    limit: int
    offset: int
    next: str | None


class ExportAgency(TrackerModel):
    agency_id: uuid.UUID
    name: str
    role: str
    status: AssignmentStatus


class ImplementationRow(TrackerModel):
    """One line of the follow-up report a state sends to the UN."""

    recommendation_id: uuid.UUID
    reference: str
    source: Source
    text: str
    deadline: str
    due: date | None
    agencies: list[ExportAgency]
    status: AssignmentStatus
    latest_report_text: str | None
    latest_report_date: date | None
    latest_report_agency: str | None


class RecommendationDetail(TrackerModel):
    """A recommendation as the tracker holds it, with the assignments the reader may see."""

    id: uuid.UUID
    source: Source
    reference: str
    text: str
    deadline: dict[str, Any] = Field(description="As written and normalized: text, start, due")
    due_dates: list[dict[str, Any]]
    executors: list[dict[str, Any]] = Field(description="[{name, role}] as resolved")
    needs_deadline: bool
    version: int
    payload: dict[str, Any] = Field(description="Every field as posted to intake")
    assignments: list[AssignmentPublic]


class ImplementationReport(TrackerModel):
    """The implementation table as JSON (`format=csv` gives the same rows as CSV)."""

    source: Source | None
    as_of: date
    count: int
    items: list[ImplementationRow]
