"""The tracker as a real process: 10,000 recommendations, SIGKILL mid-stream, restart; every
expected assignment exists exactly once. Also `hrtrack agencies load` against that process."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hrtrack.stack import free_port
from services.tracker.agencies import read_directory
from services.tracker.repository import ASSIGNMENTS, HISTORY, RECOMMENDATIONS
from services.tracker.settings import DEFAULT_DIRECTORY
from shared.events import RecommendationEvent
from shared.executors import agency_key
from shared.ids import agency_id, assignment_id
from tests.conftest import Infra, unique
from tests.helpers import ServiceProcess, eventually
from tests.integration.tracker.support import ORPHANS_SQL, encoded, plan_event, produce

TOTAL = 10_000
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tracker_process(infra: Infra, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[ServiceProcess]:
    settings = {**infra.env(), "consumer_group": unique("tracker-crash"),
                # Its own topics: the 10,000 messages and their 30,000 events stay out of the
                # topics every other test module reads from the beginning.
                "recommendations_topic": unique("recommendations"),
                "assignments_topic": unique("assignments"), "agencies_topic": unique("agencies"),
                "batch_max_records": 250, "outbox_poll_seconds": 0.2}
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           **{f"HRTRACK_{k.upper()}": str(v) for k, v in settings.items()}}
    tracker = ServiceProcess("tracker", env, free_port(),
                             tmp_path_factory.mktemp("crash") / "tracker.log")
    try:
        yield tracker
    finally:
        if tracker.process is not None:
            tracker.process.stop()


async def outbox_backlog(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM tracker.outbox"))).scalar_one())


@pytest.fixture(scope="module")
async def engine(infra: Infra) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(infra.database_url)
    yield engine
    await engine.dispose()


def workload(plan: str) -> tuple[list[RecommendationEvent], set[uuid.UUID]]:
    """TOTAL plan actions naming 1-5 agencies each, some by an alias, some unknown; and the
    assignment ids they must make (one per recommendation and agency)."""
    rng = random.Random(20091231)
    directory = read_directory(DEFAULT_DIRECTORY)
    unknown = [f"Regional Department {n} of {plan}" for n in range(20)]
    events: list[RecommendationEvent] = []
    expected: set[uuid.UUID] = set()
    for n in range(TOTAL):
        picked = rng.sample(range(len(directory) + len(unknown)), rng.randint(1, 5))
        executors, agencies = [], []
        for rank, index in enumerate(picked):
            if index < len(directory):
                entry = directory[index]
                written, canonical = rng.choice([entry.name, *entry.aliases]), entry.name
            else:
                written = canonical = unknown[index - len(directory)]
            executors.append({"name": written, "role": "lead" if rank == 0 else "co"})
            agencies.append(agency_id(agency_key(canonical)))
        event = plan_event(plan, str(n), executors, deadline="2nd quarter 2010")
        events.append(event)
        expected |= {assignment_id(event.recommendation_id, a) for a in agencies}
    return events, expected


async def stored_count(engine: AsyncEngine, ids: list[uuid.UUID]) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(RECOMMENDATIONS)
                                       .where(RECOMMENDATIONS.c.id.in_(ids)))).scalar_one())


async def test_sigkill_mid_stream_then_restart_stores_each_assignment_once(
        infra: Infra, tracker_process: ServiceProcess, engine: AsyncEngine) -> None:
    plan = unique("crash-plan")
    events, expected = workload(plan)
    ids = [e.recommendation_id for e in events]
    topic = tracker_process.env["HRTRACK_RECOMMENDATIONS_TOPIC"]

    tracker_process.start()
    await tracker_process.wait_ready()
    await produce(infra.bootstrap, topic, encoded(events))

    # Kill it as a crash would, once some but not all are stored.
    async def midway() -> int:
        count = await stored_count(engine, ids)
        return count if count >= 1000 else 0
    at_kill = await eventually(midway, timeout=120, interval=0.05, what="first batches stored")
    assert tracker_process.process is not None
    tracker_process.process.kill()
    stored_at_kill = await stored_count(engine, ids)
    assert 0 < stored_at_kill < TOTAL, "killed mid-stream"
    assert at_kill <= stored_at_kill

    tracker_process.start()
    await tracker_process.wait_ready()

    async def all_stored() -> bool:
        return await stored_count(engine, ids) == TOTAL
    await eventually(all_stored, timeout=180, interval=0.5, what="all recommendations stored")

    async with engine.connect() as conn:
        ours = ASSIGNMENTS.c.recommendation_id.in_(ids)
        count, distinct = (await conn.execute(select(
            func.count(), func.count(func.distinct(
                func.concat(ASSIGNMENTS.c.recommendation_id, ASSIGNMENTS.c.agency_id))))
            .where(ours))).one()
        found = set((await conn.execute(select(ASSIGNMENTS.c.id).where(ours))).scalars())
        versions = set((await conn.execute(select(ASSIGNMENTS.c.version).where(ours)
                                           .distinct())).scalars())
        created = (await conn.execute(
            select(HISTORY.c.entity_id, func.count()).where(
                HISTORY.c.entity == "recommendation", HISTORY.c.action == "created",
                HISTORY.c.entity_id.in_(ids)).group_by(HISTORY.c.entity_id))).all()
    assert count == distinct == len(expected), "every expected assignment exactly once"
    assert found == expected
    assert versions == {1}, "a re-delivered batch changed nothing"
    assert len(created) == TOTAL and {c for _, c in created} == {1}
    # The relay publishes every event (a relay crash may repeat one with the same id), and a
    # re-delivered batch announces nothing new: one "created" event per assignment (each
    # recommendation's in one AssignmentsChanged).
    topic = tracker_process.env["HRTRACK_ASSIGNMENTS_TOPIC"]
    created_ids: dict[str, set[str]] = {}  # assignment id -> ids of its "created" events
    reader = AIOKafkaConsumer(topic, bootstrap_servers=infra.bootstrap, group_id=None,
                              auto_offset_reset="earliest", enable_auto_commit=False)
    await reader.start()
    try:
        async def all_announced() -> bool:
            for part in (await reader.getmany(timeout_ms=500, max_records=20_000)).values():
                for record in part:
                    event = json.loads(record.value)
                    assert event["type"] == "assignments.changed", "only ingests here"
                    assert record.key.decode() == event["recommendation_id"]
                    for change in event["assignments"]:
                        if change["type"] == "assignment.created":
                            created_ids.setdefault(change["assignment_id"], set()).add(
                                change["event_id"])
            # A failure says how far it got: announced so far, and what the relay still holds.
            assert len(created_ids) == len(expected), (
                f"{len(created_ids)}/{len(expected)} announced, "
                f"{await outbox_backlog(engine)} events still in the outbox")
            return True
        await eventually(all_announced, timeout=240, interval=0.2,
                         what="every assignment announced")
    finally:
        await reader.stop()
    assert {uuid.UUID(k) for k in created_ids} == expected
    assert {len(ids) for ids in created_ids.values()} == {1}, "one created event each"
    async with engine.connect() as conn:
        assert (await conn.execute(text(ORPHANS_SQL))).scalar_one() == 0, "no orphan rows"


async def test_agencies_load_command(tracker_process: ServiceProcess, infra: Infra,
                                     tmp_path: Path) -> None:
    """`hrtrack agencies load FILE` against the running process (CSV, then JSON)."""
    if tracker_process.process is None or not tracker_process.process.running:
        tracker_process.start()
    await tracker_process.wait_ready()
    u = unique()
    good = tmp_path / "agencies.csv"
    good.write_text("name,aliases,emails,language\n"
                    f"Agency {u},A {u},desk@{u}.example.kz,ru\n"
                    f"Bureau {u},,,\n")
    bad = tmp_path / "agencies.json"
    bad.write_text(f'[{{"name": "Agency {u}", "language": "kk"}}, '
                   f'{{"name": "Office {u}", "emails": ["nope"]}}]')

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hrtrack.cli", "agencies", "load", str(path),
             "--url", tracker_process.url, "--token", infra.coordinator_token()],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("HRTRACK_")})

    first = await asyncio.to_thread(run, good)
    assert first.returncode == 0, first.stderr
    assert "2 created, 0 updated, 0 failed" in first.stdout
    second = await asyncio.to_thread(run, bad)
    assert second.returncode == 1
    assert "0 created, 1 updated, 1 failed" in second.stdout
    assert "item 2" in second.stderr and "emails" in second.stderr
    assert infra.secret not in first.stdout + first.stderr + second.stdout + second.stderr

    async with httpx.AsyncClient(base_url=tracker_process.url, headers={
            "Authorization": f"Bearer {infra.coordinator_token()}"}) as client:
        agencies = {a["name"]: a for a in (await client.get("/v1/agencies")).json()}
    assert agencies[f"Agency {u}"]["language"] == "kk"
    assert agencies[f"Agency {u}"]["emails"] == [f"desk@{u}.example.kz"]
    assert f"Bureau {u}" in agencies and f"Office {u}" not in agencies
