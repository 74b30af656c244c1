"""Poison on the topic: parked in the dead-letter topic with the reason, the rest is stored."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared.settings import dead_letter_topic
from tests.conftest import unique
from tests.helpers import eventually
from tests.integration.tracker.conftest import Tracker
from tests.integration.tracker.support import count_recommendations, encoded, plan_event, produce


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic so far (no consumer group: nothing committed)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        records: list[Any] = []
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                return records
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()


async def test_non_json_and_wrong_schema_go_to_the_dead_letter_topic(tracker: Tracker) -> None:
    plan = unique("plan")
    good = [plan_event(plan, str(n), "Ministry of Justice") for n in range(1, 5)]
    bad_json_key, wrong_schema_key = (f"poison-{uuid.uuid4()}".encode() for _ in range(2))
    wrong_schema = json.dumps({"type": "recommendation.submitted", "recommendation_id": "nope",
                               "text": 42}).encode()
    # Valid by schema, refused by PostgreSQL (NUL in text): parked after a one-by-one retry.
    # (Intake refuses such text since issue 7; a foreign producer still can send it.)
    unstorable = plan_event(plan, "nul", "Ministry of Justice").model_copy(
        update={"text": "bad \x00 text"})
    (unstorable_key, unstorable_body), = encoded([unstorable])
    valid = encoded(good)
    messages = [valid[0], (bad_json_key, b"\x00not json{"), valid[1],
                (wrong_schema_key, wrong_schema), valid[2], (unstorable_key, unstorable_body),
                valid[3]]
    topic = tracker.settings.recommendations_topic
    await produce(tracker.infra.bootstrap, topic, messages)

    ids = [e.recommendation_id for e in good]

    async def all_stored() -> bool:
        return await count_recommendations(tracker.sessions, ids) == len(ids)
    await eventually(all_stored, timeout=60, what="valid messages around the poison stored")

    async def parked() -> dict[bytes, Any]:
        found = {r.key: r for r in await read_topic(tracker.infra.bootstrap,
                                                   dead_letter_topic(topic))
                 if r.key in (bad_json_key, wrong_schema_key, unstorable_key)}
        return found if len(found) == 3 else {}
    dead = await eventually(parked, timeout=30, what="the poison messages parked")
    assert await count_recommendations(tracker.sessions, [unstorable.recommendation_id]) == 0
    nul_headers = {k: v.decode() for k, v in dead[unstorable_key].headers}
    assert dead[unstorable_key].value == unstorable_body
    assert nul_headers["x-source-topic"] == topic and nul_headers["x-error-message"]

    for key, body in ((bad_json_key, b"\x00not json{"), (wrong_schema_key, wrong_schema)):
        record = dead[key]
        headers = {k: v.decode() for k, v in record.headers}
        assert record.value == body, "the original bytes are kept for a replay"
        assert headers["x-source-topic"] == topic
        assert headers["x-error-type"] == "ValidationError"
        assert headers["x-error-message"]
    wrong_headers = {k: v.decode() for k, v in dead[wrong_schema_key].headers}
    # The reason names what is wrong and where.
    assert "recommendation_id" in wrong_headers["x-error-message"]
    assert "Invalid JSON" in {k: v.decode() for k, v in dead[bad_json_key].headers}[
        "x-error-message"]

    # Consumption went on: a message after the poison is stored too.
    later = plan_event(plan, "later", "Ministry of Justice")
    await produce(tracker.infra.bootstrap, topic, encoded([later]))

    async def later_stored() -> bool:
        return await count_recommendations(tracker.sessions, [later.recommendation_id]) == 1
    await eventually(later_stored, what="message after the poison stored")
