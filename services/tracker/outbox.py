"""The outbox relay: publishes committed events in order and removes them once acknowledged.

One relay at a time holds a PostgreSQL advisory lock, so events of one key are never
published out of order by two replicas. A batch is claimed by deleting it, published, and
the deletion commits only after the broker acknowledged every event of the batch: a crash
or a broker failure in between rolls the deletion back and the batch is published again
(consumers deduplicate by event_id and ignore older versions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.kafka import EventProducer, OutgoingRecord, json_record

log = logging.getLogger(__name__)
RELAY_LOCK_ID = 0x6872_7472  # "hrtr"

PUBLISHED = Counter("hrtrack_outbox_published", "Outbox events published")

CLAIM_BATCH = text("""
DELETE FROM tracker.outbox WHERE id IN (SELECT id FROM tracker.outbox ORDER BY id LIMIT :limit)
RETURNING id, topic, key, payload, event_id
""")


def records_by_topic(rows: Sequence[Any]) -> list[tuple[str, list[OutgoingRecord]]]:
    """Claimed rows in id order, grouped into runs of one topic (so order is kept)."""
    ordered = sorted(rows, key=lambda r: r["id"])
    return [(topic, [json_record(r["key"], r["payload"], r["event_id"]) for r in run])
            for topic, run in groupby(ordered, key=lambda r: r["topic"])]


class OutboxRelay:
    def __init__(self, engine: AsyncEngine, producer: EventProducer, *, batch_size: int,
                 poll_seconds: float) -> None:
        self.engine = engine
        self.producer = producer
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Called after a commit that wrote events: publish now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self._run_as_leader()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the relay must outlive outages
                log.warning("outbox relay interrupted (%s: %s); restarting", type(exc).__name__,
                            exc)
                await asyncio.sleep(1)

    async def _run_as_leader(self) -> None:
        async with self.engine.connect() as lock_conn:
            while not (await lock_conn.execute(
                    text("SELECT pg_try_advisory_lock(:id)"), {"id": RELAY_LOCK_ID})).scalar():
                await lock_conn.commit()
                await asyncio.sleep(self.poll_seconds * 4)
            await lock_conn.commit()
            try:
                while True:
                    published = await self.publish_batch()
                    if published < self.batch_size:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                        self._wake.clear()
            finally:
                with contextlib.suppress(Exception):
                    await lock_conn.execute(text("SELECT pg_advisory_unlock(:id)"),
                                            {"id": RELAY_LOCK_ID})

    async def publish_batch(self) -> int:
        async with self.engine.begin() as conn:
            # Through SQLAlchemy, not the driver connection: its asyncpg adapter opens the
            # transaction with the first statement it runs, so the deletion can roll back.
            rows = (await conn.execute(CLAIM_BATCH, {"limit": self.batch_size})
                    ).mappings().all()
            if not rows:
                return 0
            futures = []
            for topic, records in records_by_topic(rows):
                futures += await self.producer.send(topic, records)
            # Every one acknowledged before the deletion commits; any failure rolls it back.
            await asyncio.gather(*futures)
        PUBLISHED.inc(len(rows))
        return len(rows)
