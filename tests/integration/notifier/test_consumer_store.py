"""The notifier storing `assignments` events on the real PostgreSQL (and broker): what lands
in notifier.assignments and notifier.due_dates, how versions replace each other, that the
due_dates triggers (migrations 0003, 0004) still keep other writers' rows in step, and that
a batch commits or rolls back as one.

Most tests call the consumer's store directly (the data path under test); the last one
goes through Kafka and the running service to see a rejected event parked and the rest of
its batch stored. The due dates lie in 2091-2093, where no other module runs a pass (a
pass reads every module's due rows). The consumer's clock says 1 June 2091: report rows are
written for its window of due dates (13 November 2090 to 1 October 2091), the rest by the
passes (tests/integration/notifier/test_report_horizon.py).
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier import consumer as consumer_module
from services.notifier.main import build_app
from services.notifier.policy import ReminderPolicy
from shared.deadlines import Deadline
from shared.events import (
    AssignmentEvent,
    AssignmentsChanged,
    AssignmentStatus,
    DueDate,
    DueKind,
)
from shared.retry import is_data_error
from shared.settings import dead_letter_topic
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.notifier.support import (
    Store,
    assignment_event,
    changed_event,
    notifier_settings,
    owed_reports,
    store_events,
    store_fixture,
)
from tests.integration.test_dead_letters import dead_letters
from tests.integration.tracker.support import produce

Q1, Q2, Q3 = date(2091, 1, 1), date(2091, 4, 1), date(2091, 7, 1)
TODAY = date(2091, 6, 1)  # the consumer's clock

store = store_fixture("store", TODAY)


def assignment(**changes: Any) -> AssignmentEvent:
    """A yearly action of 2091-2092 with a mid-term review, not started; ``changes``: other
    fields."""
    values: dict[str, Any] = {
        "active_from": Q1, "status": AssignmentStatus.NOT_STARTED,
        "deadline": Deadline(text="Yearly", start=date(2091, 1, 1), due=date(2092, 12, 31),
                             recurrence="yearly"),
        "due_dates": [DueDate(kind=DueKind.DEADLINE, due=date(2091, 12, 31)),
                      DueDate(kind=DueKind.DEADLINE, due=date(2092, 12, 31)),
                      DueDate(kind=DueKind.MID_TERM, due=date(2092, 6, 30))],
    }
    values.update(changes)
    return assignment_event(**values)


def expected_due(event: AssignmentEvent, policy: ReminderPolicy, window: tuple[date, date]
                 ) -> set[tuple[str, date, date | None, uuid.UUID, str, str]]:
    """Written from the event and the policy, not with the consumer's code: report rows
    due within the window."""
    if event.status.value in policy.closed_statuses:
        return set()
    state = (event.agency_id, event.status.value, event.role)
    rows = {(d.kind.value, d.due, d.start, *state) for d in event.due_dates
            if d.kind is not DueKind.REPORT}
    rows |= {("report", due, start, *state)
             for start, due in owed_reports(event, policy, *window)}
    return rows


def expected_window(event: AssignmentEvent, policy: ReminderPolicy, window: tuple[date, date]
                    ) -> tuple[date | None, date | None]:
    """The day after the last owed report left out before the window and the day before
    the first one after it; None: none is."""
    dues = [due for _start, due in owed_reports(event, policy)]
    before = [due for due in dues if due < window[0]]
    after = [due for due in dues if due > window[1]]
    return (max(before) + timedelta(days=1) if before else None,
            min(after) - timedelta(days=1) if after else None)


async def stored(engine: AsyncEngine, assignment_id: uuid.UUID) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM notifier.assignments WHERE id = :id"),
                                  {"id": assignment_id})).mappings().first()
    return dict(row) if row else None


async def due_dates(engine: AsyncEngine, assignment_id: uuid.UUID
                    ) -> set[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT kind, due_date, period_start, agency_id, status, role "
            "FROM notifier.due_dates WHERE assignment_id = :id"), {"id": assignment_id})).all()
    return {tuple(r) for r in rows}


async def test_an_event_is_stored_as_the_tracker_sent_it(store: Store) -> None:
    event = assignment(role="co", status=AssignmentStatus.IN_PROGRESS,
                       reported_periods=[Q2, Q1],
                       due_dates=[*assignment().due_dates,
                                  DueDate(kind=DueKind.REPORT, due=date(2091, 4, 20))])
    other = assignment(active_from=None, due_dates=[], deadline=Deadline(
        text="whenever", start=None, due=None, needs_deadline=True))
    await store_events(store.consumer, [event, other])

    row = await stored(store.engine, event.assignment_id)
    assert row is not None
    assert {k: row[k] for k in ("recommendation_id", "agency_id", "agency_name", "role",
                                "status", "source", "reference", "text", "active_from",
                                "version")} == {
        "recommendation_id": event.recommendation_id, "agency_id": event.agency_id,
        "agency_name": "Ministry of Justice", "role": "co", "status": "in_progress",
        "source": "plan", "reference": event.reference, "text": event.text,
        "active_from": Q1, "version": 1}
    assert row["deadline"] == event.deadline.model_dump(mode="json")
    assert row["reported_periods"] == [Q2, Q1]
    assert row["updated_at"] is not None
    dues = await due_dates(store.engine, event.assignment_id)
    assert dues == expected_due(event, store.policy, store.window)
    # Q1 and Q2 are reported; Q3's report (due 10 October) is beyond the horizon.
    assert {(kind, due) for kind, due, *_ in dues} == {
        ("deadline", date(2091, 12, 31)), ("deadline", date(2092, 12, 31)),
        ("mid_term", date(2092, 6, 30))}, "report due dates are the notifier's own"
    assert (row["reports_from"], row["reports_until"]) == (None, date(2091, 10, 9))

    plain = await stored(store.engine, other.assignment_id)
    assert plain is not None and plain["reported_periods"] == []
    assert plain["deadline"]["needs_deadline"] is True
    assert await due_dates(store.engine, other.assignment_id) == set()
    assert (plain["reports_from"], plain["reports_until"]) == (None, None)


async def test_report_rows_are_written_for_the_consumers_window(store: Store) -> None:
    event = assignment()
    # Active since 2089: the reports due before the window (from 13 November 2090) too.
    older = assignment(active_from=date(2089, 7, 1))
    await store_events(store.consumer, [event, older])
    dues = await due_dates(store.engine, event.assignment_id)
    assert dues == expected_due(event, store.policy, store.window)
    # Q1 (due 10 April) and Q2 (10 July); Q3 (10 October) and later ones left to the passes.
    assert sorted(due for kind, due, *_ in dues if kind == "report") == [
        date(2091, 4, 10), date(2091, 7, 10)]
    row = await stored(store.engine, event.assignment_id)
    assert row is not None
    assert (row["reports_from"], row["reports_until"]) == (None, date(2091, 10, 9)) \
        == expected_window(event, store.policy, store.window)

    dues = await due_dates(store.engine, older.assignment_id)
    assert dues == expected_due(older, store.policy, store.window)
    # From Q4 2090 (due 10 January 2091): Q3 2089 to Q3 2090 are left to the passes.
    assert min(due for kind, due, *_ in dues if kind == "report") == date(2091, 1, 10)
    row = await stored(store.engine, older.assignment_id)
    assert row is not None
    assert (row["reports_from"], row["reports_until"]) == (date(2090, 10, 11),
                                                           date(2091, 10, 9)) \
        == expected_window(older, store.policy, store.window)


async def test_a_newer_version_replaces_the_due_dates_an_older_Xs_nothing(
        store: Store) -> None:
    v1 = assignment()
    v2 = changed_event(v1, status=AssignmentStatus.IN_PROGRESS, role="co", reported_periods=[Q1],
                 due_dates=[DueDate(kind=DueKind.DEADLINE, due=date(2091, 9, 30),
                                    start=Q3)])
    v3 = changed_event(v2, status=AssignmentStatus.IMPLEMENTED)
    await store_events(store.consumer, [v1])
    assert await due_dates(store.engine, v1.assignment_id) == expected_due(
        v1, store.policy, store.window)

    await store_events(store.consumer, [v2])
    after_v2 = await due_dates(store.engine, v1.assignment_id)
    assert after_v2 == expected_due(v2, store.policy, store.window)
    assert {(status, role) for *_, status, role in after_v2} == {("in_progress", "co")}

    # A re-delivered older version, alone or in a batch with a new assignment.
    fresh = assignment()
    await store_events(store.consumer, [v1, fresh])
    row = await stored(store.engine, v1.assignment_id)
    assert row is not None and (row["version"], row["status"]) == (2, "in_progress")
    assert (row["reports_from"], row["reports_until"]) == expected_window(
        v2, store.policy, store.window)
    assert await due_dates(store.engine, v1.assignment_id) == after_v2
    assert await due_dates(store.engine, fresh.assignment_id) == expected_due(
        fresh, store.policy, store.window)

    # The same version again (a re-delivery after a crash) leaves the same rows.
    await store_events(store.consumer, [v2])
    assert await due_dates(store.engine, v1.assignment_id) == after_v2

    await store_events(store.consumer, [v3])
    assert await due_dates(store.engine, v1.assignment_id) == set(), "closed: nothing due"
    row = await stored(store.engine, v1.assignment_id)
    assert row is not None and (row["version"], row["status"]) == (3, "implemented")
    assert (row["reports_from"], row["reports_until"]) == (None, None)


async def test_rows_written_by_others_still_take_the_assignments_state(store: Store) -> None:
    event = assignment(role="co")
    await store_events(store.consumer, [event])
    async with store.engine.begin() as conn:
        # A due row inserted without the state (a bulk load, a manual fix) takes it from its
        # assignment ...
        await conn.execute(text(
            "INSERT INTO notifier.due_dates (assignment_id, kind, due_date) "
            "VALUES (:id, 'follow_up', '2091-11-28')"), {"id": event.assignment_id})
    follow_up = {r for r in await due_dates(store.engine, event.assignment_id)
                 if r[0] == "follow_up"}
    assert follow_up == {("follow_up", date(2091, 11, 28), None, event.agency_id,
                          "not_started", "co")}

    # ... and a change of the assignment made by another writer reaches its due rows.
    async with store.engine.begin() as conn:
        await conn.execute(text(
            "UPDATE notifier.assignments SET status = 'not_implemented', role = 'lead' "
            "WHERE id = :id"), {"id": event.assignment_id})
    states = {(status, role) for *_, status, role in
              await due_dates(store.engine, event.assignment_id)}
    assert states == {("not_implemented", "lead")}


async def test_an_assignment_and_its_due_dates_commit_together(store: Store) -> None:
    good, bad = assignment(), assignment()
    # A stray due row of an assignment the notifier has never seen clashes with one the
    # event brings: the database refuses the batch ...
    async with store.engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO notifier.due_dates (assignment_id, kind, due_date) "
            "VALUES (:id, 'deadline', '2091-12-31')"), {"id": bad.assignment_id})
    with pytest.raises(Exception) as refused:  # noqa: PT011 - classified below
        await store_events(store.consumer, [good, bad])
    assert is_data_error(refused.value), refused.value
    # ... and nothing of it stays: neither assignment, no due row beyond the stray one.
    for event in (good, bad):
        assert await stored(store.engine, event.assignment_id) is None
    assert await due_dates(store.engine, good.assignment_id) == set()
    assert len(await due_dates(store.engine, bad.assignment_id)) == 1

    await store_events(store.consumer, [good])  # alone it is stored
    assert await due_dates(store.engine, good.assignment_id) == expected_due(
        good, store.policy, store.window)


async def test_an_assignment_another_writer_inserted_meanwhile_is_upserted(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """New assignments go in with COPY. One that another writer inserted after the batch
    looked (two consumers on a partition during a rebalance) fails the COPY with a unique
    violation: the batch is stored again event by event, that one through the upsert, and
    nothing is parked."""
    raced = assignment()
    await store_events(store.consumer, [raced])
    newer = changed_event(raced, status=AssignmentStatus.IN_PROGRESS, reported_periods=[Q1])
    fresh = assignment()
    looked = consumer_module.STORED_ASSIGNMENTS
    attempts: list[int] = []
    parked: list[Any] = []

    async def looked_too_early(events: list[AssignmentEvent]) -> None:
        attempts.append(len(events))
        with monkeypatch.context() as patch:
            if len(attempts) == 1:  # the batch saw none of them stored yet
                patch.setattr(consumer_module, "STORED_ASSIGNMENTS", looked + " AND false")
            await store_events(store.consumer, events)

    async def park(*args: Any) -> None:
        parked.append(args)

    monkeypatch.setattr(consumer_module, "send_to_dead_letters", park)
    pairs = [(e, SimpleNamespace(value=b"{}", key=b"k")) for e in (newer, fresh)]
    await store.consumer._store("assignments", pairs,  # noqa: SLF001
                                lambda e: e.assignment_id, looked_too_early)
    assert attempts == [2, 1, 1], "the batch, then each event alone"
    assert parked == []
    row = await stored(store.engine, raced.assignment_id)
    assert row is not None and (row["version"], row["status"]) == (2, "in_progress")
    assert await due_dates(store.engine, raced.assignment_id) == expected_due(
        newer, store.policy, store.window)
    assert await due_dates(store.engine, fresh.assignment_id) == expected_due(
        fresh, store.policy, store.window)


async def test_an_event_the_database_refuses_is_parked_and_its_batch_stored(
        infra: Infra, store: Store) -> None:
    settings = notifier_settings(infra, unique("refused"), clock=TODAY)
    first, last = assignment(), assignment()
    # Valid JSON and a valid event, but PostgreSQL text cannot hold a NUL character.
    refused = assignment(text="Adopt a law\x00 on legal aid.")
    records = [(str(e.assignment_id).encode(), e.model_dump_json().encode())
               for e in (first, refused, last)]
    async with running(build_app(settings), infra.coordinator_token()):
        await produce(infra.bootstrap, settings.assignments_topic, records)

        async def both_stored() -> bool:
            return all([await stored(store.engine, e.assignment_id) for e in (first, last)])
        await eventually(both_stored, timeout=60, what="the valid events stored")
        key = str(refused.assignment_id).encode()

        async def parked() -> dict[bytes, Any]:
            return await dead_letters(infra.bootstrap, settings.assignments_topic, {key})
        dead = await eventually(parked, timeout=30,
                                what=f"the refused event in {dead_letter_topic('assignments')}")
    assert dead[key].value == records[1][1], "the original bytes are kept for a replay"
    headers = {k: v.decode() for k, v in dead[key].headers}
    assert headers["x-source-topic"] == settings.assignments_topic
    assert "0x00" in headers["x-error-message"], headers  # the database's reason
    assert await stored(store.engine, refused.assignment_id) is None
    assert await due_dates(store.engine, last.assignment_id) == expected_due(
        last, store.policy, store.window)


async def test_a_change_of_several_assignments_is_stored_or_parked_as_one(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each assignment of an AssignmentsChanged is stored as its own event would be. One the
    database refuses parks the event once, whichever of its assignments failed, and the
    rest of the batch is stored."""
    good = AssignmentsChanged.of([
        assignment(), assignment(role="co", status=AssignmentStatus.IN_PROGRESS,
                                 reported_periods=[Q1])])
    # PostgreSQL text cannot hold a NUL character: both of its assignments are refused.
    refused = AssignmentsChanged.of([assignment(text="Adopt a law\x00 on legal aid."),
                                     assignment()])
    records = {id(e): SimpleNamespace(value=e.model_dump_json().encode(),
                                      key=str(e.recommendation_id).encode())
               for e in (refused, good)}
    parked: list[Any] = []

    async def park(*args: Any) -> None:
        parked.append(args)

    monkeypatch.setattr(consumer_module, "send_to_dead_letters", park)
    pairs = [(tracked, records[id(event)]) for event in (refused, good)
             for tracked in consumer_module.tracked_assignments(event)]
    await store.consumer._store("assignments", pairs,  # noqa: SLF001
                                consumer_module.assignment_key, store.consumer.store_tracked)

    assert [(topic, value, key) for _, topic, value, key, _ in parked] == [
        ("assignments", records[id(refused)].value, records[id(refused)].key)]
    for single in refused.assignment_events():
        assert await stored(store.engine, single.assignment_id) is None
    for single in good.assignment_events():
        row = await stored(store.engine, single.assignment_id)
        assert row is not None
        assert (row["recommendation_id"], row["role"], row["status"], row["text"]) == (
            good.recommendation_id, single.role, single.status.value, good.text)
        assert await due_dates(store.engine, single.assignment_id) == expected_due(
            single, store.policy, store.window)
