"""The tracker's HTTP entrypoints: read state, maintain the directory, take reports.

Handlers are thin: access rules and queries live in `queries`, changes in `agencies`
and `reports`. Another agency's data is answered with 404, like missing data.
"""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.tracker import queries
from services.tracker.agencies import AliasConflict, NoUsableName, update_agency, upsert_agency
from services.tracker.metrics import REPORTS_SUBMITTED
from services.tracker.models import (
    AgencyCreate,
    AgencyPublic,
    AgencyUpdate,
    AssignmentDetail,
    AssignmentPage,
    ImplementationReport,
    RecommendationDetail,
    RecommendationPage,
    ReportAccepted,
    ReportCreate,
)
from services.tracker.reports import AssignmentNotFound, ReportRejected, submit_report
from services.tracker.repository import AGENCIES, RECOMMENDATIONS, TrackerRepository
from shared.auth import Coordinator, CurrentPrincipal, Principal
from shared.events import AssignmentStatus, Source
from shared.inputs import IsoDate
from shared.web import CheckedRoute, field_problem, problem_responses

# CheckedRoute: NUL characters in parameters and unreadable JSON bodies are refused with a
# 4xx naming them before a query could reach PostgreSQL (shared.web).
router = APIRouter(prefix="/v1", tags=["tracker"], route_class=CheckedRoute)
MAX_PAGE = 1000
# PostgreSQL's OFFSET is a bigint; far below that, deeper pages are better reached by filters.
MAX_OFFSET = 10_000_000


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def today(request: Request) -> date:
    """Today on the service clock (HRTRACK_CLOCK replays a past date)."""
    day: date = request.app.state.clock.today()
    return day


Session = Annotated[AsyncSession, Depends(get_session)]
Today = Annotated[date, Depends(today)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")]
Statuses = Annotated[list[AssignmentStatus] | None, Query(
    alias="status", description="One or more statuses (repeat the parameter)")]
Overdue = Annotated[bool | None, Query(
    description="true: past the own deadline and not closed; false: the others")]
DueBefore = Annotated[IsoDate | None, Query(
    description="Own deadline strictly before this date")]


def not_found(what: str) -> HTTPException:
    # Also the answer for another agency's data: its existence is not revealed.
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{what} not found")


def next_url(request: Request, limit: int, offset: int, total: int) -> str | None:
    if offset + limit >= total:
        return None
    return str(request.url.include_query_params(limit=limit, offset=offset + limit))


def agency_public(row: dict[str, Any]) -> dict[str, Any]:
    return AgencyPublic.model_validate(
        {k: row[k] for k in ("id", "name", "emails", "language", "escalation_email",
                             "aliases", "needs_review")}).model_dump(mode="json")


def notify_relay(request: Request) -> None:
    request.app.state.relay.notify()


# --- recommendations ------------------------------------------------------------------------


NOT_YOURS = "no such {what} (or not yours)"


@router.get("/recommendations", response_model=RecommendationPage,
            summary="Recommendations with their overall status (agencies: their own)",
            responses=problem_responses(_404="agency_id names another agency"))
async def list_recommendations(
    request: Request, principal: CurrentPrincipal, session: Session,
    source: Source | None = None, needs_deadline: bool | None = None,
    agency_id: uuid.UUID | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Text or reference contains")]
    = None,
    limit: Limit = 100, offset: Offset = 0,
) -> dict[str, Any]:
    if agency_id is not None and not principal.may_access_agency(agency_id):
        raise not_found("agency")
    items, total = await queries.list_recommendations(
        session, queries.RecommendationFilter(source, needs_deadline, agency_id, q), principal,
        limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset,
            "next": next_url(request, limit, offset, total)}


@router.get("/recommendations/{recommendation_id}", response_model=RecommendationDetail,
            summary="A recommendation with its assignments",
            responses=problem_responses(_404=NOT_YOURS.format(what="recommendation")))
async def get_recommendation(recommendation_id: uuid.UUID, principal: CurrentPrincipal,
                             session: Session, day: Today) -> dict[str, Any]:
    rec = (await session.execute(select(RECOMMENDATIONS).where(
        RECOMMENDATIONS.c.id == recommendation_id))).mappings().first()
    if rec is None:
        raise not_found("recommendation")
    assignments, _ = await queries.list_assignments(
        session, queries.AssignmentFilter(recommendation_id=recommendation_id), principal, day,
        limit=MAX_PAGE, offset=0)
    if not principal.is_coordinator and not assignments:
        raise not_found("recommendation")
    return {
        "id": rec["id"], "source": rec["source"], "reference": rec["reference"],
        "text": rec["text"], "deadline": rec["deadline"], "due_dates": rec["due_dates"],
        "executors": rec["executors"], "needs_deadline": rec["needs_deadline"],
        "version": rec["version"], "payload": rec["payload"], "assignments": assignments,
    }


# --- agencies -------------------------------------------------------------------------------


@router.get("/agencies", response_model=list[AgencyPublic],
            summary="The agency directory (an agency token: its own entry)")
async def list_agencies(principal: CurrentPrincipal, session: Session,
                        needs_review: bool | None = None) -> list[dict[str, Any]]:
    query = select(AGENCIES).order_by(AGENCIES.c.name)
    if not principal.is_coordinator:
        query = query.where(AGENCIES.c.id == principal.agency_id)
    if needs_review is not None:
        query = query.where(AGENCIES.c.needs_review == needs_review)
    return [agency_public(dict(r)) for r in (await session.execute(query)).mappings().all()]


@contextlib.contextmanager
def agency_problems() -> Iterator[None]:
    """The directory's refusals as answers naming the field."""
    try:
        yield
    except AliasConflict as exc:
        raise field_problem(409, "aliases", str(exc), "alias_conflict") from exc
    except NoUsableName as exc:
        raise field_problem(422, "name", str(exc), "value_error") from exc


@router.post("/agencies", status_code=status.HTTP_201_CREATED, response_model=AgencyPublic,
             summary="Create an agency (or update the one its name or an alias resolves to)",
             responses={201: {"description": "the agency was created"},
                        200: {"model": AgencyPublic,
                              "description": "an existing agency was updated"},
                        **problem_responses(403, _409="an alias belongs to another agency")})
async def create_agency(data: AgencyCreate, principal: Coordinator, session: Session,
                        request: Request, response: Response) -> dict[str, Any]:
    with agency_problems():
        async with session.begin():
            repo = TrackerRepository(session, request.app.state.topics)
            row, created = await upsert_agency(repo, data, principal.subject)
            await repo.flush()
    notify_relay(request)
    if not created:
        response.status_code = status.HTTP_200_OK
    return agency_public(row)


@router.put("/agencies/{agency_id}", response_model=AgencyPublic,
            summary="Update an agency's name, contacts, language, escalation contact, aliases",
            responses=problem_responses(403, _404="no such agency", _409="alias taken"))
async def put_agency(agency_id: uuid.UUID, data: AgencyUpdate, principal: Coordinator,
                     session: Session, request: Request) -> dict[str, Any]:
    with agency_problems():
        async with session.begin():
            repo = TrackerRepository(session, request.app.state.topics)
            row = await update_agency(repo, agency_id, data, principal.subject)
            if row is None:
                raise not_found("agency")
            await repo.flush()
    notify_relay(request)
    return agency_public(row)


# --- assignments ----------------------------------------------------------------------------


async def _page(request: Request, session: AsyncSession, principal: Principal, day: date,
                f: queries.AssignmentFilter, limit: int, offset: int) -> dict[str, Any]:
    items, total = await queries.list_assignments(session, f, principal, day,
                                                  limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset,
            "next": next_url(request, limit, offset, total)}


@router.get("/assignments", response_model=AssignmentPage,
            summary="Assignments (coordinators: all; an agency: its own)",
            responses=problem_responses(_404="agency_id names another agency"))
async def list_assignments(
    request: Request, principal: CurrentPrincipal, session: Session, day: Today,
    source: Source | None = None, status_in: Statuses = None,
    agency_id: uuid.UUID | None = None, overdue: Overdue = None, due_before: DueBefore = None,
    recommendation_id: uuid.UUID | None = None, limit: Limit = 100, offset: Offset = 0,
) -> dict[str, Any]:
    if agency_id is not None and not principal.may_access_agency(agency_id):
        raise not_found("agency")
    f = queries.AssignmentFilter(source, tuple(status_in or ()), agency_id, overdue, due_before,
                                 recommendation_id)
    return await _page(request, session, principal, day, f, limit, offset)


@router.get("/agencies/{agency_id}/assignments", response_model=AssignmentPage,
            summary="An agency's assignments",
            responses=problem_responses(_404=NOT_YOURS.format(what="agency")))
async def agency_assignments(
    agency_id: uuid.UUID, request: Request, principal: CurrentPrincipal, session: Session,
    day: Today, source: Source | None = None, status_in: Statuses = None,
    overdue: Overdue = None, due_before: DueBefore = None, limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    if not principal.may_access_agency(agency_id):
        raise not_found("agency")
    known = (await session.execute(select(AGENCIES.c.id).where(AGENCIES.c.id == agency_id))
             ).first()
    if known is None:
        raise not_found("agency")
    f = queries.AssignmentFilter(source, tuple(status_in or ()), agency_id, overdue, due_before)
    return await _page(request, session, principal, day, f, limit, offset)


@router.get("/assignments/{assignment_id}", response_model=AssignmentDetail,
            summary="An assignment with its report periods, reports and history",
            responses=problem_responses(_404=NOT_YOURS.format(what="assignment")))
async def get_assignment(assignment_id: uuid.UUID, request: Request,
                         principal: CurrentPrincipal, session: Session,
                         day: Today) -> dict[str, Any]:
    detail = await queries.assignment_detail(session, assignment_id, principal, day,
                                             request.app.state.settings.report_day)
    if detail is None:
        raise not_found("assignment")
    return detail


@router.post("/assignments/{assignment_id}/reports", status_code=status.HTTP_201_CREATED,
             response_model=ReportAccepted,
             summary="Report progress on an assignment (its agency, or a coordinator)",
             responses=problem_responses(
                 _403="only coordinators may set this status",
                 _404=NOT_YOURS.format(what="assignment"),
                 _409="the status change is not allowed from the current status",
                 _422="invalid fields, or a quarter that has not begun"))
async def post_report(assignment_id: uuid.UUID, data: ReportCreate, request: Request,
                      principal: CurrentPrincipal, session: Session, day: Today
                      ) -> dict[str, Any]:
    try:
        async with session.begin():
            repo = TrackerRepository(session, request.app.state.topics)
            report, assignment = await submit_report(repo, assignment_id, data, principal, day)
            await repo.flush()
    except AssignmentNotFound as exc:
        raise not_found("assignment") from exc
    except ReportRejected as exc:
        raise field_problem(exc.status_code, exc.field, exc.message, exc.kind) from exc
    REPORTS_SUBMITTED.labels(status=data.status.value).inc()
    notify_relay(request)
    return {"report": report, "assignment": queries.assignment_public(assignment, day)}


# --- the implementation export ----------------------------------------------------------------

EXPORT_COLUMNS = ("reference", "source", "text", "deadline", "due", "agencies", "status",
                  "latest_report_date", "latest_report_agency", "latest_report_text")


def export_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for r in rows:
        agencies = "; ".join(f"{a['name']} ({a['role']}): {a['status']}" for a in r["agencies"])
        writer.writerow([r["reference"], r["source"], r["text"], r["deadline"], r["due"] or "",
                         agencies, str(r["status"]), r["latest_report_date"] or "",
                         r["latest_report_agency"] or "", r["latest_report_text"] or ""])
    return out.getvalue()


@router.get("/reports/implementation", response_model=ImplementationReport,
            summary="Implementation table for a follow-up report (coordinators)",
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "one row per recommendation, as JSON or CSV"},
                       **problem_responses(403)})
async def implementation_report(
    principal: Coordinator, session: Session, day: Today,
    source: Source | None = None, format: Literal["csv", "json"] = "json",
) -> Any:
    rows = await queries.implementation_rows(session, source)
    name = f"implementation-{source.value if source else 'all'}-{day.isoformat()}"
    if format == "csv":
        return Response(export_csv(rows), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{name}.csv"'})
    return {"source": source, "as_of": day, "count": len(rows), "items": rows}
