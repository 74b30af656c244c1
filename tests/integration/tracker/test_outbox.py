"""Events through the transactional outbox and the consumer: one per change, unique ids,
keyed, in order."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable
from typing import Any

from sqlalchemy import func, select

from services.tracker.repository import OUTBOX
from shared.events import ASSIGNMENT_TOPIC_EVENT, AgencyEvent
from tests.conftest import unique
from tests.helpers import eventually
from tests.integration.tracker.conftest import Tracker
from tests.integration.tracker.support import (
    announced_assignments,
    assignments_of,
    distinct_events,
    encoded,
    plan_event,
    produce,
    published,
)


async def _empty(count: Awaitable[int]) -> bool:
    return await count == 0


async def outbox_backlog(tracker: Tracker, keys: list[str]) -> int:
    """Events of these keys still in the outbox (the relay deletes what it published)."""
    async with tracker.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(OUTBOX)
                                          .where(OUTBOX.c.key.in_(keys)))).scalar_one())


async def test_every_change_publishes_its_events_keyed_by_recommendation(tracker: Tracker) -> None:
    plan = unique("plan")
    first = plan_event(plan, "1", "Ministry of Justice, Supreme Court", text="v1")
    await produce(tracker.infra.bootstrap, tracker.settings.recommendations_topic,
                  encoded([first]))

    async def assigned() -> list[dict[str, Any]]:
        rows = await assignments_of(tracker.sessions, [first.recommendation_id])
        return rows if len(rows) == 2 else []
    rows = await eventually(assigned, what="assignments stored")
    by_name = {r["agency_name"]: r["id"] for r in rows}
    moj = by_name["Ministry of Justice"]

    reported = await tracker.client.post(f"/v1/assignments/{moj}/reports", json={
        "status": "in_progress", "text": "Working group set up"})
    assert reported.status_code == 201, reported.text
    await produce(tracker.infra.bootstrap, tracker.settings.recommendations_topic,
                  encoded([plan_event(plan, "1", "Ministry of Justice, Supreme Court",
                                      text="v2")]))

    async def updated() -> bool:
        return {r["version"] for r in await assignments_of(
            tracker.sessions, [first.recommendation_id])} == {2, 3}
    await eventually(updated, what="version 2 of the recommendation applied")

    key = str(first.recommendation_id)
    # created x2 (one event), the report, its status change, updated x2 (one event)
    records = await published(tracker.infra.bootstrap, tracker.settings.assignments_topic,
                              [key], at_least=4)
    await eventually(lambda: _empty(outbox_backlog(tracker, [key])), what="outbox emptied")

    for record in records:
        event = ASSIGNMENT_TOPIC_EVENT.validate_json(record.value)
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["x-event-id"] == str(event.event_id)
        assert headers["content-type"] == "application/json"
        assert record.key.decode() == str(event.recommendation_id), "keyed by recommendation"
    assert [type(e).__name__ for e in distinct_events(records, ASSIGNMENT_TOPIC_EVENT)] == [
        "AssignmentsChanged", "AssignmentEvent", "AssignmentEvent", "AssignmentsChanged"]
    # Each change published once (a relay retry may repeat one: same event id).
    events = announced_assignments(records)
    assert len(events) == 6, "created x2, report, status change, updated x2"

    # The topic order of one key (one partition) is the order of the changes.
    moj_events = [e for e in events if e.assignment_id == moj]
    assert [e.type.value for e in moj_events] == [
        "assignment.created", "assignment.report_submitted", "assignment.status_changed",
        "assignment.updated"]
    assert [e.version for e in moj_events] == [1, 2, 2, 3]
    assert moj_events[-1].text == "v2" and moj_events[-1].status == "in_progress"
    assert moj_events[-1].reported_periods, "the notifier learns which quarters are reported"
    assert len({r.partition for r in records}) == 1, "one key, one partition"


async def test_contact_changes_publish_the_agency_event(tracker: Tracker) -> None:
    created = await tracker.client.post("/v1/agencies", json={"name": f"Agency {unique()}"})
    assert created.status_code == 201
    agency = created.json()
    changed = await tracker.client.put(f"/v1/agencies/{agency['id']}", json={
        "emails": ["desk@agency.example.kz"], "language": "kk",
        "escalation_email": "deputy@agency.example.kz"})
    assert changed.status_code == 200, changed.text
    # The same values again change nothing, so they announce nothing.
    same = await tracker.client.put(f"/v1/agencies/{agency['id']}", json={"language": "kk"})
    assert same.status_code == 200

    records = await published(tracker.infra.bootstrap, tracker.settings.agencies_topic,
                              [agency["id"]], at_least=2)
    events = [AgencyEvent.model_validate_json(r.value) for r in records]
    latest = {str(e.event_id): e for e in events}
    assert len(latest) == 2, "created, then the contacts changed"
    last = events[-1]
    assert (last.emails, last.language, last.escalation_email) == (
        ["desk@agency.example.kz"], "kk", "deputy@agency.example.kz")
    assert all(json.loads(r.value)["agency_id"] == agency["id"] for r in records)
    assert uuid.UUID(agency["id"])
