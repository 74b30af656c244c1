"""Poison on every topic: a message that is not JSON and one of the wrong schema, between
valid ones, on `recommendations` (the tracker consumes it) and on `assignments` and
`agencies` (the notifier consumes them). Each bad one lands in `<topic>.dlq` with its
original bytes and `x-error-*` headers naming the reason; the valid ones around it are
processed, so consumption went on.

A tracker and a notifier (real broker and PostgreSQL) serve the module, each on topics of
its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.notifier.main import build_app as build_notifier
from services.tracker.main import build_app as build_tracker
from services.tracker.settings import TrackerSettings
from shared.settings import dead_letter_topic
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.notifier.support import Agency, Assignment, notifier_settings
from tests.integration.tracker.support import plan_event, produce

NOT_JSON = b"\x00\xffnot json {"


@dataclass
class Consumers:
    infra: Infra
    engine: AsyncEngine
    topics: dict[str, str]  # contract name -> this module's topic


@pytest.fixture(scope="module")
async def consumers(infra: Infra) -> AsyncIterator[Consumers]:
    tag = unique("dlq")
    notifier_config = notifier_settings(infra, tag)
    topics = {"recommendations": f"recommendations-{tag}",
              "assignments": notifier_config.assignments_topic,
              "agencies": notifier_config.agencies_topic}
    # The tracker publishes to topics of its own: only this test's events reach the notifier.
    tracker = build_tracker(TrackerSettings(
        **infra.env(), consumer_group=f"tracker-{tag}", directory_file=None,
        recommendations_topic=topics["recommendations"],
        assignments_topic=f"tracker-assignments-{tag}", agencies_topic=f"tracker-agencies-{tag}"))
    notifier = build_notifier(notifier_config)
    engine = create_async_engine(infra.database_url)
    token = infra.coordinator_token()
    try:
        async with running(tracker, token), running(notifier, token):
            yield Consumers(infra, engine, topics)
    finally:
        await engine.dispose()


async def count(engine: AsyncEngine, table: str, ids: list[uuid.UUID]) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(
            text(f"SELECT count(*) FROM {table} WHERE id = ANY(:ids)"),  # noqa: S608 - fixed names
            {"ids": ids})).scalar_one())


@dataclass
class Case:
    """Valid messages of one topic, a wrong-schema one, and where the valid ones are stored."""

    valid: list[tuple[bytes, bytes]]  # (key, value)
    ids: list[uuid.UUID]
    table: str
    wrong_schema: bytes
    wrong_field: str  # the field the reason must name


def recommendations_case() -> Case:
    plan = unique("plan")
    events = [plan_event(plan, str(n), "Ministry of Justice") for n in range(3)]
    return Case([(str(e.recommendation_id).encode(), e.model_dump_json().encode())
                 for e in events], [e.recommendation_id for e in events],
                "tracker.recommendations",
                json.dumps({"type": "recommendation.submitted", "recommendation_id": "nope",
                            "text": 42}).encode(), "recommendation_id")


def assignments_case() -> Case:
    agency = Agency(unique("Agency"), [])
    found = [Assignment(agency, date(2063, 3, 31), date(2063, 1, 1)) for _ in range(3)]
    wrong = found[0].event().model_dump(mode="json") | {"status": "finished", "version": "v2"}
    return Case([(str(a.id).encode(), a.event().model_dump_json().encode()) for a in found],
                [a.id for a in found], "notifier.assignments", json.dumps(wrong).encode(),
                "status")


def agencies_case() -> Case:
    agencies = [Agency(unique("Agency"), [f"{unique('a')}@hrtrack.test"]) for _ in range(3)]
    return Case([(str(a.id).encode(), a.event().model_dump_json().encode()) for a in agencies],
                [a.id for a in agencies], "notifier.agency_contacts",
                json.dumps({"type": "agency.upserted", "agency_id": str(uuid.uuid4()),
                            "emails": "not a list"}).encode(), "name")


CASES: dict[str, Callable[[], Case]] = {
    "recommendations": recommendations_case, "assignments": assignments_case,
    "agencies": agencies_case}


async def dead_letters(bootstrap: str, topic: str, keys: set[bytes]) -> dict[bytes, Any]:
    """The records of `topic`'s dead-letter topic with these keys (read from the start, with
    no consumer group: nothing is committed)."""
    consumer = AIOKafkaConsumer(dead_letter_topic(topic), bootstrap_servers=bootstrap,
                                group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found: dict[bytes, ConsumerRecord[bytes, bytes]] = {}
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                return found
            for records in batch.values():
                found.update({r.key: r for r in records if r.key in keys})
    finally:
        await consumer.stop()


@pytest.mark.parametrize("contract", list(CASES))
async def test_poison_goes_to_the_dead_letter_topic_and_consumption_goes_on(
        consumers: Consumers, contract: str) -> None:
    topic, case = consumers.topics[contract], CASES[contract]()
    bad = {f"not-json-{uuid.uuid4()}".encode(): NOT_JSON,
           f"wrong-schema-{uuid.uuid4()}".encode(): case.wrong_schema}
    (not_json_key, _), (wrong_key, _) = bad.items()
    first, middle, last = case.valid
    await produce(consumers.infra.bootstrap, topic, [
        first, (not_json_key, NOT_JSON), middle, (wrong_key, case.wrong_schema), last])

    async def valid_stored() -> bool:
        return await count(consumers.engine, case.table, case.ids) == len(case.ids)
    await eventually(valid_stored, timeout=60,
                     what=f"the valid {contract} messages around the poison processed")

    keys = set(bad) | {key for key, _ in case.valid}

    async def parked() -> dict[bytes, Any]:
        found = await dead_letters(consumers.infra.bootstrap, topic, keys)
        return found if set(bad) <= set(found) else {}
    dead: dict[bytes, Any] = await eventually(
        parked, timeout=30, what=f"both poison messages in {dead_letter_topic(topic)}")
    assert set(dead) == set(bad), "a valid message was parked"

    for key, body in bad.items():
        record = dead[key]
        headers = {k: v.decode() for k, v in record.headers}
        assert record.value == body, "the original bytes are kept for a replay"
        assert headers["x-source-topic"] == topic
        assert headers["x-error-type"] and headers["x-error-message"]
    not_json = {k: v.decode() for k, v in dead[not_json_key].headers}
    assert "json" in not_json["x-error-message"].lower(), not_json
    wrong = {k: v.decode() for k, v in dead[wrong_key].headers}
    assert case.wrong_field in wrong["x-error-message"], wrong  # names what is wrong
