"""Versioned event schemas on the Kafka topics, defined once for every service.

Every event is keyed by the id whose events must stay in order: recommendation id on
`recommendations` and on `assignments` (an assignment belongs to one recommendation, so all
of its events share a partition, in order), agency id on `agencies`. Consumers deduplicate
with `event_id`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.deadlines import Deadline
from shared.executors import Executor


class Source(StrEnum):
    UPR = "upr"
    TREATY_BODY = "treaty_body"
    PLAN = "plan"


class DueKind(StrEnum):
    DEADLINE = "deadline"          # the recommendation's own deadline (each year if recurring)
    FOLLOW_UP = "follow_up"        # treaty-body follow-up paragraph
    MID_TERM = "mid_term"          # UPR mid-term report, 2.5 years after the review
    NEXT_REVIEW = "next_review"    # UPR next review, 4.5 years after
    NEXT_REPORT = "next_report"    # treaty body's next periodic report
    REPORT = "report"              # quarterly progress report (computed by the notifier)


class AssignmentStatus(StrEnum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    PARTIALLY_IMPLEMENTED = "partially_implemented"
    IMPLEMENTED = "implemented"
    NOT_IMPLEMENTED = "not_implemented"
    CANCELLED = "cancelled"


CLOSED_STATUSES = frozenset({AssignmentStatus.IMPLEMENTED, AssignmentStatus.CANCELLED})


class DueDate(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: DueKind
    due: date
    start: date | None = None


# The JSON forms of the models events share, as ``model_dump(mode="json")`` gives them, for
# orjson to write (in about a third of the time pydantic takes to dump them; the services
# encode several per recommendation). orjson writes dates, enums and strings alike; the unit
# tests hold these to the models.


def deadline_json(deadline: Deadline) -> dict[str, Any]:
    return {"text": deadline.text, "start": deadline.start, "due": deadline.due,
            "recurrence": deadline.recurrence, "needs_deadline": deadline.needs_deadline}


def due_dates_json(due_dates: Iterable[DueDate]) -> list[dict[str, Any]]:
    return [{"kind": d.kind, "due": d.due, "start": d.start} for d in due_dates]


def executors_json(executors: Iterable[Executor]) -> list[dict[str, Any]]:
    return [{"name": e.name, "role": e.role} for e in executors]


E = TypeVar("E")


def latest_per_key(events: Iterable[E], key: Callable[[E], Any]) -> list[E]:
    """The last event of each key, in the order the last ones came.

    A key's events are ordered on its partition, so within a batch (or one request) only
    the last one matters.
    """
    latest: dict[Any, E] = {}
    for event in events:
        latest.pop(key(event), None)
        latest[key(event)] = event
    return list(latest.values())


def _now() -> datetime:
    return datetime.now(UTC)


class EventBase(BaseModel):
    schema_version: Literal[1] = 1
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=_now)


class RecommendationEvent(EventBase):
    """Published by intake on `recommendations` once a recommendation is validated."""

    type: Literal["recommendation.submitted"] = "recommendation.submitted"
    recommendation_id: uuid.UUID
    content_hash: str = Field(description="Hash of the normalized content: same hash, no change")
    source: Source
    reference: str = Field(description="Human-readable natural key, e.g. 'KAZ / cycle 2 / 97.12'")
    natural_key: list[str]
    text: str
    deadline: Deadline
    due_dates: list[DueDate]
    executors: list[Executor]
    payload: dict[str, Any] = Field(description="Every field of the source, as validated")
    submitted_by: str


class AssignmentEventType(StrEnum):
    CREATED = "assignment.created"
    UPDATED = "assignment.updated"
    STATUS_CHANGED = "assignment.status_changed"
    REPORT_SUBMITTED = "assignment.report_submitted"
    CLOSED = "assignment.closed"


# AssignmentEvent's types, spelled out so that the topic's two event shapes form a union
# told apart by `type` (ASSIGNMENT_TOPIC_EVENT).
SingleAssignmentEventType = Literal[
    AssignmentEventType.CREATED, AssignmentEventType.UPDATED,
    AssignmentEventType.STATUS_CHANGED, AssignmentEventType.REPORT_SUBMITTED,
    AssignmentEventType.CLOSED]


class AssignmentEvent(EventBase):
    """Published by the tracker (through its outbox) on `assignments` when one assignment
    changes: a progress report, its status."""

    type: SingleAssignmentEventType
    assignment_id: uuid.UUID
    recommendation_id: uuid.UUID
    agency_id: uuid.UUID
    agency_name: str
    role: str
    status: AssignmentStatus
    source: Source
    reference: str
    text: str
    deadline: Deadline
    due_dates: list[DueDate]
    active_from: date | None = Field(
        default=None, description="First day the assignment owes quarterly progress reports"
    )
    reported_periods: list[date] = Field(
        default_factory=list, description="Start dates of the quarters whose report is in"
    )
    version: int = 1
    # Added fields keep defaults, so consumers of older events keep working.
    due: date | None = Field(default=None, description="Last due date of the own deadline")
    previous_status: AssignmentStatus | None = Field(
        default=None, description="Status before this event (status_changed, closed)"
    )
    report_period: date | None = Field(
        default=None, description="Quarter (its first day) of the report this event announces"
    )


class AgencyEvent(EventBase):
    """Published by the tracker on `agencies` when an agency or its contacts change."""

    type: Literal["agency.upserted"] = "agency.upserted"
    agency_id: uuid.UUID
    name: str
    emails: list[str] = Field(default_factory=list)
    language: str = "en"
    escalation_email: str | None = None
    needs_review: bool = False


ASSIGNMENTS_CHANGED: Literal["assignments.changed"] = "assignments.changed"


class AssignmentChange(BaseModel):
    """One assignment as a recommendation change left it (an item of `AssignmentsChanged`):
    the fields of its own `AssignmentEvent` that are not the recommendation's."""

    event_id: uuid.UUID = Field(description="The id its own AssignmentEvent would have")
    type: SingleAssignmentEventType
    assignment_id: uuid.UUID
    agency_id: uuid.UUID
    agency_name: str
    role: str
    status: AssignmentStatus
    active_from: date | None = None
    reported_periods: list[date] = Field(default_factory=list)
    version: int = 1
    due: date | None = None
    previous_status: AssignmentStatus | None = None


class AssignmentsChanged(EventBase):
    """Published by the tracker on `assignments` when it stores a recommendation change (or
    a change delivered again): every assignment the change created, updated, reopened or
    cancelled, in one event. The recommendation's text, deadline and due dates travel once
    instead of once per assignment (most recommendations name several agencies)."""

    type: Literal["assignments.changed"] = ASSIGNMENTS_CHANGED
    recommendation_id: uuid.UUID
    source: Source
    reference: str
    text: str
    deadline: Deadline
    due_dates: list[DueDate]
    assignments: list[AssignmentChange]

    @classmethod
    def of(cls, events: list[AssignmentEvent]) -> AssignmentsChanged:
        """These events of one recommendation's assignments as one change (the inverse of
        `assignment_events`); the recommendation's fields are the first event's."""
        first = events[0]
        return cls(recommendation_id=first.recommendation_id, source=first.source,
                   reference=first.reference, text=first.text, deadline=first.deadline,
                   due_dates=first.due_dates,
                   assignments=[AssignmentChange.model_validate(e.model_dump()) for e in events])

    def assignment_events(self) -> list[AssignmentEvent]:
        """The change as one `AssignmentEvent` per assignment, with the ids they carry."""
        shared = {"occurred_at": self.occurred_at, "recommendation_id": self.recommendation_id,
                  "source": self.source, "reference": self.reference, "text": self.text,
                  "deadline": self.deadline, "due_dates": self.due_dates}
        return [AssignmentEvent.model_validate({**change.model_dump(), **shared})
                for change in self.assignments]


# What the `assignments` topic carries: either shape, told apart by `type`.
AssignmentTopicEvent = Annotated[AssignmentEvent | AssignmentsChanged,
                                 Field(discriminator="type")]
ASSIGNMENT_TOPIC_EVENT: TypeAdapter[AssignmentEvent | AssignmentsChanged] = TypeAdapter(
    AssignmentTopicEvent)
