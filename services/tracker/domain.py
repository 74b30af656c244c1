"""The tracker's pure rules: which assignments a recommendation makes, status changes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from shared.events import AssignmentStatus, DueDate, DueKind, RecommendationEvent
from shared.executors import ExecutorRole, agency_key

ROLE_RANK = {ExecutorRole.LEAD: 0, ExecutorRole.CO: 1, ExecutorRole.PARTNER: 2}

# Which status an assignment may move to from each status. Closed ones may be reopened
# only to in_progress (a coordinator's correction), never silently.
ALLOWED_TRANSITIONS: dict[AssignmentStatus, frozenset[AssignmentStatus]] = {
    AssignmentStatus.NOT_STARTED: frozenset(AssignmentStatus) - {AssignmentStatus.NOT_STARTED},
    AssignmentStatus.IN_PROGRESS: frozenset(AssignmentStatus) - {AssignmentStatus.NOT_STARTED},
    AssignmentStatus.PARTIALLY_IMPLEMENTED: frozenset(AssignmentStatus)
    - {AssignmentStatus.NOT_STARTED},
    AssignmentStatus.NOT_IMPLEMENTED: frozenset(AssignmentStatus) - {AssignmentStatus.NOT_STARTED},
    AssignmentStatus.IMPLEMENTED: frozenset({AssignmentStatus.IMPLEMENTED,
                                             AssignmentStatus.IN_PROGRESS}),
    AssignmentStatus.CANCELLED: frozenset({AssignmentStatus.CANCELLED,
                                           AssignmentStatus.IN_PROGRESS}),
}


def transition_allowed(current: AssignmentStatus, new: AssignmentStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


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


def own_due(due_dates: list[DueDate]) -> date | None:
    """The last due date of the recommendation's own deadline (recurring: the final year)."""
    own = [d.due for d in due_dates if d.kind is DueKind.DEADLINE]
    return max(own) if own else None


def active_from(event: RecommendationEvent, fallback: date) -> date:
    """Quarterly progress reports are owed from the deadline's start, or from creation."""
    return event.deadline.start or fallback


def quarter_start(day: date) -> date:
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
