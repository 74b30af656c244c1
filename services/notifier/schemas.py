"""What the notifier's HTTP API answers, as documented in its OpenAPI."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field


class FieldError(BaseModel):
    field: str = Field(description="where, e.g. query.as_of")
    message: str
    type: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a readable summary, and per field for 422."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)


class DigestOutcome(BaseModel):
    digest_id: str
    recipient: str
    as_of: date = Field(description="the digest's day (X-Hrtrack-As-Of)")
    items: int = Field(description="reminders in the digest")
    attempts: int
    status: str = Field(description="sent | failed | retry")
    subject: str | None = None
    message_id: str | None = None
    kinds: dict[str, int] | None = Field(default=None, description="reminders by kind")
    error: str | None = Field(default=None, description="the SMTP server's answer")
    retry_in_seconds: float | None = None


class PassAnswer(BaseModel):
    as_of: date
    candidates: int = Field(description="reminders due that day, claimed before or now")
    claimed: int = Field(description="reminders newly claimed into that day's digests")
    late: int = Field(description="claimed after the recipient's digest went out: next digest")
    attached: int = Field(description="earlier late reminders put into that day's digests")
    unaddressed: int = Field(description="reminders with nobody to send to")
    errors: int
    sent: list[DigestOutcome]
    failed: list[DigestOutcome]
    retrying: list[DigestOutcome]
    pending_reminders: int
    report_dates_extended: int = Field(
        description="assignments given the report due rows this pass needed")
    report_dates_ms: float = Field(description="writing them, before the due set")
    due_set_ms: float
    duration_ms: float


class LedgerEntryPublic(BaseModel):
    id: int
    recipient: str
    recipient_kind: str = Field(description="agency | escalation | coordinator")
    agency_id: uuid.UUID
    assignment_id: uuid.UUID
    due_kind: str
    due_date: date
    kind: str = Field(description="upcoming | overdue | escalation_agency | "
                                  "escalation_coordinator")
    offset_days: int = Field(description="due date minus the day it was claimed")
    as_of: date = Field(description="the day it was claimed (due)")
    flags: list[str]
    digest_id: uuid.UUID | None
    created_at: datetime
    status: str = Field(description="pending | sent | failed | late")
    digest_as_of: date | None = Field(description="the day of the digest it went in")
    attempts: int | None
    message_id: str | None
    subject: str | None
    sent_at: datetime | None
    last_error: str | None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no token, bad signature or expired token"},
    422: {"model": ErrorBody, "description": "a query parameter is invalid (named in `errors`)"},
    503: {"model": ErrorBody, "description": "database unavailable; nothing was lost, retry",
          "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
}
