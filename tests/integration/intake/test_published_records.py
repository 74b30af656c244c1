"""What intake puts on the topic (key, headers, the event's JSON), read back from the real
broker; and which ids a publish reports acknowledged when only some batches get through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import pytest_asyncio

from services.intake.domain import Submission, deduplicate, validate_items
from services.intake.main import build_app
from services.intake.publisher import RecommendationPublisher
from services.intake.settings import IntakeSettings
from shared.events import RecommendationEvent
from shared.kafka import EventProducer, OutgoingRecord
from tests.conftest import Infra, running, unique
from tests.helpers import read_records


@pytest_asyncio.fixture(scope="module")
async def published(infra: Infra) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    topic = f"recommendations.{unique('published')}"
    app = build_app(IntakeSettings(**infra.env(), recommendations_topic=topic))
    async with running(app, infra.coordinator_token()) as client:
        yield client, topic


def items(plan: str) -> list[dict[str, Any]]:
    base = {"source": "plan", "plan": plan, "chapter": "The Right to Life", "text": "Study.",
            "deadline": "2nd quarter 2010", "plan_period": [2009, 2012],
            "executors": "Ministry of Justice with the participation of UNDP (per agreement)"}
    return [
        {**base, "number": "1"},
        {**base, "number": "2", "text": "\u0416\u0443\u0441 \"quoted\" \\ \U0001f600"},
        {**base, "number": "1", "text": "Study again."},  # a later version of number 1
        {"source": "treaty_body", "state": "KAZ", "committee": "CAT", "symbol": f"CAT/{plan}",
         "paragraph": "15", "adopted": "2014-11-21", "text": "Investigate.",
         "follow_up": True, "follow_up_due": "2015-11-28", "executors": "Prosecutor General"},
    ]


async def test_one_record_per_recommendation_keyed_by_id_with_the_event_as_json(
    published: tuple[httpx.AsyncClient, str], infra: Infra,
) -> None:
    client, topic = published
    posted = items(unique("P"))
    response = await client.post("/v1/recommendations", json={"items": posted})
    assert response.status_code == 202, response.text
    expected, _ = validate_items(posted, submitted_by="test-coordinator")
    last = {e.recommendation_id: e for e in expected}  # the last version of each
    assert response.json()["accepted"] == list(dict.fromkeys(
        str(e.recommendation_id) for e in expected))

    records = await read_records(infra.bootstrap, topic, len(last))
    assert len(records) == len(last) == 3
    by_id = {}
    for record in records:
        assert record.headers == (("content-type", b"application/json"),
                                  ("x-schema", b"hrtrack.recommendation.v1"))
        event = RecommendationEvent.model_validate_json(record.value)
        assert record.key == str(event.recommendation_id).encode()
        by_id[event.recommendation_id] = event
    for rid, want in last.items():
        got = by_id[rid].model_dump(exclude={"event_id", "occurred_at"})
        assert got == want.to_event().model_dump(exclude={"event_id", "occurred_at"})
    assert {e.text for e in by_id.values()} == {"Study again.", posted[1]["text"],
                                                "Investigate."}


async def test_readiness_is_the_producers_connection(
    published: tuple[httpx.AsyncClient, str],
) -> None:
    client, _ = published
    answer = await client.get("/readyz")
    assert answer.status_code == 200 and answer.json()["checks"] == {"broker": "ok"}


# --- acknowledgements, batch by batch (a producer that fails some batches) ---------------------


class BatchOutcomes(EventProducer):
    """Stands in for the producer: a record's batch is delivered, fails, or never ends."""

    def __init__(self, fate: dict[bytes, str]) -> None:
        super().__init__("unused:9092", "test")
        self.fate = fate

    @property
    def started(self) -> bool:
        return True

    async def send(self, topic: str, records: Iterable[OutgoingRecord]
                   ) -> list[asyncio.Future[object]]:
        loop = asyncio.get_running_loop()
        batches: dict[str, asyncio.Future[object]] = {
            "delivered": loop.create_future(), "failed": loop.create_future(),
            "pending": loop.create_future()}
        batches["delivered"].set_result(None)
        batches["failed"].set_exception(ConnectionError("broker went away"))
        return [batches[self.fate[key]] for key, _, _ in records]


async def test_only_ids_whose_own_batch_was_delivered_are_acknowledged() -> None:
    events = deduplicate(validate_items(items("P-fate"), submitted_by="t")[0])
    fate = dict(zip((str(e.recommendation_id).encode() for e in events),
                    ["delivered", "failed", "pending"], strict=True))
    publisher = RecommendationPublisher(BatchOutcomes(fate), "t", timeout=0.2)
    outcome = await publisher.publish(events)
    assert outcome.acknowledged == [events[0].recommendation_id]
    assert outcome.failed == [events[1].recommendation_id, events[2].recommendation_id]
    assert outcome.error is not None and "TimeoutError" in outcome.error


async def test_nothing_is_acknowledged_when_the_producer_takes_nothing() -> None:
    class Refusing(BatchOutcomes):
        async def send(self, topic: str, records: Iterable[OutgoingRecord]
                       ) -> list[asyncio.Future[object]]:
            raise ConnectionError("the producer is not connected")

    events: list[Submission] = validate_items(items("P-none"), submitted_by="t")[0]
    outcome = await RecommendationPublisher(Refusing({}), "t", timeout=5).publish(events)
    assert outcome.acknowledged == []
    assert outcome.failed == [e.recommendation_id for e in events]
    assert outcome.error == "ConnectionError: the producer is not connected"
