"""The tracker's pure rules: transitions, claims, periods, overdue and overall status."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from services.tracker.domain import (
    ExecutorClaim,
    claims_by_agency,
    executor_claims,
    is_overdue,
    may_set_status,
    overall_status,
    own_due,
    period_in_future,
    quarter_start,
    report_events,
    report_period,
    report_periods,
    transition_allowed,
)
from shared.events import AssignmentEventType as E
from shared.events import AssignmentStatus as S
from shared.events import DueDate, DueKind
from shared.executors import ExecutorRole as R
from shared.recommendations import RECOMMENDATION_ADAPTER, to_event


@pytest.mark.parametrize(("current", "new", "allowed"), [
    (S.NOT_STARTED, S.IN_PROGRESS, True),
    (S.NOT_STARTED, S.NOT_STARTED, True),  # a quarterly report saying nothing started yet
    (S.NOT_STARTED, S.IMPLEMENTED, True),
    (S.IN_PROGRESS, S.NOT_STARTED, False),
    (S.IN_PROGRESS, S.IN_PROGRESS, True),
    (S.PARTIALLY_IMPLEMENTED, S.IMPLEMENTED, True),
    (S.NOT_IMPLEMENTED, S.IN_PROGRESS, True),
    (S.IMPLEMENTED, S.IN_PROGRESS, True),  # reopened
    (S.IMPLEMENTED, S.NOT_STARTED, False),
    (S.IMPLEMENTED, S.PARTIALLY_IMPLEMENTED, False),
    (S.CANCELLED, S.IN_PROGRESS, True),
    (S.CANCELLED, S.IMPLEMENTED, False),
])
def test_transitions(current: S, new: S, allowed: bool) -> None:
    assert transition_allowed(current, new) is allowed


def test_only_coordinators_cancel() -> None:
    assert not may_set_status(S.CANCELLED, coordinator=False)
    assert may_set_status(S.CANCELLED, coordinator=True)
    assert all(may_set_status(s, coordinator=False) for s in S if s is not S.CANCELLED)


@pytest.mark.parametrize(("old", "new", "events"), [
    (S.NOT_STARTED, S.NOT_STARTED, [E.REPORT_SUBMITTED]),
    (S.NOT_STARTED, S.IN_PROGRESS, [E.REPORT_SUBMITTED, E.STATUS_CHANGED]),
    (S.IN_PROGRESS, S.IMPLEMENTED, [E.REPORT_SUBMITTED, E.CLOSED]),
    (S.IN_PROGRESS, S.CANCELLED, [E.REPORT_SUBMITTED, E.CLOSED]),
    (S.IMPLEMENTED, S.IN_PROGRESS, [E.REPORT_SUBMITTED, E.STATUS_CHANGED]),
])
def test_report_events(old: S, new: S, events: list[E]) -> None:
    assert report_events(old, new) == events


def test_executor_claims_keep_the_strongest_role_per_name() -> None:
    rec = RECOMMENDATION_ADAPTER.validate_python({
        "source": "plan", "plan": "p", "chapter": "c", "number": "1", "text": "t",
        "executors": [{"name": "Ministry of Justice", "role": "partner"},
                      {"name": "The Ministry of Justice", "role": "co"},
                      {"name": "Supreme Court", "role": "lead"},
                      {"name": "  ", "role": "co"}]})
    event = to_event(rec, submitted_by="test")
    claims = {c.key: c.role for c in executor_claims(event)}
    assert claims == {"ministry of justice": R.CO, "supreme court": R.LEAD}


def test_claims_by_agency_merges_aliases_of_one_agency() -> None:
    moj, court = uuid.uuid4(), uuid.uuid4()
    claims = [ExecutorClaim("moj", "MoJ", R.PARTNER),
              ExecutorClaim("ministry of justice", "Ministry of Justice", R.CO),
              ExecutorClaim("supreme court", "Supreme Court", R.LEAD)]
    merged = claims_by_agency(claims, {"moj": moj, "ministry of justice": moj,
                                       "supreme court": court})
    assert {a: c.role for a, c in merged.items()} == {moj: R.CO, court: R.LEAD}


def test_own_due_is_the_last_own_deadline() -> None:
    dates = [DueDate(kind=DueKind.DEADLINE, due=date(2010, 12, 31)),
             DueDate(kind=DueKind.DEADLINE, due=date(2011, 12, 31)),
             DueDate(kind=DueKind.MID_TERM, due=date(2013, 1, 1))]
    assert own_due(dates) == date(2011, 12, 31)
    assert own_due([DueDate(kind=DueKind.MID_TERM, due=date(2013, 1, 1))]) is None


def test_quarters_and_report_periods() -> None:
    assert quarter_start(date(2010, 5, 15)) == date(2010, 4, 1)
    assert report_period(None, date(2010, 5, 15)) == date(2010, 4, 1)
    assert report_period(date(2009, 12, 31), date(2010, 5, 15)) == date(2009, 10, 1)
    assert period_in_future(date(2010, 7, 1), date(2010, 5, 15))
    assert not period_in_future(date(2010, 4, 1), date(2010, 5, 15))

    periods = report_periods(date(2009, 11, 20), date(2010, 5, 15), [date(2010, 2, 3)])
    assert [(p.start, p.end, p.due, p.reported) for p in periods] == [
        (date(2009, 10, 1), date(2009, 12, 31), date(2010, 1, 10), False),
        (date(2010, 1, 1), date(2010, 3, 31), date(2010, 4, 10), True),
        (date(2010, 4, 1), date(2010, 6, 30), date(2010, 7, 10), False),
    ]
    assert report_periods(None, date(2010, 5, 15), []) == []
    assert report_periods(date(2011, 1, 1), date(2010, 5, 15), []) == []


def test_overdue_means_past_the_own_deadline_and_open() -> None:
    today = date(2010, 1, 5)
    assert is_overdue(date(2009, 12, 31), S.IN_PROGRESS, today)
    assert is_overdue(date(2009, 12, 31), "not_implemented", today)
    assert not is_overdue(date(2009, 12, 31), S.IMPLEMENTED, today)
    assert not is_overdue(date(2009, 12, 31), S.CANCELLED, today)
    assert not is_overdue(date(2010, 1, 5), S.NOT_STARTED, today)
    assert not is_overdue(None, S.NOT_STARTED, today)


@pytest.mark.parametrize(("assignments", "expected"), [
    ([], S.NOT_STARTED),
    ([("lead", S.IMPLEMENTED), ("co", S.IMPLEMENTED)], S.IMPLEMENTED),
    ([("lead", S.IMPLEMENTED), ("co", S.IN_PROGRESS)], S.PARTIALLY_IMPLEMENTED),
    ([("lead", S.IN_PROGRESS), ("co", S.NOT_STARTED)], S.IN_PROGRESS),
    ([("lead", S.NOT_IMPLEMENTED), ("co", S.NOT_STARTED)], S.NOT_IMPLEMENTED),
    # Partners do not decide while a body is obligated...
    ([("lead", S.NOT_STARTED), ("partner", S.IMPLEMENTED)], S.NOT_STARTED),
    # ...but do when only partners are named.
    ([("partner", S.IN_PROGRESS)], S.IN_PROGRESS),
    # Cancelled assignments do not count, unless all are cancelled.
    ([("lead", S.CANCELLED), ("co", S.IMPLEMENTED)], S.IMPLEMENTED),
    ([("lead", S.CANCELLED), ("co", S.CANCELLED)], S.CANCELLED),
    ([("lead", "partially_implemented")], S.PARTIALLY_IMPLEMENTED),
])
def test_overall_status(assignments: list[tuple[str, S]], expected: S) -> None:
    assert overall_status(assignments) is expected
