"""The outbox relay: publishes committed events in order, then marks them published.

One relay at a time holds a PostgreSQL advisory lock, so events of one key are never
published out of order by two replicas. A crash between publish and mark re-publishes
a few events; consumers deduplicate them by event_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from faststream.kafka import KafkaBroker
from prometheus_client import Counter
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.tracker.models import OutboxEvent

log = logging.getLogger(__name__)
OUTBOX = OutboxEvent.__table__  # type: ignore[attr-defined]
RELAY_LOCK_ID = 0x6872_7472  # "hrtr"

PUBLISHED = Counter("hrtrack_outbox_published", "Outbox events published")


class OutboxRelay:
    def __init__(self, engine: AsyncEngine, broker: KafkaBroker, *, batch_size: int,
                 poll_seconds: float) -> None:
        self.engine = engine
        self.broker = broker
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
            rows = (await conn.execute(
                select(OUTBOX.c.id, OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.payload,
                       OUTBOX.c.event_id)
                .where(OUTBOX.c.published_at.is_(None)).order_by(OUTBOX.c.id)
                .limit(self.batch_size))).all()
            if not rows:
                return 0
            futures = []
            for row in rows:
                futures.append(await self.broker.publish(
                    row.payload.encode(), topic=row.topic, key=row.key.encode(),
                    headers={"content-type": "application/json",
                             "x-event-id": str(row.event_id)},
                    no_confirm=True))
            await asyncio.gather(*futures)  # every one acknowledged before marking
            # One array parameter, not an IN list of thousands of literals.
            await conn.execute(
                text("UPDATE tracker.outbox SET published_at = :now WHERE id = ANY(:ids)"),
                {"now": datetime.now(UTC), "ids": [r.id for r in rows]})
        PUBLISHED.inc(len(rows))
        return len(rows)
