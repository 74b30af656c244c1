"""The tracker's pure rules: which assignments a recommendation makes, status changes,
report periods, overdue state and the overall status of a recommendation."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from shared.deadlines import quarterly_report_periods
from shared.events import (
    CLOSED_STATUSES,
    AssignmentEventType,
    AssignmentStatus,
    DueDate,
    DueKind,
    RecommendationEvent,
)
from shared.executors import ExecutorRole, agency_key

ROLE_RANK = {ExecutorRole.LEAD: 0, ExecutorRole.CO: 1, ExecutorRole.PARTNER: 2}
_ANY = frozenset(AssignmentStatus)

# Which status an assignment may move to from each status. Nothing moves back to
# not_started once work was reported; closed ones may be reopened only to in_progress.
# A report may repeat the current status: it is still that quarter's report.
ALLOWED_TRANSITIONS: dict[AssignmentStatus, frozenset[AssignmentStatus]] = {
    AssignmentStatus.NOT_STARTED: _ANY,
    AssignmentStatus.IN_PROGRESS: _ANY - {AssignmentStatus.NOT_STARTED},
    AssignmentStatus.PARTIALLY_IMPLEMENTED: _ANY - {AssignmentStatus.NOT_STARTED},
    AssignmentStatus.NOT_IMPLEMENTED: _ANY - {AssignmentStatus.NOT_STARTED},
    AssignmentStatus.IMPLEMENTED: frozenset({AssignmentStatus.IMPLEMENTED,
                                             AssignmentStatus.IN_PROGRESS}),
    AssignmentStatus.CANCELLED: frozenset({AssignmentStatus.CANCELLED,
                                           AssignmentStatus.IN_PROGRESS}),
}

# Withdrawing an obligation is the coordinators' decision, never the executor's own.
COORDINATOR_ONLY = frozenset({AssignmentStatus.CANCELLED})


def transition_allowed(current: AssignmentStatus, new: AssignmentStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


def may_set_status(new: AssignmentStatus, *, coordinator: bool) -> bool:
    return coordinator or new not in COORDINATOR_ONLY


def is_closed(status: AssignmentStatus | str) -> bool:
    return AssignmentStatus(status) in CLOSED_STATUSES


def restated_event_type(version: int, status: AssignmentStatus | str) -> AssignmentEventType:
    """The type of an assignment event announced again from the stored state: what its
    first announcement most likely was (the stored row does not say which change made it)."""
    if AssignmentStatus(status) is AssignmentStatus.CANCELLED:
        return AssignmentEventType.CLOSED
    return AssignmentEventType.CREATED if version == 1 else AssignmentEventType.UPDATED


def report_events(old: AssignmentStatus, new: AssignmentStatus) -> list[AssignmentEventType]:
    """Events a progress report announces: always the report, then the status change."""
    events = [AssignmentEventType.REPORT_SUBMITTED]
    if new != old:
        events.append(AssignmentEventType.CLOSED if new in CLOSED_STATUSES
                      else AssignmentEventType.STATUS_CHANGED)
    return events


# --- executors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutorClaim:
    """One agency named by a recommendation, with its strongest role."""

    key: str
    name: str
    role: ExecutorRole


def executor_claims(event: RecommendationEvent) -> list[ExecutorClaim]:
    """Executors by agency key; an agency named twice keeps its strongest role."""
    claims: dict[str, ExecutorClaim] = {}
    for executor in event.executors:
        key = agency_key(executor.name)
        if not key:
            continue
        current = claims.get(key)
        if current is None or ROLE_RANK[executor.role] < ROLE_RANK[current.role]:
            claims[key] = ExecutorClaim(key, executor.name, executor.role)
    return list(claims.values())


def claims_by_agency(claims: Iterable[ExecutorClaim], agency_of: Mapping[str, uuid.UUID]
                     ) -> dict[uuid.UUID, ExecutorClaim]:
    """One claim per resolved agency: "MoJ" and "Ministry of Justice" in one list are one
    assignment, with the strongest role either name had."""
    by_agency: dict[uuid.UUID, ExecutorClaim] = {}
    for claim in claims:
        agency = agency_of[claim.key]
        current = by_agency.get(agency)
        if current is None or ROLE_RANK[claim.role] < ROLE_RANK[current.role]:
            by_agency[agency] = claim
    return by_agency


# --- dates --------------------------------------------------------------------------------


def own_due(due_dates: list[DueDate], deadline_due: date | None = None) -> date | None:
    """The last due date of the recommendation's own deadline (recurring: the final year).

    A deadline derived from another obligation (UPR mid-term, treaty follow-up) is listed
    under that obligation's kind, so the normalized deadline's due date stands in.
    """
    own = [d.due for d in due_dates if d.kind is DueKind.DEADLINE]
    return max(own) if own else deadline_due


def active_from(event: RecommendationEvent, fallback: date) -> date:
    """Quarterly progress reports are owed from the deadline's start, or from creation."""
    return event.deadline.start or fallback


def quarter_start(day: date) -> date:
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def is_overdue(due: date | None, status: AssignmentStatus | str, today: date) -> bool:
    """Past its own deadline and still open."""
    return due is not None and due < today and not is_closed(status)


def report_period(period: date | None, today: date) -> date:
    """The quarter a report is for (its first day); default the current quarter."""
    return quarter_start(period or today)


def period_in_future(period_start: date, today: date) -> bool:
    return period_start > quarter_start(today)


@dataclass(frozen=True)
class ReportPeriod:
    start: date
    end: date
    due: date
    reported: bool


def report_periods(start: date | None, today: date, reported: Iterable[date],
                   report_day: int = 10) -> list[ReportPeriod]:
    """Every quarter from `start` to today's, the day its report is due, and whether it is in
    (DESIGN.md section 2: each open assignment owes a report per quarter)."""
    if start is None or start > today:
        return []
    done = {quarter_start(d) for d in reported}
    return [ReportPeriod(q_start, q_end, due, q_start in done)
            for q_start, q_end, due in quarterly_report_periods(start, today, report_day)]


# --- the state of a recommendation --------------------------------------------------------


def overall_status(assignments: Iterable[tuple[str, AssignmentStatus | str]]) -> AssignmentStatus:
    """One status for a recommendation from its (role, status) assignments.

    Obligated bodies (lead, co) decide; partners only when no body is obligated.
    Cancelled assignments do not count unless every one is cancelled. Otherwise: all
    agree -> that status; any (partly) implemented -> partially_implemented; any work
    under way -> in_progress; any reported not implemented -> not_implemented.
    """
    items = [(ExecutorRole(role), AssignmentStatus(status)) for role, status in assignments]
    if not items:
        return AssignmentStatus.NOT_STARTED
    obligated = [s for r, s in items if r is not ExecutorRole.PARTNER]
    statuses = obligated or [s for _, s in items]
    active = [s for s in statuses if s is not AssignmentStatus.CANCELLED]
    if not active:
        return AssignmentStatus.CANCELLED
    distinct = set(active)
    if len(distinct) == 1:
        return active[0]
    if distinct & {AssignmentStatus.IMPLEMENTED, AssignmentStatus.PARTIALLY_IMPLEMENTED}:
        return AssignmentStatus.PARTIALLY_IMPLEMENTED
    if AssignmentStatus.IN_PROGRESS in distinct:
        return AssignmentStatus.IN_PROGRESS
    return AssignmentStatus.NOT_IMPLEMENTED
