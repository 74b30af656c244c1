"""Report due rows for a rolling window of due dates, on the real PostgreSQL (and, once, the
broker): the consumer writes them for its clock's window (from the overdue horizon behind
to some months ahead), each pass first adds what it needs (extend_report_dates), and passes
see exactly the report due dates the consumer used to write for an assignment's whole life.

The data lies in 2481-2489 and 2495-2498 (the calendar of 2081-2098, 400 years on), where
no other module's data is; passes that claim (and mail) reminders run only as of 2495-2498
with the tests' short overdue horizon. Extensions and due sets cover the whole database:
other modules' assignments are only extended as the old code had written them, and each
test looks at its own assignments.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.main import build_app
from services.notifier.policy import (
    ReminderPolicy,
    first_due_seen,
    last_due_seen,
    report_dates_window,
)
from services.notifier.reminders import ReminderService
from shared.db import make_sessionmaker
from shared.events import AssignmentEvent, AssignmentStatus, DueDate, DueKind
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.notifier.support import (
    TEST_POLICY,
    Store,
    assignment_event,
    changed_event,
    metric_value,
    notifier_settings,
    owed_reports,
    publish,
    store_events,
    store_fixture,
)

# Every field of the default policy but partners reminded too (their rows count as well).
POLICY = ReminderPolicy(remind_partners=True)
EARLY = date(2481, 1, 15)  # the consumer's clock for the 2481-2489 data
LATE = date(2488, 1, 15)  # another consumer's: most of the data is behind its window
# The rows the consumer wrote before the rolling window: every owed report.
EVERY_REPORT = POLICY.model_copy(update={"report_dates_ahead_days": 365_000,
                                         "overdue_horizon_days": 365_000})
EXTENDED = "hrtrack_reminder_report_dates_extended_total"

store = store_fixture("horizon", EARLY, policy=POLICY)
AGENCY = uuid.uuid4()


def event(active_from: date | None, deadlines: Sequence[date] = (), **changes: Any
          ) -> AssignmentEvent:
    """assignment_event, of AGENCY like every assignment here."""
    return assignment_event(active_from, deadlines, agency_id=AGENCY, **changes)


def twin(e: AssignmentEvent) -> AssignmentEvent:
    """The same assignment under another id (stored the old way beside it)."""
    return e.model_copy(update={"assignment_id": uuid.uuid4(), "event_id": uuid.uuid4()})


def book() -> list[AssignmentEvent]:
    """Assignments of every shape that owes reports (and a few that owe none)."""
    yearly = [date(y, 12, 31) for y in range(2481, 2487)]
    return [
        # a six-year yearly action, two quarters reported
        event(date(2481, 2, 10), yearly, reported_periods=[date(2481, 4, 1), date(2482, 7, 1)]),
        # eight years to its deadline: 32 quarters
        event(date(2481, 1, 1), [date(2488, 12, 31)]),
        # a UPR recommendation: mid-term and next review, no deadline of its own
        event(date(2481, 5, 1), [], due_dates=[
            DueDate(kind=DueKind.MID_TERM, due=date(2483, 11, 12)),
            DueDate(kind=DueKind.NEXT_REVIEW, due=date(2486, 2, 12))]),
        event(date(2481, 1, 1), [date(2484, 6, 30)], role="partner"),
        event(date(2481, 3, 1), [date(2485, 3, 31)], status=AssignmentStatus.NOT_STARTED),
        event(date(2482, 3, 1), [date(2481, 12, 31)]),  # the deadline before active_from
        event(None, [date(2483, 6, 30)]),  # no active_from: no reports
        event(date(2481, 1, 1), [date(2486, 6, 30)], status=AssignmentStatus.IMPLEMENTED),
    ]


async def window_rows(engine: AsyncEngine, index: dict[uuid.UUID, int], first: date,
                      last: date) -> set[tuple[Any, ...]]:
    """Due rows of these assignments due from first to last, named by their index."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT assignment_id, kind, due_date, period_start, status, role "
            "FROM notifier.due_dates WHERE assignment_id = ANY(:ids) "
            "AND due_date BETWEEN :first AND :last"),
            {"ids": list(index), "first": first, "last": last})).all()
    return {(index[r[0]], *r[1:]) for r in rows}


async def report_rows(engine: AsyncEngine, assignment_id: uuid.UUID) -> list[tuple[date, date]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT period_start, due_date FROM notifier.due_dates "
            "WHERE assignment_id = :id AND kind = 'report' ORDER BY due_date"),
            {"id": assignment_id})).all()
    return [(r[0], r[1]) for r in rows]


async def window_of(engine: AsyncEngine, assignment_id: uuid.UUID
                    ) -> tuple[date | None, date | None]:
    """The assignment's reports_from and reports_until."""
    async with engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT reports_from, reports_until FROM notifier.assignments WHERE id = :id"),
            {"id": assignment_id})).one()
    return row[0], row[1]


async def test_passes_see_every_report_due_date_the_old_rows_gave(store: Store) -> None:
    """The same assignments three times: stored the old way (every owed report), and by
    consumers whose clocks say 2481 (the data ahead of their window) and 2488 (most of it
    behind); the passes' due sets and due rows agree as of dates over the years, forward,
    leaping years ahead and back."""
    old_way = book()
    early, late = [twin(e) for e in old_way], [twin(e) for e in old_way]
    await store_events(store.consumer_on(EARLY, EVERY_REPORT), old_way)
    await store_events(store.consumer_on(EARLY), early)
    await store_events(store.consumer_on(LATE), late)
    copies = [{e.assignment_id: n for n, e in enumerate(c)} for c in (old_way, early, late)]

    # The old way: every owed report, nothing left to add.
    for e in old_way:
        assert await report_rows(store.engine, e.assignment_id) == owed_reports(e, POLICY)
        assert await window_of(store.engine, e.assignment_id) == (None, None)
    # The consumers' windows: far fewer rows.
    for copy, today in ((early, EARLY), (late, LATE)):
        first, last = report_dates_window(today, POLICY)
        for e in copy:
            assert await report_rows(store.engine, e.assignment_id) == owed_reports(
                e, POLICY, first, last)
    assert await window_of(store.engine, early[1].assignment_id) == (None, date(2481, 7, 9))
    # 2488: the reports due from 2483-01-11 on (1830 days back), the ones before left out.
    assert report_dates_window(LATE, POLICY)[0] == date(2483, 1, 11)
    assert await window_of(store.engine, late[1].assignment_id) == (date(2483, 1, 11),
                                                                    date(2488, 7, 9))
    assert await window_of(store.engine, early[5].assignment_id) == (None, None)  # owes none
    assert await window_of(store.engine, early[7].assignment_id) == (None, None)  # closed

    service = store.reminders()
    report_reminders = 0
    # Before the data, the early clock's day, within its window, then years ahead, back
    # (7 days before a report due in 2484 after a leap to 2486), the last reports; on
    # upcoming, overdue and escalation days of report due dates.
    for as_of in [date(2480, 12, 1), EARLY, date(2481, 3, 11), date(2481, 7, 11),
                  date(2482, 9, 26), date(2486, 12, 11), date(2484, 4, 3),
                  date(2488, 10, 9), date(2489, 2, 9)]:
        await service.extend_report_dates(as_of)
        first, last = first_due_seen(as_of, POLICY), last_due_seen(as_of, POLICY)
        rows = [await window_rows(store.engine, index, first, last) for index in copies]
        assert rows[1] == rows[0] and rows[2] == rows[0], as_of
        due = await service.due_set(as_of)
        seen: list[set[tuple[Any, ...]]] = [set(), set(), set()]
        for r in due.reminders:
            for n, index in enumerate(copies):
                if r.assignment_id in index:
                    seen[n].add((index[r.assignment_id], r.recipient, r.due_kind, r.due_date,
                                 r.kind, r.offset_days))
        assert seen[1] == seen[0] and seen[2] == seen[0], as_of
        report_reminders += sum(1 for key in seen[0] if key[2] == "report")
    assert report_reminders > 20, "the dates chosen meet report reminders"


async def test_an_update_after_an_extension_replaces_the_rows(store: Store) -> None:
    consumer = store.consumer_on(date(2482, 1, 15))
    v1 = event(date(2482, 1, 10), [date(2484, 12, 31)])
    await store_events(consumer, [v1])
    assert await report_rows(store.engine, v1.assignment_id) == [
        (date(2482, 1, 1), date(2482, 4, 10))]
    assert await window_of(store.engine, v1.assignment_id) == (None, date(2482, 7, 9))

    service = store.reminders()
    assert await service.extend_report_dates(date(2483, 6, 1)) >= 1
    extended = owed_reports(v1, POLICY, until=report_dates_window(date(2483, 6, 1), POLICY)[1])
    assert extended[-1] == (date(2483, 4, 1), date(2483, 7, 10))
    assert await report_rows(store.engine, v1.assignment_id) == extended
    assert await window_of(store.engine, v1.assignment_id) == (None, date(2483, 10, 9))

    # A quarter reported: the event replaces every row, extended ones included, up to the
    # consumer's window (its clock is behind the pass's date).
    v2 = changed_event(v1, reported_periods=[date(2482, 1, 1)])
    await store_events(consumer, [v2])
    assert await report_rows(store.engine, v1.assignment_id) == []
    assert await window_of(store.engine, v1.assignment_id) == (None, date(2482, 7, 9))
    # An older version re-delivered changes nothing, its window included.
    await store_events(consumer, [v1])
    assert await window_of(store.engine, v1.assignment_id) == (None, date(2482, 7, 9))

    await service.extend_report_dates(date(2483, 6, 1))
    assert await report_rows(store.engine, v1.assignment_id) == owed_reports(
        v2, POLICY, until=report_dates_window(date(2483, 6, 1), POLICY)[1])
    # and the pass sees the reminder of the quarter after the one reported, not of that one
    due = await service.due_set(date(2482, 6, 10))  # 30 days before 10 July 2482
    mine = {(r.due_kind, r.due_date) for r in due.reminders
            if r.assignment_id == v1.assignment_id}
    assert mine == {("report", date(2482, 7, 10))}


async def test_a_closed_assignment_is_never_extended(store: Store) -> None:
    consumer = store.consumer_on(date(2482, 1, 15))
    closed = event(date(2482, 1, 10), [date(2484, 12, 31)], status=AssignmentStatus.CANCELLED)
    open_ = event(date(2482, 1, 10), [date(2484, 12, 31)])
    await store_events(consumer, [closed, open_])
    assert await report_rows(store.engine, closed.assignment_id) == []
    assert await window_of(store.engine, closed.assignment_id) == (None, None)
    # Closed by another writer (the trigger of migration 0003 carries the status over).
    async with store.engine.begin() as conn:
        await conn.execute(text(
            "UPDATE notifier.assignments SET status = 'implemented' WHERE id = :id"),
            {"id": open_.assignment_id})
    before = await report_rows(store.engine, open_.assignment_id)
    await store.reminders().extend_report_dates(date(2484, 1, 1))
    assert await report_rows(store.engine, open_.assignment_id) == before
    assert await window_of(store.engine, open_.assignment_id) == (None, date(2482, 7, 9))
    assert await report_rows(store.engine, closed.assignment_id) == []


async def test_assignments_held_by_others_are_waited_for(store: Store) -> None:
    held, free = (event(date(2483, 1, 1), [date(2485, 12, 31)]) for _ in range(2))
    await store_events(store.consumer_on(date(2483, 1, 2)), [held, free])
    as_of = date(2484, 6, 1)
    wanted = owed_reports(held, POLICY, until=report_dates_window(as_of, POLICY)[1])
    async with store.engine.connect() as locker:
        # Another transaction holds one of them (the consumer replacing its rows).
        transaction = await locker.begin()
        await locker.execute(text("SELECT 1 FROM notifier.assignments WHERE id = :id "
                                  "FOR UPDATE"), {"id": held.assignment_id})
        extension = asyncio.create_task(store.reminders().extend_report_dates(as_of))

        async def free_extended() -> bool:
            return await report_rows(store.engine, free.assignment_id) == wanted
        await eventually(free_extended, what="the assignment nobody holds extended")
        assert not extension.done(), "returned while an assignment was still short"
        await transaction.rollback()
    await extension
    assert await report_rows(store.engine, held.assignment_id) == wanted


async def test_two_replicas_extending_at_once(store: Store) -> None:
    events = [event(date(2483, 1, 1), [date(2486, 12, 31)]) for _ in range(6)]
    await store_events(store.consumer_on(date(2483, 1, 2)), events)
    replicas = [store.reminders(), store.reminders()]
    for replica in replicas:
        replica.extend_batch = 2  # many small transactions, interleaved
    as_of = date(2485, 3, 1)
    counts = await asyncio.gather(*(r.extend_report_dates(as_of) for r in replicas))
    assert sum(counts) >= len(events)
    for e in events:
        assert await report_rows(store.engine, e.assignment_id) == owed_reports(
            e, POLICY, until=report_dates_window(as_of, POLICY)[1])


# --- passes (claims and mails: 2495-2498, the tests' short overdue horizon) -------------


async def ledger_reports(engine: AsyncEngine, assignment_id: uuid.UUID
                         ) -> set[tuple[date, int]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT due_date, offset_days FROM notifier.reminder_ledger "
            "WHERE assignment_id = :id AND due_kind = 'report'"), {"id": assignment_id})).all()
    return {(r[0], r[1]) for r in rows}


async def test_a_pass_extends_the_report_rows_before_its_due_set(infra: Infra,
                                                                 store: Store) -> None:
    """Through the running service: the consumer on the service clock (2 January 2495)
    writes the report rows up to May 2495; a pass as of 11 December 2495 adds the ones it
    needs and sends the reminder 30 days before the report due on 10 January 2496."""
    settings = notifier_settings(infra, unique("horizon-pass"), clock=date(2495, 1, 2))
    work = event(date(2495, 1, 2), [date(2496, 12, 31)])
    async with running(build_app(settings), infra.coordinator_token()) as client:
        await publish(infra, settings.assignments_topic, [work])

        async def stored() -> bool:
            async with store.engine.connect() as conn:
                return bool((await conn.execute(text(
                    "SELECT count(*) FROM notifier.assignments WHERE id = :id"),
                    {"id": work.assignment_id})).scalar_one())
        await eventually(stored, timeout=60, what="the assignment stored")
        assert await report_rows(store.engine, work.assignment_id) == [
            (date(2495, 1, 1), date(2495, 4, 10))]

        before = metric_value((await client.get("/metrics")).text, EXTENDED)
        response = await client.post("/v1/reminders/run", params={"as_of": "2495-12-11"})
        assert response.status_code == 200, response.text
        answer = response.json()
        after = metric_value((await client.get("/metrics")).text, EXTENDED)
    assert answer["report_dates_extended"] >= 1 and answer["report_dates_ms"] >= 0
    assert after - before == answer["report_dates_extended"], "counted for the operators"
    assert (date(2496, 1, 10), 30) in await ledger_reports(store.engine, work.assignment_id)
    assert answer["claimed"] >= 1 and answer["sent"]


async def test_rows_stored_between_extension_and_due_set_are_not_missed(
        infra: Infra, store: Store) -> None:
    """The consumer (its clock years behind the pass's date) stores an assignment right
    after the pass extended the report rows: the pass extends again before it reads."""
    settings = notifier_settings(infra, unique("horizon-race"), policy=TEST_POLICY)
    late = event(date(2497, 1, 2), [date(2498, 12, 31)])
    consumer = store.consumer_on(date(2497, 1, 2), TEST_POLICY)
    calls: list[date] = []

    class Raced(ReminderService):
        async def extend_report_dates(self, as_of: date) -> int:
            extended = await super().extend_report_dates(as_of)
            calls.append(as_of)
            if len(calls) == 1:
                await store_events(consumer, [late])
            return extended

    service = Raced(make_sessionmaker(store.engine), settings)
    as_of = date(2497, 12, 11)  # 30 days before the report due on 10 January 2498
    report = await service.run_pass(as_of)
    assert calls == [as_of, as_of], "the due set found the rows short and extended again"
    assert report.report_dates_extended >= 1
    assert (date(2498, 1, 10), 30) in await ledger_reports(store.engine, late.assignment_id)
    assert report.claimed >= 1
