"""Which due dates the notifier keeps for an assignment event (pure part of the consumer)."""

from __future__ import annotations

import uuid
from datetime import date

from services.notifier.consumer import due_rows, latest_by_key
from services.notifier.policy import ReminderPolicy
from shared.deadlines import Deadline
from shared.events import (
    AssignmentEvent,
    AssignmentEventType,
    AssignmentStatus,
    DueDate,
    DueKind,
    Source,
)

POLICY = ReminderPolicy()


def event(**overrides: object) -> AssignmentEvent:
    values: dict[str, object] = {
        "type": AssignmentEventType.CREATED, "assignment_id": uuid.uuid4(),
        "recommendation_id": uuid.uuid4(), "agency_id": uuid.uuid4(),
        "agency_name": "Ministry of Justice", "role": "lead",
        "status": AssignmentStatus.IN_PROGRESS, "source": Source.PLAN, "reference": "No. 3",
        "text": "Adopt a law", "deadline": Deadline(text="2nd quarter 2010",
                                                    start=date(2010, 4, 1), due=date(2010, 6, 30)),
        "due_dates": [DueDate(kind=DueKind.DEADLINE, due=date(2010, 6, 30),
                              start=date(2010, 4, 1))],
        "active_from": date(2009, 11, 5),
    }
    values.update(overrides)
    return AssignmentEvent.model_validate(values)


def kinds_and_dates(rows: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return sorted((r["kind"], r["due_date"], r["period_start"]) for r in rows)


def test_own_deadline_and_the_reports_owed() -> None:
    assert kinds_and_dates(due_rows(event(), POLICY)) == [
        ("deadline", date(2010, 6, 30), date(2010, 4, 1)),
        ("report", date(2010, 1, 10), date(2009, 10, 1)),
        ("report", date(2010, 4, 10), date(2010, 1, 1)),
        ("report", date(2010, 7, 10), date(2010, 4, 1)),
    ]


def test_reported_quarters_are_not_due_any_more() -> None:
    rows = due_rows(event(reported_periods=[date(2010, 1, 1)]), POLICY)
    assert [r["due_date"] for r in rows if r["kind"] == "report"] == [
        date(2010, 1, 10), date(2010, 7, 10)]


def test_recurring_and_derived_due_dates_are_kept() -> None:
    dues = [DueDate(kind=DueKind.DEADLINE, due=date(y, 12, 31)) for y in (2009, 2010, 2011)]
    dues.append(DueDate(kind=DueKind.MID_TERM, due=date(2012, 8, 12)))
    dues.append(DueDate(kind=DueKind.REPORT, due=date(2010, 1, 20)))  # computed here instead
    rows = due_rows(event(due_dates=dues, active_from=date(2011, 10, 1)), POLICY)
    assert kinds_and_dates(rows) == [
        ("deadline", date(2009, 12, 31), None), ("deadline", date(2010, 12, 31), None),
        ("deadline", date(2011, 12, 31), None), ("mid_term", date(2012, 8, 12), None),
        ("report", date(2012, 1, 10), date(2011, 10, 1)),
    ]


def test_closed_assignments_keep_no_due_dates() -> None:
    for status in (AssignmentStatus.IMPLEMENTED, AssignmentStatus.CANCELLED):
        assert due_rows(event(status=status), POLICY) == []


def test_without_own_deadline_reports_run_for_the_horizon() -> None:
    rows = due_rows(event(due_dates=[], active_from=date(2010, 1, 1)),
                    ReminderPolicy(report_horizon_days=180))
    # 180 days after 1 January 2010 is 30 June: two quarters
    assert [r["due_date"] for r in rows] == [date(2010, 4, 10), date(2010, 7, 10)]


def test_latest_event_per_key_wins_within_a_batch() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    first, other, second = event(assignment_id=a, version=1), event(assignment_id=b), \
        event(assignment_id=a, version=2)
    assert latest_by_key([first, other, second], "assignment_id") == [other, second]
