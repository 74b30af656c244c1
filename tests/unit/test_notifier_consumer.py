"""Which due dates the notifier keeps for an assignment event (pure part of the consumer)."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any

from services.notifier.consumer import (
    ASSIGNMENT_COLUMNS,
    DUE_COLUMNS,
    DueRows,
    Recommendations,
    assignment_columns,
    assignment_rows,
    latest_pairs,
    latest_tracked,
    own_dates,
    tracked_assignments,
)
from services.notifier.policy import ReminderPolicy
from shared.deadlines import Deadline
from shared.events import (
    AssignmentChange,
    AssignmentEvent,
    AssignmentEventType,
    AssignmentsChanged,
    AssignmentStatus,
    DueDate,
    DueKind,
    Source,
)

POLICY = ReminderPolicy()
# Wide enough that every owed report has its row: the rows the consumer wrote before the
# rolling window.
EVERY_REPORT = (date(1900, 1, 1), date(2999, 1, 1))


def rows_and_window(event: AssignmentEvent, window: tuple[date, date],
                    due: DueRows | None = None
                    ) -> tuple[list[tuple[Any, ...]], date | None, date | None]:
    """An assignment's due rows with report rows due within ``window``, and its
    reports_from and reports_until, as the consumer stores them (``due``: under POLICY
    unless given)."""
    plan = (due or DueRows(POLICY)).plan(event, own_dates(event.due_dates), window)
    _reports, since, until = plan[2]
    return DueRows.rows(event, plan), since, until


def due_rows(event: AssignmentEvent, policy: ReminderPolicy) -> list[tuple[Any, ...]]:
    """Every owed report's row: the window covers them all, so it has no bounds."""
    rows, since, until = rows_and_window(event, EVERY_REPORT, DueRows(policy))
    assert since is None and until is None
    return rows


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


def as_dicts(rows: list[tuple[object, ...]]) -> list[dict[str, object]]:
    return [dict(zip(DUE_COLUMNS, row, strict=True)) for row in rows]


def kinds_and_dates(rows: list[tuple[object, ...]]) -> list[tuple[Any, Any, Any]]:
    return sorted((r["kind"], r["due_date"], r["period_start"]) for r in as_dicts(rows))


def test_own_deadline_and_the_reports_owed() -> None:
    assert kinds_and_dates(due_rows(event(), POLICY)) == [
        ("deadline", date(2010, 6, 30), date(2010, 4, 1)),
        ("report", date(2010, 1, 10), date(2009, 10, 1)),
        ("report", date(2010, 4, 10), date(2010, 1, 1)),
        ("report", date(2010, 7, 10), date(2010, 4, 1)),
    ]


def test_reported_quarters_are_not_due_any_more() -> None:
    rows = as_dicts(due_rows(event(reported_periods=[date(2010, 1, 1)]), POLICY))
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
    rows = as_dicts(due_rows(event(due_dates=[], active_from=date(2010, 1, 1)),
                             ReminderPolicy(report_horizon_days=180)))
    # 180 days after 1 January 2010 is 30 June: two quarters
    assert [r["due_date"] for r in rows] == [date(2010, 4, 10), date(2010, 7, 10)]


def test_latest_event_per_key_wins_within_a_batch() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    first, other, second = event(assignment_id=a, version=1), event(assignment_id=b), \
        event(assignment_id=a, version=2)
    pairs = [(first, "record 1"), (other, "record 2"), (second, "record 3")]
    assert latest_pairs(pairs, lambda e: e.assignment_id) == [(other, "record 2"),
                                                               (second, "record 3")]


def test_due_rows_carry_the_assignments_state() -> None:
    e = event(role="co", status=AssignmentStatus.NOT_STARTED)
    for row in as_dicts(due_rows(e, POLICY)):
        assert (row["assignment_id"], row["agency_id"], row["status"], row["role"]) == (
            e.assignment_id, e.agency_id, "not_started", "co")
        assert type(row["kind"]) is str and type(row["status"]) is str


def test_a_due_date_named_twice_is_one_row() -> None:
    due = DueDate(kind=DueKind.DEADLINE, due=date(2010, 6, 30))
    rows = due_rows(event(due_dates=[due, due], active_from=None), POLICY)
    assert kinds_and_dates(rows) == [("deadline", date(2010, 6, 30), None)]


def test_reports_run_to_the_last_own_deadline() -> None:
    dues = [DueDate(kind=DueKind.DEADLINE, due=date(2010, 12, 31)),
            DueDate(kind=DueKind.DEADLINE, due=date(2010, 3, 31)),
            DueDate(kind=DueKind.NEXT_REVIEW, due=date(2014, 2, 12))]
    rows = as_dicts(due_rows(event(due_dates=dues, active_from=date(2010, 7, 1)), POLICY))
    assert [r["due_date"] for r in rows if r["kind"] == "report"] == [
        date(2010, 10, 10), date(2011, 1, 10)]


def test_remembered_report_periods_are_the_policys() -> None:
    rows = DueRows(POLICY)
    first = event(reported_periods=[date(2010, 1, 1)])
    same_dates = event(reported_periods=[date(2010, 1, 1)])
    assert kinds_and_dates(rows_and_window(first, EVERY_REPORT, rows)[0]) == kinds_and_dates(
        due_rows(first, POLICY))
    again = as_dicts(rows_and_window(same_dates, EVERY_REPORT, rows)[0])
    assert {r["assignment_id"] for r in again} == {same_dates.assignment_id}
    assert kinds_and_dates(rows_and_window(same_dates, EVERY_REPORT, rows)[0]) == kinds_and_dates(
        due_rows(first, POLICY))
    other_policy = DueRows(ReminderPolicy(report_due_day=20))
    assert [r["due_date"] for r in as_dicts(rows_and_window(first, EVERY_REPORT, other_policy)[0])
            if r["kind"] == "report"] == [date(2010, 1, 20), date(2010, 7, 20)]
    # Remembered per window too: another window, other rows.
    short, since, until = rows_and_window(same_dates, (date(2010, 1, 1), date(2010, 1, 10)), rows)
    assert [r["due_date"] for r in as_dicts(short) if r["kind"] == "report"] == [
        date(2010, 1, 10)]
    assert (since, until) == (None, date(2010, 7, 9))


# --- report rows for a window of due dates --------------------------------------------

LONG = event(active_from=date(2009, 11, 5), reported_periods=[date(2010, 4, 1)],
             due_dates=[DueDate(kind=DueKind.DEADLINE, due=date(2011, 12, 31)),
                        DueDate(kind=DueKind.NEXT_REVIEW, due=date(2014, 2, 12))])


def reports(rows: list[tuple[object, ...]]) -> list[object]:
    return [r["due_date"] for r in as_dicts(rows) if r["kind"] == "report"]


def test_reports_are_written_within_the_window_and_the_window_is_recorded() -> None:
    every = reports(due_rows(LONG, POLICY))
    assert every[0] == date(2010, 1, 10) and every[-1] == date(2012, 1, 10)
    assert date(2010, 7, 10) not in every  # the quarter reported
    rows, since, until = rows_and_window(LONG, (date(2009, 1, 1), date(2010, 8, 1)))
    assert reports(rows) == [date(2010, 1, 10), date(2010, 4, 10)]
    # The next owed report is due 10 October: written up to the day before.
    assert (since, until) == (None, date(2010, 10, 9))
    # The own due dates are all there, whatever the window.
    assert sorted(d for k, d, _ in kinds_and_dates(rows) if k != "report") == [
        date(2011, 12, 31), date(2014, 2, 12)]
    # A bound on a due date includes it; past the last report, nothing is left to add.
    assert rows_and_window(LONG, (date(2009, 1, 1), date(2010, 10, 10)))[2] == date(2011, 1, 9)
    rows, since, until = rows_and_window(LONG, (date(2009, 1, 1), date(2012, 1, 10)))
    assert (reports(rows), since, until) == (every, None, None)


def test_reports_due_before_the_window_are_left_out() -> None:
    # A pass on 1 May 2011 (overdue horizon a year) looks back to 1 May 2010.
    rows, since, until = rows_and_window(LONG, (date(2010, 5, 1), date(2011, 8, 1)))
    assert reports(rows) == [date(2010, 10, 10), date(2011, 1, 10), date(2011, 4, 10),
                             date(2011, 7, 10)]
    # Written from the day after the last owed report due before the window.
    assert (since, until) == (date(2010, 4, 11), date(2011, 10, 9))
    # A window after every report: the own due dates only.
    rows, since, until = rows_and_window(LONG, (date(2013, 1, 1), date(2013, 6, 1)))
    assert (reports(rows), since, until) == ([], date(2012, 1, 11), None)
    assert len(rows) == 2


def test_a_window_before_the_first_report_writes_only_the_own_due_dates() -> None:
    rows, since, until = rows_and_window(LONG, (date(2004, 1, 1), date(2009, 6, 1)))
    assert reports(rows) == [] and (since, until) == (None, date(2010, 1, 9))
    assert len(rows) == 2


def test_closed_or_reportless_assignments_have_nothing_left_to_add() -> None:
    window = (date(2004, 1, 1), date(2009, 6, 1))
    assert rows_and_window(event(status=AssignmentStatus.IMPLEMENTED), window) \
        == ([], None, None)
    rows, since, until = rows_and_window(event(active_from=None), window)
    assert since is None and until is None and reports(rows) == []


def test_assignment_columns_follow_the_upsert() -> None:
    e = event(reported_periods=[date(2010, 1, 1), date(2010, 7, 1)])
    plain = event(active_from=None)
    rows = DueRows(POLICY)
    # e owes the reports due 10 January (before the window) and 10 July (after it).
    window = (date(2010, 1, 11), date(2010, 7, 1))
    plans = [rows.plan(e, own_dates(e.due_dates), window),
             rows.plan(plain, own_dates(plain.due_dates), window)]
    values = assignment_rows([(e, e), (plain, plain)], plans, Recommendations())
    assert [len(row) for row in values] == [len(ASSIGNMENT_COLUMNS)] * 2
    assert values[0][list(ASSIGNMENT_COLUMNS).index("reported_periods")] == \
        [date(2010, 1, 1), date(2010, 7, 1)], "COPY takes the list as it is"
    columns = dict(zip(ASSIGNMENT_COLUMNS, assignment_columns(values), strict=True))
    assert columns["id"] == (e.assignment_id, plain.assignment_id)
    assert columns["status"] == ("in_progress", "in_progress")
    assert columns["source"] == ("plan", "plan")
    # unnest cannot take arrays of arrays: each list travels as an array literal
    assert columns["reported_periods"] == ("{2010-01-01,2010-07-01}", "{}")
    assert json.loads(columns["deadline"][0]) == e.deadline.model_dump(mode="json")
    assert columns["active_from"] == (date(2009, 11, 5), None)
    assert columns["version"] == (1, 1)
    assert columns["reports_from"] == (date(2010, 1, 11), None)
    assert columns["reports_until"] == (date(2010, 7, 9), None)


def changed(*changes: AssignmentChange) -> AssignmentsChanged:
    """One recommendation's change of these assignments, with event()'s recommendation."""
    shared = event()
    return AssignmentsChanged(
        recommendation_id=shared.recommendation_id, source=shared.source,
        reference=shared.reference, text=shared.text, deadline=shared.deadline,
        due_dates=[*shared.due_dates, DueDate(kind=DueKind.MID_TERM, due=date(2011, 6, 30))],
        assignments=list(changes))


def change(**overrides: object) -> AssignmentChange:
    values: dict[str, object] = {
        "event_id": uuid.uuid4(), "type": AssignmentEventType.CREATED,
        "assignment_id": uuid.uuid4(), "agency_id": uuid.uuid4(), "agency_name": "Ministry",
        "role": "co", "status": AssignmentStatus.NOT_STARTED, "active_from": date(2009, 11, 5)}
    values.update(overrides)
    return AssignmentChange.model_validate(values)


def test_a_change_of_several_assignments_stores_as_their_own_events_would() -> None:
    batch = changed(change(), change(status=AssignmentStatus.IN_PROGRESS, role="lead",
                                     reported_periods=[date(2010, 1, 1)], version=3),
                    change(status=AssignmentStatus.CANCELLED))
    singles = batch.assignment_events()
    window = (date(2010, 1, 11), date(2010, 7, 1))

    def rows_of(tracked: list[Any]) -> tuple[list[Any], list[Any]]:
        due = DueRows(POLICY)
        recommendations = Recommendations()
        plans = [due.plan(a, recommendations(r)[0], window) for a, r in tracked]
        return (assignment_rows(tracked, plans, recommendations),
                [row for (a, _), plan in zip(tracked, plans, strict=True)
                 for row in DueRows.rows(a, plan)])

    from_batch = rows_of(tracked_assignments(batch))
    assert from_batch == rows_of([(e, e) for e in singles])
    assignments, due = from_batch
    assert [row[0] for row in assignments] == [c.assignment_id for c in batch.assignments]
    assert {row[1] for row in assignments} == {batch.recommendation_id}
    assert [row[5] for row in assignments] == ["not_started", "in_progress", "cancelled"]
    # Each open one has the deadline, the mid-term date and its reports; the cancelled none.
    assert {(row[0], row[1]) for row in due if row[1] != "report"} == {
        (c.assignment_id, kind) for c in batch.assignments[:2]
        for kind in ("deadline", "mid_term")}


def test_the_events_of_an_assignment_expand_to_their_changes() -> None:
    single = event()
    batch = changed(change(), change())
    assert tracked_assignments(single) == [(single, single)]
    assert tracked_assignments(batch) == [(c, batch) for c in batch.assignments]
    expanded = batch.assignment_events()
    assert [(e.event_id, e.type, e.assignment_id, e.recommendation_id, e.text) for e in
            expanded] == [(c.event_id, c.type, c.assignment_id, batch.recommendation_id,
                           batch.text) for c in batch.assignments]


def test_the_latest_state_of_each_assignment_wins_whatever_the_shape() -> None:
    first, second = change(version=1), change()
    older = event(assignment_id=first.assignment_id, version=1)
    later = changed(first.model_copy(update={"version": 2}), second)
    newest = event(assignment_id=second.assignment_id, version=2)
    latest = latest_tracked([older, later, newest])
    assert [(a.assignment_id, a.version, type(r).__name__) for a, r in latest] == [
        (first.assignment_id, 2, "AssignmentsChanged"),
        (second.assignment_id, 2, "AssignmentEvent")]
