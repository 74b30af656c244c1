"""Consuming recommendations: idempotent, versioned, executors resolved through the directory."""

from __future__ import annotations

from sqlalchemy import select

from services.tracker.models import RecommendationVersion
from services.tracker.queries import assignment_history
from services.tracker.repository import HISTORY, RECOMMENDATIONS
from tests.conftest import unique
from tests.helpers import eventually
from tests.integration.tracker.conftest import Tracker
from tests.integration.tracker.support import (
    agency_by_name,
    assignments_of,
    count_recommendations,
    encoded,
    orphans,
    plan_event,
    produce,
)

VERSIONS = RecommendationVersion.__table__  # type: ignore[attr-defined]


async def stored(tracker: Tracker, ids: list, n: int | None = None) -> None:  # type: ignore[type-arg]
    async def check() -> bool:
        return await count_recommendations(tracker.sessions, ids) == (n or len(ids))
    await eventually(check, timeout=60, what=f"{len(ids)} recommendations stored")


async def test_same_batch_twice_changes_nothing(tracker: Tracker) -> None:
    plan = unique("plan")
    events = [plan_event(plan, str(n), "Ministry of Justice, Prosecutor General")
              for n in range(1, 21)]
    ids = [e.recommendation_id for e in events]
    await produce(tracker.infra.bootstrap, tracker.settings.recommendations_topic,
                  encoded(events))
    await stored(tracker, ids)
    before = await assignments_of(tracker.sessions, ids)
    assert len(before) == 40

    # The same messages again (a re-delivery), then a marker to know they were consumed.
    marker = plan_event(plan, "marker", "Ministry of Justice")
    await produce(tracker.infra.bootstrap, tracker.settings.recommendations_topic,
                  encoded([*events, marker]))
    await stored(tracker, [marker.recommendation_id])

    after = await assignments_of(tracker.sessions, ids)
    assert sorted(after, key=lambda r: r["id"]) == sorted(before, key=lambda r: r["id"])
    async with tracker.sessions() as session:
        versions = (await session.execute(
            select(RECOMMENDATIONS.c.version).where(RECOMMENDATIONS.c.id.in_(ids)))).scalars()
        assert set(versions) == {1}
        history = (await session.execute(select(HISTORY.c.entity_id).where(
            HISTORY.c.entity == "recommendation", HISTORY.c.entity_id.in_(ids)))).scalars().all()
        assert sorted(history) == sorted(ids), "one history entry per recommendation"


async def rec_row(tracker: Tracker, rec_id: object) -> dict:  # type: ignore[type-arg]
    async with tracker.sessions() as session:
        return dict((await session.execute(select(RECOMMENDATIONS).where(
            RECOMMENDATIONS.c.id == rec_id))).mappings().one())


async def wait_version(tracker: Tracker, rec_id: object, version: int) -> None:
    async def reached() -> bool:
        return bool((await rec_row(tracker, rec_id))["version"] == version)
    await eventually(reached, what=f"version {version} stored")


async def test_changed_content_makes_version_two_and_a_late_old_event_loses(
        tracker: Tracker) -> None:
    plan = unique("plan")
    v1 = plan_event(plan, "1", "Ministry of Justice", text="Draft a law")
    v2 = plan_event(plan, "1", "Ministry of Justice, Supreme Court", text="Draft and adopt a law")
    assert v1.recommendation_id == v2.recommendation_id
    rid = v1.recommendation_id
    topic = tracker.settings.recommendations_topic
    await produce(tracker.infra.bootstrap, topic, encoded([v1]))
    await stored(tracker, [rid])
    await produce(tracker.infra.bootstrap, topic, encoded([v2]))
    await wait_version(tracker, rid, 2)

    # v1 delivered again after v2 (a late re-delivery): it must not win.
    marker = plan_event(plan, "marker", "Ministry of Justice")
    await produce(tracker.infra.bootstrap, topic, encoded([v1, marker]))
    await stored(tracker, [marker.recommendation_id])
    row = await rec_row(tracker, rid)
    assert (row["version"], row["text"], row["content_hash"]) == (2, "Draft and adopt a law",
                                                                  v2.content_hash)
    # The current version is the row itself; the one it replaced is archived, as it was.
    assert await archived_versions(tracker, rid) == [(1, v1.content_hash, v1.payload)]
    by_agency = {a["agency_name"]: a for a in await assignments_of(tracker.sessions, [rid])}
    assert set(by_agency) == {"Ministry of Justice", "Supreme Court"}
    assert by_agency["Ministry of Justice"]["version"] == 2
    assert by_agency["Supreme Court"]["version"] == 1


async def archived_versions(tracker: Tracker, rec_id: object) -> list[tuple[object, ...]]:
    """(version, content hash, payload) of the versions a change replaced, oldest first."""
    async with tracker.sessions() as session:
        return [tuple(v) for v in (await session.execute(
            select(VERSIONS.c.version, VERSIONS.c.content_hash, VERSIONS.c.payload)
            .where(VERSIONS.c.recommendation_id == rec_id)
            .order_by(VERSIONS.c.version))).all()]


async def test_each_change_archives_the_version_it_replaces(tracker: Tracker) -> None:
    plan = unique("plan")
    texts = ["Draft a law", "Draft and adopt a law", "Adopt the law and monitor it"]
    events = [plan_event(plan, "1", "Ministry of Justice", text=t) for t in texts]
    rid = events[0].recommendation_id
    topic = tracker.settings.recommendations_topic
    await produce(tracker.infra.bootstrap, topic, encoded(events[:1]))
    await stored(tracker, [rid])
    assert await archived_versions(tracker, rid) == [], "a new recommendation has one version"

    # v2 alone, then v3 again with v2 re-delivered in front of it (same batch).
    await produce(tracker.infra.bootstrap, topic, encoded(events[1:2]))
    await wait_version(tracker, rid, 2)
    await produce(tracker.infra.bootstrap, topic, encoded(events[1:]))
    await wait_version(tracker, rid, 3)
    row = await rec_row(tracker, rid)
    assert (row["text"], row["content_hash"], row["payload"]) == (
        texts[2], events[2].content_hash, events[2].payload)
    assert await archived_versions(tracker, rid) == [
        (1, events[0].content_hash, events[0].payload),
        (2, events[1].content_hash, events[1].payload)]


async def test_one_history_entry_per_change_names_the_assignments_it_created(
        tracker: Tracker) -> None:
    plan = unique("plan")
    v1 = plan_event(plan, "1", "Ministry of Justice, Prosecutor General", text="Draft a law")
    v2 = plan_event(plan, "1", "Ministry of Justice, Prosecutor General, Supreme Court",
                    text="Draft and adopt a law")
    rid = v1.recommendation_id
    topic = tracker.settings.recommendations_topic
    await produce(tracker.infra.bootstrap, topic, encoded([v1]))
    await stored(tracker, [rid])
    first = {a["agency_name"]: a for a in await assignments_of(tracker.sessions, [rid])}
    await produce(tracker.infra.bootstrap, topic, encoded([v2]))
    await wait_version(tracker, rid, 2)
    every = {a["agency_name"]: a for a in await assignments_of(tracker.sessions, [rid])}
    court = every["Supreme Court"]
    async with tracker.sessions() as session:
        entries = (await session.execute(
            select(HISTORY.c.entity, HISTORY.c.entity_id, HISTORY.c.action, HISTORY.c.data)
            .where(HISTORY.c.entity_id.in_([rid, *(a["id"] for a in every.values())]))
            .order_by(HISTORY.c.id))).mappings().all()
        histories = {name: await assignment_history(session, a["id"], rid)
                     for name, a in every.items()}
    # Two changes, two entries, each naming the assignments it created; none per assignment.
    assert [(e["entity"], e["entity_id"], e["action"]) for e in entries] == [
        ("recommendation", rid, "created"), ("recommendation", rid, "updated")]
    assert entries[0]["data"]["assignments"] == {
        str(a["id"]): {"agency_id": str(a["agency_id"]), "role": a["role"],
                       "named_as": name} for name, a in first.items()}
    assert entries[1]["data"]["assignments"] == {str(court["id"]): {
        "agency_id": str(court["agency_id"]), "role": "co", "named_as": "Supreme Court"}}
    # Each assignment's own history shows its creation, from the change that made it.
    for name, history in histories.items():
        assert [(h["action"], h["actor"]) for h in history] == [("created", "test")], name
        assert history[0]["data"]["named_as"] == name
        assert history[0]["data"]["agency_id"] == str(every[name]["agency_id"])
    # Entries written before creations moved into the recommendation's (one per
    # assignment) read as they did.
    justice = every["Ministry of Justice"]
    async with tracker.sessions() as session, session.begin():
        await session.execute(HISTORY.insert().values(
            entity="assignment", entity_id=justice["id"], action="reopened", actor="earlier",
            data={"status": "not_started"}))
    async with tracker.sessions() as session:
        history = await assignment_history(session, justice["id"], rid)
    assert [(h["action"], h["actor"]) for h in history] == [
        ("created", "test"), ("reopened", "earlier")]


async def test_executor_names_resolve_through_aliases(tracker: Tracker) -> None:
    plan = unique("plan")
    events = [
        plan_event(plan, "1", [{"name": "The Ministry of Justice", "role": "lead"}]),
        plan_event(plan, "2", [{"name": "Ministry of justice", "role": "lead"}]),
        plan_event(plan, "3", [{"name": "Ministry of the Interior", "role": "lead"}]),
        plan_event(plan, "4", [{"name": "Ministry of Internal Affairs", "role": "lead"}]),
        plan_event(plan, "5", [{"name": "MCI RK", "role": "lead"}]),
        # Two names of one body in one list: one assignment with the stronger role.
        plan_event(plan, "6", [{"name": "Supreme Court", "role": "lead"},
                               {"name": "MoJ", "role": "partner"},
                               {"name": "Ministry of Justice", "role": "co"}]),
    ]
    ids = [e.recommendation_id for e in events]
    await produce(tracker.infra.bootstrap, tracker.settings.recommendations_topic,
                  encoded(events))
    await stored(tracker, ids)
    rows = await assignments_of(tracker.sessions, ids)
    by_rec: dict = {}  # type: ignore[type-arg]
    for r in rows:
        by_rec.setdefault(r["recommendation_id"], []).append((r["agency_name"], r["role"]))
    assert by_rec[ids[0]] == by_rec[ids[1]] == [("Ministry of Justice", "lead")]
    assert by_rec[ids[2]] == by_rec[ids[3]] == [("Ministry of Internal Affairs", "lead")]
    assert by_rec[ids[4]] == [("Ministry of Culture and Information", "lead")]
    assert sorted(by_rec[ids[5]]) == [("Ministry of Justice", "co"), ("Supreme Court", "lead")]
    assert not any(r["needs_review"] for r in rows)


async def test_unknown_name_creates_a_flagged_agency_and_keeps_the_assignment(
        tracker: Tracker) -> None:
    plan = unique("plan")
    newcomer = f"Committee for {unique('body')} Affairs"
    event = plan_event(plan, "1", f"Ministry of Justice, {newcomer}")
    await produce(tracker.infra.bootstrap, tracker.settings.recommendations_topic,
                  encoded([event]))
    await stored(tracker, [event.recommendation_id])
    rows = await assignments_of(tracker.sessions, [event.recommendation_id])
    assert sorted((r["agency_name"], r["role"], r["needs_review"]) for r in rows) == [
        (newcomer, "co", True), ("Ministry of Justice", "lead", False)]

    listed = await tracker.client.get("/v1/agencies", params={"needs_review": "true"})
    assert listed.status_code == 200
    flagged = [a for a in listed.json() if a["name"] == newcomer]
    assert len(flagged) == 1 and flagged[0]["needs_review"] is True
    assert all(a["needs_review"] for a in listed.json())

    # Named again under another spelling: the same agency, not a second one.
    again = plan_event(plan, "2", f"the {newcomer.upper()}")
    await produce(tracker.infra.bootstrap, tracker.settings.recommendations_topic,
                  encoded([again]))
    await stored(tracker, [again.recommendation_id])
    (row,) = await assignments_of(tracker.sessions, [again.recommendation_id])
    assert row["agency_id"] == flagged[0]["id"] or str(row["agency_id"]) == flagged[0]["id"]
    assert await orphans(tracker.sessions) == 0, "every assignment has its agency"


async def test_dropped_executor_is_cancelled_and_reopened_when_named_again(
        tracker: Tracker) -> None:
    plan = unique("plan")
    topic = tracker.settings.recommendations_topic
    first = plan_event(plan, "1", "Ministry of Justice, Supreme Court", text="v1")
    rid = first.recommendation_id
    await produce(tracker.infra.bootstrap, topic, encoded([first]))
    await stored(tracker, [rid])

    async def statuses() -> dict[str, str]:
        return {a["agency_name"]: a["status"]
                for a in await assignments_of(tracker.sessions, [rid])}

    await produce(tracker.infra.bootstrap, topic,
                  encoded([plan_event(plan, "1", "Ministry of Justice", text="v2")]))

    async def cancelled() -> bool:
        return (await statuses()).get("Supreme Court") == "cancelled"
    await eventually(cancelled, what="dropped executor cancelled")
    assert (await statuses())["Ministry of Justice"] == "not_started"

    await produce(tracker.infra.bootstrap, topic, encoded(
        [plan_event(plan, "1", "Ministry of Justice, Supreme Court", text="v3")]))

    async def reopened() -> bool:
        return (await statuses()).get("Supreme Court") == "not_started"
    await eventually(reopened, what="named again: reopened")
    supreme = await agency_by_name(tracker.sessions, "Supreme Court")
    assert supreme is not None
