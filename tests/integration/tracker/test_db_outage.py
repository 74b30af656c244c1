"""A database outage while messages flow: nothing committed, nothing dropped, and the
tracker resumes by itself. It runs against its own PostgreSQL, stopped mid-test."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from hrtrack.devstack import migrate
from hrtrack.stack import Postgres, free_port
from services.tracker.main import build_app
from services.tracker.settings import TrackerSettings
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.tracker.support import (
    assignments_of,
    count_recommendations,
    encoded,
    plan_event,
    produce,
)


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    base = tmp_path_factory.mktemp("outage")
    postgres = Postgres(base / "pg", free_port(), base / "postgres.log")
    postgres.start()
    try:
        migrate(postgres.url)
        yield postgres
    finally:
        postgres.stop()


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """Offsets the group has committed on the topic, summed over partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh topic
        partitions = consumer.partitions_for_topic(topic) or set()
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0
                    for p in partitions])
    finally:
        await consumer.stop()


class RetryLog(logging.Handler):
    """Sees the consumer's "storing recommendations failed ... retrying" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("storing recommendations failed"):
            self.retries += 1


async def test_outage_is_waited_out_without_commit_or_loss(infra: Infra,
                                                           own_postgres: Postgres) -> None:
    topic, group = unique("recommendations"), unique("tracker-outage")
    settings = TrackerSettings(**{**infra.env(), "database_url": own_postgres.url},
                               consumer_group=group, recommendations_topic=topic,
                               assignments_topic=unique("assignments"),
                               agencies_topic=unique("agencies"), db_retry_max_seconds=1.0,
                               batch_max_records=100)
    app = build_app(settings)
    retry_log = RetryLog()
    logging.getLogger("shared.retry").addHandler(retry_log)
    plan = unique("plan")
    before = [plan_event(plan, str(n), "Ministry of Justice, Prosecutor General")
              for n in range(100)]
    during = [plan_event(plan, str(n), "Supreme Court, MoJ") for n in range(100, 300)]
    sessions = app.state.sessions
    try:
        async with running(app, infra.coordinator_token()) as client:
            await produce(infra.bootstrap, topic, encoded(before))

            async def first_stored() -> bool:
                return await count_recommendations(
                    sessions, [e.recommendation_id for e in before]) == len(before)
            await eventually(first_stored, timeout=60, what="first messages stored")

            async def first_committed() -> bool:
                return await committed(infra.bootstrap, group, topic) == len(before)
            await eventually(first_committed, what="offsets committed after the commit")

            await asyncio.to_thread(own_postgres.stop)
            await produce(infra.bootstrap, topic, encoded(during))

            async def retrying() -> bool:
                return retry_log.retries >= 2
            await eventually(retrying, timeout=60, what="the consumer waiting out the outage")

            async def not_ready() -> bool:
                response = await client.get("/readyz")
                return response.status_code == 503 and \
                    response.json()["checks"]["database"] != "ok"
            await eventually(not_ready, what="readiness reports the database")
            assert await committed(infra.bootstrap, group, topic) == len(before), \
                "nothing committed while the database is down"

            await asyncio.to_thread(own_postgres.start)

            ids = [e.recommendation_id for e in before + during]

            async def all_stored() -> bool:
                return await count_recommendations(sessions, ids) == len(ids)
            await eventually(all_stored, timeout=90, what="resumed by itself, nothing lost")

            async def all_committed() -> bool:
                return await committed(infra.bootstrap, group, topic) == len(ids)
            await eventually(all_committed, what="offsets committed after recovery")

            rows = await assignments_of(sessions, ids)
            assert len(rows) == 2 * len(ids)
            assert len({(r["recommendation_id"], r["agency_id"]) for r in rows}) == len(rows)
            assert (await client.get("/readyz")).status_code == 200
    finally:
        logging.getLogger("shared.retry").removeHandler(retry_log)
