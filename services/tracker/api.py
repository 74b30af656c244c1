"""The tracker's HTTP entrypoints: read state, maintain the directory, take reports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.tracker.agencies import AliasConflict, update_agency, upsert_agency
from services.tracker.models import AgencyCreate, AgencyPublic, AgencyUpdate
from services.tracker.repository import AGENCIES, ASSIGNMENTS, RECOMMENDATIONS, TrackerRepository
from shared.auth import Coordinator, CurrentPrincipal

router = APIRouter(prefix="/v1", tags=["tracker"])


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


def not_found(what: str) -> HTTPException:
    # Also the answer for another agency's data: its existence is not revealed.
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{what} not found")


def agency_public(row: dict[str, Any]) -> dict[str, Any]:
    return AgencyPublic.model_validate(
        {k: row[k] for k in ("id", "name", "emails", "language", "escalation_email",
                             "aliases", "needs_review")}).model_dump(mode="json")


def assignment_public(row: Any) -> dict[str, Any]:
    return {"id": str(row.id), "recommendation_id": str(row.recommendation_id),
            "agency_id": str(row.agency_id), "agency_name": row.agency_name, "role": row.role,
            "status": row.status, "due": row.due.isoformat() if row.due else None,
            "active_from": row.active_from.isoformat() if row.active_from else None,
            "version": row.version, "updated_at": row.updated_at.isoformat()}


def assignments_query() -> Any:
    return (select(ASSIGNMENTS, AGENCIES.c.name.label("agency_name"))
            .join(AGENCIES, AGENCIES.c.id == ASSIGNMENTS.c.agency_id))


@router.get("/recommendations/{recommendation_id}", summary="A recommendation with its assignments")
async def get_recommendation(recommendation_id: uuid.UUID, principal: CurrentPrincipal,
                             session: Session) -> dict[str, Any]:
    rec = (await session.execute(select(RECOMMENDATIONS).where(
        RECOMMENDATIONS.c.id == recommendation_id))).mappings().first()
    if rec is None:
        raise not_found("recommendation")
    query = assignments_query().where(ASSIGNMENTS.c.recommendation_id == recommendation_id)
    if not principal.is_coordinator:
        query = query.where(ASSIGNMENTS.c.agency_id == principal.agency_id)
    assignments = (await session.execute(query.order_by(ASSIGNMENTS.c.role))).all()
    if not principal.is_coordinator and not assignments:
        raise not_found("recommendation")
    return {
        "id": str(rec["id"]), "source": rec["source"], "reference": rec["reference"],
        "text": rec["text"], "deadline": rec["deadline"], "due_dates": rec["due_dates"],
        "executors": rec["executors"], "needs_deadline": rec["needs_deadline"],
        "version": rec["version"], "payload": rec["payload"],
        "assignments": [assignment_public(a) for a in assignments],
    }


@router.get("/agencies", summary="The agency directory")
async def list_agencies(principal: CurrentPrincipal, session: Session,
                        needs_review: bool | None = None) -> list[dict[str, Any]]:
    query = select(AGENCIES).order_by(AGENCIES.c.name)
    if not principal.is_coordinator:
        query = query.where(AGENCIES.c.id == principal.agency_id)
    if needs_review is not None:
        query = query.where(AGENCIES.c.needs_review == needs_review)
    return [agency_public(dict(r)) for r in (await session.execute(query)).mappings().all()]


@router.post("/agencies", status_code=status.HTTP_201_CREATED,
             summary="Create an agency (or update the one its name or an alias resolves to)",
             responses={200: {"description": "an existing agency was updated"},
                        409: {"description": "an alias belongs to another agency"}})
async def create_agency(data: AgencyCreate, principal: Coordinator, session: Session,
                        request: Request, response: Response) -> dict[str, Any]:
    async with session.begin():
        repo = TrackerRepository(session)
        try:
            row, created = await upsert_agency(repo, data, principal.subject)
        except AliasConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        await repo.flush()
    request.app.state.relay.notify()
    if not created:
        response.status_code = status.HTTP_200_OK
    return agency_public(row)


@router.put("/agencies/{agency_id}", summary="Update an agency's contacts, language, aliases",
            responses={404: {"description": "no such agency"}, 409: {"description": "alias taken"}})
async def put_agency(agency_id: uuid.UUID, data: AgencyUpdate, principal: Coordinator,
                     session: Session, request: Request) -> dict[str, Any]:
    async with session.begin():
        repo = TrackerRepository(session)
        try:
            row = await update_agency(repo, agency_id, data, principal.subject)
        except AliasConflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        if row is None:
            raise not_found("agency")
        await repo.flush()
    request.app.state.relay.notify()
    return agency_public(row)


@router.get("/agencies/{agency_id}/assignments", summary="An agency's assignments")
async def agency_assignments(
    agency_id: uuid.UUID, principal: CurrentPrincipal, session: Session,
    status_filter: Annotated[str | None, Query(alias="status")] = None,
) -> list[dict[str, Any]]:
    if not principal.may_access_agency(agency_id):
        raise not_found("agency")
    query = assignments_query().where(ASSIGNMENTS.c.agency_id == agency_id)
    if status_filter:
        query = query.where(ASSIGNMENTS.c.status == status_filter)
    rows = (await session.execute(query.order_by(ASSIGNMENTS.c.due, ASSIGNMENTS.c.id))).all()
    return [assignment_public(r) for r in rows]
