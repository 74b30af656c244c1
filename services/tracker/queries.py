"""The tracker's read side: assignment lists with filters, details, recommendation lists and
the implementation export. Every query takes the principal, so an agency sees only its own.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, and_, exists, func, not_, or_, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from services.tracker.domain import ROLE_RANK, is_overdue, overall_status, report_periods
from services.tracker.repository import (
    AGENCIES,
    ASSIGNMENTS,
    HISTORY,
    RECOMMENDATIONS,
    REPORTS,
)
from shared.auth import Principal
from shared.events import CLOSED_STATUSES, AssignmentStatus, Source
from shared.executors import ExecutorRole

CLOSED = [s.value for s in CLOSED_STATUSES]


@dataclass(frozen=True)
class AssignmentFilter:
    source: Source | None = None
    statuses: tuple[AssignmentStatus, ...] = ()
    agency_id: uuid.UUID | None = None
    overdue: bool | None = None
    due_before: date | None = None
    recommendation_id: uuid.UUID | None = None


def _overdue_clause(today: date) -> Any:
    return and_(ASSIGNMENTS.c.due < today, ASSIGNMENTS.c.status.not_in(CLOSED))


def _assignments_select(*columns: Any) -> Select[Any]:
    return (select(*columns)
            .select_from(ASSIGNMENTS)
            .join(AGENCIES, AGENCIES.c.id == ASSIGNMENTS.c.agency_id)
            .join(RECOMMENDATIONS, RECOMMENDATIONS.c.id == ASSIGNMENTS.c.recommendation_id))


def _filtered(query: Select[Any], f: AssignmentFilter, principal: Principal,
              today: date) -> Select[Any]:
    if not principal.is_coordinator:
        query = query.where(ASSIGNMENTS.c.agency_id == principal.agency_id)
    if f.agency_id is not None:
        query = query.where(ASSIGNMENTS.c.agency_id == f.agency_id)
    if f.source is not None:
        query = query.where(RECOMMENDATIONS.c.source == f.source.value)
    if f.statuses:
        query = query.where(ASSIGNMENTS.c.status.in_([s.value for s in f.statuses]))
    if f.recommendation_id is not None:
        query = query.where(ASSIGNMENTS.c.recommendation_id == f.recommendation_id)
    if f.due_before is not None:
        query = query.where(ASSIGNMENTS.c.due < f.due_before)
    if f.overdue is True:
        query = query.where(_overdue_clause(today))
    elif f.overdue is False:
        query = query.where(or_(ASSIGNMENTS.c.due.is_(None), not_(_overdue_clause(today))))
    return query


ASSIGNMENT_COLUMNS = (*ASSIGNMENTS.c, AGENCIES.c.name.label("agency_name"),
                      RECOMMENDATIONS.c.source, RECOMMENDATIONS.c.reference)


def assignment_public(row: Any, today: date) -> dict[str, Any]:
    return {
        "id": row["id"], "recommendation_id": row["recommendation_id"],
        "source": row["source"], "reference": row["reference"],
        "agency_id": row["agency_id"], "agency_name": row["agency_name"], "role": row["role"],
        "status": row["status"], "due": row["due"],
        "overdue": is_overdue(row["due"], row["status"], today),
        "active_from": row["active_from"], "version": row["version"],
        "updated_at": row["updated_at"], "closed_at": row["closed_at"],
    }


async def list_assignments(session: AsyncSession, f: AssignmentFilter, principal: Principal,
                           today: date, *, limit: int, offset: int,
                           ) -> tuple[list[dict[str, Any]], int]:
    query = _filtered(_assignments_select(*ASSIGNMENT_COLUMNS), f, principal, today)
    total = (await session.execute(
        _filtered(_assignments_select(func.count()), f, principal, today))).scalar_one()
    rows = (await session.execute(
        query.order_by(ASSIGNMENTS.c.due.asc().nulls_last(), RECOMMENDATIONS.c.reference,
                       ASSIGNMENTS.c.id)
        .limit(limit).offset(offset))).mappings().all()
    return [assignment_public(r, today) for r in rows], int(total)


async def assignment_detail(session: AsyncSession, assignment_id: uuid.UUID,
                            principal: Principal, today: date, report_day: int,
                            ) -> dict[str, Any] | None:
    row = (await session.execute(
        _assignments_select(*ASSIGNMENT_COLUMNS, RECOMMENDATIONS.c.text,
                            RECOMMENDATIONS.c.deadline, RECOMMENDATIONS.c.due_dates)
        .where(ASSIGNMENTS.c.id == assignment_id))).mappings().first()
    if row is None or not principal.may_access_agency(row["agency_id"]):
        return None
    reports = (await session.execute(
        select(REPORTS).where(REPORTS.c.assignment_id == assignment_id)
        .order_by(REPORTS.c.submitted_at))).mappings().all()
    history = await assignment_history(session, assignment_id, row["recommendation_id"])
    # Reports are owed while the assignment is open: up to today, or to when it closed.
    until = row["closed_at"].date() if row["closed_at"] else today
    periods = report_periods(row["active_from"], min(until, today),
                             [r["period_start"] for r in reports], report_day)
    return {
        **assignment_public(row, today),
        "text": row["text"], "deadline": row["deadline"], "due_dates": row["due_dates"],
        "report_periods": [vars(p) for p in periods],
        "reports": [dict(r) for r in reports],
        "history": history,
    }


async def assignment_history(session: AsyncSession, assignment_id: uuid.UUID,
                             recommendation_id: uuid.UUID) -> list[dict[str, Any]]:
    """The assignment's audit entries, oldest first. Its creation is recorded in the entry
    of the recommendation change that created it (``data.assignments``, one entry per
    change, not one per assignment) and is shown here as the assignment's "created"."""
    key = str(assignment_id)
    rows = (await session.execute(
        select(HISTORY.c.entity, HISTORY.c.action, HISTORY.c.actor, HISTORY.c.data,
               HISTORY.c.at)
        .where(or_(and_(HISTORY.c.entity == "assignment", HISTORY.c.entity_id == assignment_id),
                   and_(HISTORY.c.entity == "recommendation",
                        HISTORY.c.entity_id == recommendation_id,
                        # data is json (migration 0007): a path, not jsonb's key operator.
                        HISTORY.c.data["assignments"][key].is_not(None))))
        .order_by(HISTORY.c.id))).mappings().all()
    return [{"action": r["action"], "actor": r["actor"], "data": r["data"], "at": r["at"]}
            if r["entity"] == "assignment" else
            {"action": "created", "actor": r["actor"], "data": r["data"]["assignments"][key],
             "at": r["at"]} for r in rows]


# --- recommendations ------------------------------------------------------------------------


@dataclass(frozen=True)
class RecommendationFilter:
    source: Source | None = None
    needs_deadline: bool | None = None
    agency_id: uuid.UUID | None = None
    text: str | None = None


def _recommendations_where(f: RecommendationFilter, principal: Principal) -> list[Any]:
    where: list[Any] = []
    for agency in {f.agency_id, None if principal.is_coordinator else principal.agency_id}:
        if agency is not None:
            where.append(exists().where(ASSIGNMENTS.c.recommendation_id == RECOMMENDATIONS.c.id,
                                        ASSIGNMENTS.c.agency_id == agency))
    if f.source is not None:
        where.append(RECOMMENDATIONS.c.source == f.source.value)
    if f.needs_deadline is not None:
        where.append(RECOMMENDATIONS.c.needs_deadline == f.needs_deadline)
    if f.text:
        pattern = "%" + f.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(or_(RECOMMENDATIONS.c.text.ilike(pattern),
                         RECOMMENDATIONS.c.reference.ilike(pattern)))
    return where


async def list_recommendations(session: AsyncSession, f: RecommendationFilter,
                               principal: Principal, *, limit: int, offset: int,
                               ) -> tuple[list[dict[str, Any]], int]:
    where = _recommendations_where(f, principal)
    total = (await session.execute(
        select(func.count()).select_from(RECOMMENDATIONS).where(*where))).scalar_one()
    recs = (await session.execute(
        select(RECOMMENDATIONS.c.id, RECOMMENDATIONS.c.source, RECOMMENDATIONS.c.reference,
               RECOMMENDATIONS.c.text, RECOMMENDATIONS.c.deadline,
               RECOMMENDATIONS.c.needs_deadline, RECOMMENDATIONS.c.version,
               RECOMMENDATIONS.c.updated_at)
        .where(*where).order_by(RECOMMENDATIONS.c.source, RECOMMENDATIONS.c.reference)
        .limit(limit).offset(offset))).mappings().all()
    statuses: dict[uuid.UUID, list[tuple[str, str]]] = defaultdict(list)
    if recs:
        query = select(ASSIGNMENTS.c.recommendation_id, ASSIGNMENTS.c.role, ASSIGNMENTS.c.status
                       ).where(ASSIGNMENTS.c.recommendation_id.in_([r["id"] for r in recs]))
        if not principal.is_coordinator:
            query = query.where(ASSIGNMENTS.c.agency_id == principal.agency_id)
        for a in (await session.execute(query)).all():
            statuses[a.recommendation_id].append((a.role, a.status))
    items = [{
        "id": r["id"], "source": r["source"], "reference": r["reference"], "text": r["text"],
        "due": (r["deadline"] or {}).get("due"), "needs_deadline": r["needs_deadline"],
        "version": r["version"], "status": overall_status(statuses[r["id"]]),
        "agencies": len(statuses[r["id"]]), "updated_at": r["updated_at"],
    } for r in recs]
    return items, int(total)


# --- the implementation export ----------------------------------------------------------------


async def implementation_rows(session: AsyncSession, source: Source | None
                              ) -> list[dict[str, Any]]:
    """One row per recommendation: its agencies with roles and statuses, the overall status
    and the latest progress report (the table of a state's follow-up report)."""
    rec_where = [RECOMMENDATIONS.c.source == source.value] if source else []
    recs = (await session.execute(
        select(RECOMMENDATIONS.c.id, RECOMMENDATIONS.c.source, RECOMMENDATIONS.c.reference,
               RECOMMENDATIONS.c.text, RECOMMENDATIONS.c.deadline)
        .where(*rec_where)
        .order_by(RECOMMENDATIONS.c.source, RECOMMENDATIONS.c.reference))).mappings().all()
    agencies: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for a in (await session.execute(
            _assignments_select(ASSIGNMENTS.c.recommendation_id, ASSIGNMENTS.c.agency_id,
                                ASSIGNMENTS.c.role, ASSIGNMENTS.c.status,
                                AGENCIES.c.name.label("agency_name"))
            .where(*rec_where))).mappings().all():
        agencies[a["recommendation_id"]].append({
            "agency_id": a["agency_id"], "name": a["agency_name"], "role": a["role"],
            "status": a["status"]})
    for named in agencies.values():  # the lead first, then co-executors, then partners
        named.sort(key=lambda a: (ROLE_RANK[ExecutorRole(a["role"])], a["name"]))
    latest = {r["recommendation_id"]: r for r in (await session.execute(
        _assignments_select(ASSIGNMENTS.c.recommendation_id, REPORTS.c.text,
                            REPORTS.c.submitted_at, AGENCIES.c.name.label("agency_name"))
        .join(REPORTS, REPORTS.c.assignment_id == ASSIGNMENTS.c.id)
        .where(*rec_where)
        .ext(distinct_on(ASSIGNMENTS.c.recommendation_id))
        .order_by(ASSIGNMENTS.c.recommendation_id, REPORTS.c.submitted_at.desc())
    )).mappings().all()}
    rows = []
    for r in recs:
        report = latest.get(r["id"])
        rows.append({
            "recommendation_id": r["id"], "reference": r["reference"], "source": r["source"],
            "text": r["text"], "deadline": (r["deadline"] or {}).get("text") or "",
            "due": (r["deadline"] or {}).get("due"),
            "agencies": agencies[r["id"]],
            "status": overall_status((a["role"], a["status"]) for a in agencies[r["id"]]),
            "latest_report_text": report["text"] if report else None,
            "latest_report_date": report["submitted_at"].date() if report else None,
            "latest_report_agency": report["agency_name"] if report else None,
        })
    return rows
