"""The notifier's HTTP entrypoints: run a pass on demand, read the reminder ledger."""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import AfterValidator, BeforeValidator

from services.notifier.reminders import ReminderService
from services.notifier.schemas import ERRORS, ErrorBody, LedgerEntryPublic, PassAnswer
from shared.auth import Coordinator, CurrentPrincipal
from shared.retry import is_database_problem

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["notifier"])


def get_reminders(request: Request) -> ReminderService:
    service: ReminderService = request.app.state.reminders
    return service


Reminders = Annotated[ReminderService, Depends(get_reminders)]


def iso_day(value: object) -> object:
    """Only YYYY-MM-DD: without this, pydantic would read "0" as a Unix timestamp."""
    if isinstance(value, str) and not ISO_DAY.fullmatch(value.strip()):
        raise ValueError("expected a date as YYYY-MM-DD")
    return value.strip() if isinstance(value, str) else value


def plausible_day(value: date) -> date:
    """Passes reach years back (overdue horizon) and ahead; keep clear of date's limits."""
    if not FIRST_DAY <= value <= LAST_DAY:
        raise ValueError(f"expected a date from {FIRST_DAY} to {LAST_DAY}")
    return value


ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(2999, 12, 31)
Day = Annotated[date, BeforeValidator(iso_day), AfterValidator(plausible_day)]


class LedgerStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    LATE = "late"


def unavailable(exc: Exception) -> HTTPException:
    log.warning("reminder request failed: database unavailable (%s)", type(exc).__name__)
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                         detail="database unavailable; nothing was lost, try again",
                         headers={"Retry-After": "2"})


@router.post("/reminders/run", summary="Run one reminder pass as of a date; answers what it sent",
             response_model=PassAnswer,
             responses={**ERRORS, 403: {"model": ErrorBody,
                                        "description": "not a coordinator token"}})
async def run_pass(principal: Coordinator, reminders: Reminders, request: Request,
                   as_of: Annotated[Day | None, Query(
                       description="YYYY-MM-DD; default: today on the service clock")] = None,
                   ) -> dict[str, Any]:
    day = as_of or request.app.state.clock.today()
    try:
        report = await reminders.run_pass(day)
    except Exception as exc:
        if is_database_problem(exc):
            raise unavailable(exc) from exc
        raise
    return dataclasses.asdict(report) | {"as_of": day.isoformat()}


@router.get("/reminders", summary="The reminder ledger (agency tokens: their own agency only)",
            response_model=list[LedgerEntryPublic],
            responses={**ERRORS, 404: {"model": ErrorBody,
                                       "description": "no such agency (or not yours)"}})
async def ledger(
    principal: CurrentPrincipal, reminders: Reminders,
    agency_id: uuid.UUID | None = None,
    status_: Annotated[LedgerStatus | None, Query(
        alias="status", description="pending | sent | failed | late")] = None,
    as_of: Annotated[Day | None, Query(description="the day the reminder was claimed")] = None,
    recipient: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    if not principal.is_coordinator:
        if agency_id is not None and agency_id != principal.agency_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="agency not found")
        agency_id = principal.agency_id
    try:
        rows = await reminders.ledger(agency_id=agency_id,
                                      status=status_.value if status_ else None,
                                      as_of=as_of, recipient=recipient, limit=limit)
    except Exception as exc:
        if is_database_problem(exc):
            raise unavailable(exc) from exc
        raise
    if not principal.is_coordinator:
        # An agency sees that its items went to the coordinators, not their addresses.
        for row in rows:
            if row["recipient_kind"] == "coordinator":
                row["recipient"] = "coordinators"
    return rows
