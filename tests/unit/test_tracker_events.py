"""The tracker encodes assignment events itself (thousands per batch): they must be exactly
the `AssignmentEvent` and `AssignmentsChanged` schemas."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter

from services.tracker.domain import restated_event_type
from services.tracker.repository import (
    EncodedEvent,
    assignment_change,
    assignment_event,
    assignments_changed,
)
from shared.deadlines import Deadline
from shared.events import (
    ASSIGNMENT_TOPIC_EVENT,
    AssignmentChange,
    AssignmentEvent,
    AssignmentEventType,
    AssignmentsChanged,
    AssignmentStatus,
    DueDate,
    DueKind,
    deadline_json,
    due_dates_json,
    executors_json,
)
from shared.executors import Executor, ExecutorRole
from shared.ids import assignment_event_id

ROW: dict[str, Any] = {
    "id": uuid.uuid4(), "recommendation_id": uuid.uuid4(), "agency_id": uuid.uuid4(),
    "agency_name": "Ministry of Justice", "role": "lead", "status": "in_progress",
    "active_from": date(2010, 1, 1), "version": 3, "due": date(2010, 6, 30)}
DEADLINE = Deadline(text="2nd quarter 2010", start=date(2010, 4, 1), due=date(2010, 6, 30))
DUES = [DueDate(kind=DueKind.DEADLINE, due=date(2010, 6, 30), start=date(2010, 4, 1)),
        DueDate(kind=DueKind.FOLLOW_UP, due=date(2011, 1, 15))]


@pytest.mark.parametrize("deadline", [
    DEADLINE,
    Deadline(text="annually, \u00e0 partir de 2027", start=date(2027, 1, 1), due=None,
             recurrence="yearly"),
    Deadline(text="", start=None, due=None, needs_deadline=True),
])
def test_the_json_forms_are_what_the_models_dump(deadline: Deadline) -> None:
    """The tracker stores these and embeds them in its events: the models' own JSON."""
    executors = [Executor(name=f"Ministry \u00ab{role}\u00bb", role=role) for role in ExecutorRole]
    dues = [*DUES, *(DueDate(kind=kind, due=date(2030, 1, 1)) for kind in DueKind)]
    assert orjson.dumps(deadline_json(deadline)) == deadline.model_dump_json().encode()
    assert orjson.dumps(due_dates_json(dues)) == TypeAdapter(list[DueDate]).dump_json(dues)
    assert orjson.dumps(executors_json(executors)) == TypeAdapter(list[Executor]).dump_json(
        executors)


def encode(row: dict[str, Any] = ROW, **overrides: Any) -> EncodedEvent:
    return assignment_event(row, **{
        "event_type": AssignmentEventType.STATUS_CHANGED, "source": "plan",
        "reference": "NHRAP / 3", "text": "<b>Adopt</b> the law \u00ab\u00bb",
        "deadline": orjson.Fragment(DEADLINE.model_dump_json()),
        "due_dates": orjson.Fragment(orjson.dumps(due_dates_json(DUES))),
        "reported": [date(2010, 4, 1), date(2010, 1, 1), date(2010, 4, 1)],
        "previous_status": AssignmentStatus.NOT_STARTED, **overrides})


def test_the_encoded_event_has_every_field_of_the_schema_and_nothing_else() -> None:
    _, payload = encode()
    assert set(json.loads(payload)) == set(AssignmentEvent.model_fields)


def test_the_encoded_event_validates_with_the_values_given() -> None:
    event_id, payload = encode(report_period=date(2010, 4, 1))
    event = AssignmentEvent.model_validate_json(payload)
    assert event.event_id == event_id
    assert (event.type, event.assignment_id, event.agency_id, event.status, event.version) == (
        AssignmentEventType.STATUS_CHANGED, ROW["id"], ROW["agency_id"],
        AssignmentStatus.IN_PROGRESS, 3)
    assert event.deadline == DEADLINE and event.due_dates == DUES
    assert event.reported_periods == [date(2010, 1, 1), date(2010, 4, 1)], "sorted, once each"
    assert event.previous_status is AssignmentStatus.NOT_STARTED
    assert event.report_period == date(2010, 4, 1) and event.due == date(2010, 6, 30)
    assert event.text == "<b>Adopt</b> the law \u00ab\u00bb", "text verbatim"
    assert event.occurred_at.tzinfo is not None


def test_deadline_and_due_dates_as_plain_values_encode_the_same() -> None:
    """The HTTP report path passes the stored JSON columns as Python values."""
    _, from_fragments = encode()
    _, from_values = encode(deadline=DEADLINE.model_dump(mode="json"),
                            due_dates=[d.model_dump(mode="json") for d in DUES])
    a = AssignmentEvent.model_validate_json(from_fragments)
    b = AssignmentEvent.model_validate_json(from_values)
    assert a.model_dump(exclude={"event_id", "occurred_at"}) == \
        b.model_dump(exclude={"event_id", "occurred_at"})


def test_ids_read_from_the_database_encode_as_uuids() -> None:
    """asyncpg returns its own UUID subclass."""
    from asyncpg.pgproto.pgproto import UUID as PgUUID  # noqa: N811

    row = {**ROW, "id": PgUUID(str(ROW["id"]))}
    _, payload = assignment_event(row, event_type=AssignmentEventType.CREATED, source="plan",
                                  reference="r", text="t", deadline=None, due_dates=[],
                                  reported=[])
    assert json.loads(payload)["assignment_id"] == str(ROW["id"])


def test_an_event_id_is_its_assignment_version_and_type() -> None:
    """Announced again (after a crash), an event keeps its id: consumers can drop the copy.
    Every change bumps the version; the events of one change differ in type (a report and
    the status change it makes), so no two different events share an id."""
    assert encode()[0] == encode(text="other")[0] == \
        assignment_event_id(ROW["id"], 3, AssignmentEventType.STATUS_CHANGED)
    other_type = encode(event_type=AssignmentEventType.REPORT_SUBMITTED)[0]
    other_version = encode({**ROW, "version": 4})
    other_assignment = encode({**ROW, "id": uuid.uuid4()})
    assert len({encode()[0], other_type, other_version.event_id,
                other_assignment.event_id}) == 4


@pytest.mark.parametrize(("version", "status", "expected"), [
    (1, "not_started", AssignmentEventType.CREATED),
    (1, "cancelled", AssignmentEventType.CLOSED),
    (4, "in_progress", AssignmentEventType.UPDATED),
    (4, "implemented", AssignmentEventType.UPDATED),
    (2, "cancelled", AssignmentEventType.CLOSED),
])
def test_a_restated_event_is_typed_from_the_stored_state(
        version: int, status: str, expected: AssignmentEventType) -> None:
    assert restated_event_type(version, status) is expected


def encode_change(rows: list[dict[str, Any]] = [ROW], **overrides: Any  # noqa: B006
                  ) -> EncodedEvent:
    return assignments_changed(ROW["recommendation_id"], **{
        "source": "plan", "reference": "NHRAP / 3", "text": "<b>Adopt</b> the law \u00ab\u00bb",
        "deadline": orjson.Fragment(DEADLINE.model_dump_json()),
        "due_dates": orjson.Fragment(orjson.dumps(due_dates_json(DUES))),
        "changes": [assignment_change(row, AssignmentEventType.UPDATED,
                                      [date(2010, 4, 1), date(2010, 1, 1), date(2010, 4, 1)],
                                      AssignmentStatus.CANCELLED) for row in rows],
        **overrides})


def test_an_encoded_change_has_every_field_of_the_schema_and_nothing_else() -> None:
    payload = json.loads(encode_change().payload)
    assert set(payload) == set(AssignmentsChanged.model_fields)
    assert [set(c) for c in payload["assignments"]] == [set(AssignmentChange.model_fields)]


def test_an_encoded_change_validates_and_expands_to_the_events_of_its_assignments() -> None:
    other = {**ROW, "id": uuid.uuid4(), "agency_id": uuid.uuid4(), "status": "not_started",
             "version": 1}
    event_id, payload = encode_change([ROW, other])
    event = ASSIGNMENT_TOPIC_EVENT.validate_json(payload)
    assert isinstance(event, AssignmentsChanged) and event.event_id == event_id
    assert (event.recommendation_id, event.deadline, event.due_dates, event.text) == (
        ROW["recommendation_id"], DEADLINE, DUES, "<b>Adopt</b> the law \u00ab\u00bb")
    # Each assignment as its own event would have it: same id, same fields.
    for row, single in zip([ROW, other], event.assignment_events(), strict=True):
        own = AssignmentEvent.model_validate_json(assignment_event(
            row, event_type=AssignmentEventType.UPDATED, source="plan", reference="NHRAP / 3",
            text="<b>Adopt</b> the law \u00ab\u00bb", deadline=DEADLINE.model_dump(mode="json"),
            due_dates=[d.model_dump(mode="json") for d in DUES],
            reported=[date(2010, 1, 1), date(2010, 4, 1)],
            previous_status=AssignmentStatus.CANCELLED).payload)
        assert single.model_dump(exclude={"occurred_at"}) == \
            own.model_dump(exclude={"occurred_at"})
        assert single.event_id == assignment_event_id(row["id"], row["version"],
                                                      AssignmentEventType.UPDATED)


def test_a_change_announced_again_keeps_its_id() -> None:
    """Whatever the order of its assignments (a restatement reads them from the database)."""
    other = {**ROW, "id": uuid.uuid4()}
    assert encode_change([ROW, other]).event_id == encode_change([other, ROW]).event_id
    assert len({encode_change([ROW, other]).event_id, encode_change([ROW]).event_id,
                encode_change([other]).event_id,
                encode_change([{**ROW, "version": 4}]).event_id}) == 4


def test_the_topic_tells_the_two_shapes_apart_by_type() -> None:
    assert isinstance(ASSIGNMENT_TOPIC_EVENT.validate_json(encode().payload), AssignmentEvent)
    with pytest.raises(ValueError, match="does not match any of the expected tags"):
        ASSIGNMENT_TOPIC_EVENT.validate_json(
            encode().payload.replace("assignment.status_changed", "assignment.renamed"))
