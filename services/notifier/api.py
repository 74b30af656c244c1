"""The notifier's HTTP entrypoints: run a pass on demand, read the ledger."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from services.notifier.reminders import ReminderService
from shared.auth import Coordinator, CurrentPrincipal

router = APIRouter(prefix="/v1", tags=["notifier"])


def get_reminders(request: Request) -> ReminderService:
    service: ReminderService = request.app.state.reminders
    return service


Reminders = Annotated[ReminderService, Depends(get_reminders)]


@router.post("/reminders/run", summary="Run one reminder pass as of a date; answers what it sent")
async def run_pass(principal: Coordinator, reminders: Reminders, request: Request,
                   as_of: Annotated[date | None, Query(description="YYYY-MM-DD")] = None,
                   ) -> dict[str, Any]:
    day = as_of or request.app.state.clock.today()
    report = await reminders.run_pass(day)
    return dataclasses.asdict(report) | {"as_of": day.isoformat()}


@router.get("/reminders", summary="The reminder ledger (agency tokens: their own only)")
async def ledger(principal: CurrentPrincipal, reminders: Reminders,
                 agency_id: uuid.UUID | None = None,
                 limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> list[dict[str, Any]]:
    if not principal.is_coordinator:
        if agency_id is not None and agency_id != principal.agency_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="agency not found")
        agency_id = principal.agency_id
    return await reminders.ledger(agency_id, limit)
