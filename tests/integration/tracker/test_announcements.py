"""The assignment events of an ingested batch, published by the consumer after commit: one
AssignmentsChanged per recommendation change, keyed by the recommendation.

No announcement may be lost to a crash between the commit and the broker's acknowledgement:
the re-delivered batch announces the assignments of the changes it had made again, with the
same event ids; anything else re-delivered or re-submitted announces nothing. Against the
real PostgreSQL and broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.tracker.consumer import RecommendationConsumer
from services.tracker.main import build_app
from services.tracker.repository import TrackerRepository
from services.tracker.settings import TrackerSettings
from shared.clock import Clock
from shared.db import make_sessionmaker
from shared.events import (
    AssignmentEvent,
    AssignmentEventType,
    AssignmentsChanged,
    RecommendationEvent,
)
from shared.ids import assignment_event_id
from shared.kafka import OutgoingRecord, ensure_topics, json_record
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.tracker.support import (
    UnacknowledgedOnce,
    announced_assignments,
    count_recommendations,
    distinct_events,
    encoded,
    plan_event,
    produce,
    published,
)

TODAY = date(2009, 6, 1)


async def ingest(engine: AsyncEngine, events: list[RecommendationEvent]
                 ) -> list[AssignmentsChanged]:
    """One committed ingest; the events it hands over for publishing."""
    async with make_sessionmaker(engine)() as session, session.begin():
        repo = TrackerRepository(session)
        await repo.ingest(events, TODAY)
        await repo.flush()
    changes = [AssignmentsChanged.model_validate_json(value)
               for _, value, _ in repo.announcements]
    assert [(key, dict(headers)["x-event-id"]) for key, _, headers in repo.announcements] == [
        (str(c.recommendation_id).encode(), str(c.event_id).encode()) for c in changes], \
        "keyed by the recommendation, the event id in a header"
    return changes


def by_assignment(changes: list[AssignmentsChanged]) -> dict[uuid.UUID, AssignmentEvent]:
    """Each assignment's event, as the changes carry them."""
    return {e.assignment_id: e for c in changes for e in c.assignment_events()}


async def test_a_redelivered_change_announces_its_assignments_again(engine: AsyncEngine) -> None:
    plan = unique("plan")
    events = [plan_event(plan, str(n), "Ministry of Justice, Prosecutor General")
              for n in range(1, 6)]
    first = await ingest(engine, events)
    assert [c.recommendation_id for c in first] == [e.recommendation_id for e in events]
    originals = by_assignment(first)
    assert len(originals) == 10 and {e.type for e in originals.values()} == {
        AssignmentEventType.CREATED}

    # The process died before the broker acknowledged them: the same messages again.
    again = await ingest(engine, events)
    assert sorted(str(c.event_id) for c in again) == sorted(str(c.event_id) for c in first)
    assert by_assignment(again).keys() == originals.keys()
    for assignment, event in by_assignment(again).items():
        original = originals[assignment]
        assert event.event_id == original.event_id, "the same version keeps its id"
        assert event.model_dump(exclude={"occurred_at"}) == \
            original.model_dump(exclude={"occurred_at"})


async def test_the_latest_state_is_restated_after_later_changes(engine: AsyncEngine) -> None:
    """A version dropped an agency (its assignment cancelled) and a later batch re-delivers
    that version's event: the current state goes out, cancelled one included."""
    plan = unique("plan")
    v1 = plan_event(plan, "1", "Ministry of Justice, Supreme Court", text="Draft a law")
    v2 = plan_event(plan, "1", "Ministry of Justice", text="Draft and adopt a law")
    await ingest(engine, [v1])
    changed = by_assignment(await ingest(engine, [v2]))
    assert len(changed) == 2, "one change announces the updated and the cancelled one"
    restated = by_assignment(await ingest(engine, [v2]))
    assert restated.keys() == changed.keys() and len(restated) == 2
    cancelled = [e for e in restated.values() if e.status == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0].type is AssignmentEventType.CLOSED
    assert {e.event_id for e in restated.values()} == {e.event_id for e in changed.values()}
    assert {e.text for e in restated.values()} == {"Draft and adopt a law"}


async def test_other_redeliveries_and_resubmissions_announce_nothing(engine: AsyncEngine) -> None:
    plan = unique("plan")
    v1 = plan_event(plan, "1", "Ministry of Justice", text="Draft a law")
    v2 = plan_event(plan, "1", "Ministry of Justice", text="Draft and adopt a law")
    await ingest(engine, [v1])
    await ingest(engine, [v2])
    assert await ingest(engine, [v1]) == [], "an older event delivered late"
    resubmitted = plan_event(plan, "1", "Ministry of Justice", text="Draft and adopt a law")
    assert resubmitted.event_id != v2.event_id
    assert await ingest(engine, [resubmitted]) == [], "the same content submitted again"


async def test_announcing_waits_until_the_broker_acknowledges(infra: Infra) -> None:
    """A batch the broker does not acknowledge is sent again before the consumer commits
    its offsets; the copies carry the same event ids."""
    settings = TrackerSettings(kafka_bootstrap=infra.bootstrap, database_url=infra.database_url,
                               assignments_topic=unique("assignments"), directory_file=None,
                               db_retry_max_seconds=0.2)
    await ensure_topics(infra.bootstrap, [settings.assignments_topic])
    producer = UnacknowledgedOnce(infra.bootstrap)
    await producer.start()
    try:
        consumer = RecommendationConsumer(None, None, settings, Clock(TODAY),  # type: ignore[arg-type]
                                          producer)
        events = [AssignmentEvent(assignment_id=uuid.uuid4(), recommendation_id=uuid.uuid4(),
                                  agency_id=uuid.uuid4(), agency_name="Ministry of Justice",
                                  role="lead", status="not_started", source="plan",
                                  reference=f"r{n}", text="t",
                                  deadline={"text": "2009", "start": "2009-01-01",
                                            "due": "2009-12-31"},
                                  due_dates=[], type=AssignmentEventType.CREATED)
                  for n in range(20)]
        records = [json_record(str(e.assignment_id), e.model_dump_json(), e.event_id)
                   for e in events]
        await consumer.announce(records)
        assert producer.failed, "the first attempt was refused"
    finally:
        await producer.stop()
    found: list[Any] = await published(infra.bootstrap, settings.assignments_topic,
                                       [str(e.assignment_id) for e in events],
                                       at_least=len(events))
    assert sorted(str(e.event_id) for e in distinct_events(found, AssignmentEvent)) == \
        sorted(str(e.event_id) for e in events)


async def test_a_batch_stopped_before_its_events_were_acknowledged_announces_them_later(
        infra: Infra) -> None:
    """The whole consumer, twice in one group: the first instance commits a batch but the
    broker never acknowledges its events (it stops there, as a crash would); the second gets
    the batch again and announces every assignment, with the ids the first one made."""
    settings = TrackerSettings(**infra.env(), consumer_group=unique("tracker-announce"),
                               recommendations_topic=unique("recommendations"),
                               assignments_topic=unique("assignments"),
                               agencies_topic=unique("agencies"), directory_file=None,
                               # One member: the first instance's handler never returns, so a
                               # second member's join would wait for it (max poll interval).
                               consumer_workers=1, outbox_poll_seconds=0.2)
    plan = unique("plan")
    events = [plan_event(plan, str(n), "Ministry of Justice, Prosecutor General")
              for n in range(1, 11)]
    ids = [e.recommendation_id for e in events]
    first = build_app(settings)
    never: list[OutgoingRecord] = []  # the assignment events sent, never acknowledged

    async def unacknowledged(topic: str, records: Iterable[OutgoingRecord]
                             ) -> list[asyncio.Future[object]]:
        if topic == settings.assignments_topic:  # (the relay sends the new agencies')
            never.extend(records)
        return [asyncio.get_running_loop().create_future()]  # never done

    first.state.relay.producer.send = unacknowledged  # the consumer's producer too
    async with running(first, infra.coordinator_token()):
        # One key, so one partition and one record batch: the first instance handles a
        # single batch (its handler never returns), which must hold all ten.
        await produce(infra.bootstrap, settings.recommendations_topic,
                      [(plan.encode(), value) for _, value in encoded(events)])

        async def committed() -> bool:
            return await count_recommendations(first.state.sessions, ids) == len(ids) \
                and len(never) >= len(ids)
        await eventually(committed, timeout=60, what="the batch committed, its events sent")
    # Stopped before the broker acknowledged anything: no offset was committed.
    sent = [AssignmentsChanged.model_validate_json(value) for _, value, _ in never]
    expected = {str(assignment_event_id(c.assignment_id, 1, AssignmentEventType.CREATED))
                for event in sent for c in event.assignments}
    assert len(sent) == len(ids) and len(expected) == 2 * len(ids)

    second = build_app(settings)
    async with running(second, infra.coordinator_token()):
        records = await published(infra.bootstrap, settings.assignments_topic,
                                  [str(rid) for rid in ids], at_least=len(sent))
    assert {str(e.event_id) for e in distinct_events(records, AssignmentsChanged)} == {
        str(e.event_id) for e in sent}, "announced again with the ids the first one made"
    announced = announced_assignments(records)
    assert {str(e.event_id) for e in announced} == expected
    assert {e.type for e in announced} == {AssignmentEventType.CREATED}
    assert {e.recommendation_id for e in announced} == set(ids)
