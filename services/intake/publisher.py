"""Publishes recommendation events and reports exactly which ones the broker acknowledged."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from faststream.kafka import KafkaBroker

from shared.events import RecommendationEvent
from shared.settings import TOPIC_RECOMMENDATIONS

log = logging.getLogger(__name__)

SCHEMA_HEADER = "hrtrack.recommendation.v1"


@dataclass
class PublishOutcome:
    acknowledged: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    error: str | None = None


def declare_publisher(broker: KafkaBroker, topic: str = TOPIC_RECOMMENDATIONS) -> Any:
    """The `recommendations` publisher, declared so FastStream's AsyncAPI documents it."""
    return broker.publisher(
        topic,
        title=topic,
        description=(
            "One event per validated recommendation, keyed by recommendation id (so one "
            "recommendation's versions stay in order). Same content_hash: nothing changed. "
            f"Headers: content-type application/json, x-schema {SCHEMA_HEADER}."
        ),
        schema=RecommendationEvent,
        headers={"content-type": "application/json", "x-schema": SCHEMA_HEADER},
    )


def _consume_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved, so asyncio does not log it as never retrieved


class RecommendationPublisher:
    def __init__(self, broker: KafkaBroker, timeout: float, publisher: Any = None) -> None:
        self.broker = broker
        self.timeout = timeout
        self.publisher = publisher if publisher is not None else declare_publisher(broker)
        self.connected = False  # set by the app once the broker has started

    async def publish(self, events: list[RecommendationEvent]) -> PublishOutcome:
        """Send every event, then wait for each acknowledgement (acks=all).

        Sends are pipelined (the producer batches them); an id is reported acknowledged
        only once its own delivery future resolved. Any failure, timeout included, leaves
        the rest reported as not acknowledged: a client may safely re-post them all.
        """
        outcome = PublishOutcome()
        if not self.connected:
            outcome.failed = [e.recommendation_id for e in events]
            outcome.error = "not connected to the broker yet"
            return outcome
        futures: list[tuple[uuid.UUID, asyncio.Future[Any]]] = []
        try:
            async with asyncio.timeout(self.timeout):
                for event in events:
                    fut = await self.publisher.publish(
                        event.model_dump_json().encode(),
                        key=str(event.recommendation_id).encode(),
                        no_confirm=True,
                    )
                    futures.append((event.recommendation_id, fut))
                await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - whatever it was, those items are not acked
            outcome.error = f"{type(exc).__name__}: {exc}"
        sent = set()
        for rid, fut in futures:
            sent.add(rid)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                outcome.acknowledged.append(rid)
            else:
                outcome.failed.append(rid)
                if fut.done() and not fut.cancelled():
                    outcome.error = outcome.error or f"{type(fut.exception()).__name__}"
                else:  # still pending after the timeout: its end is no longer awaited
                    fut.add_done_callback(_consume_result)
        outcome.failed += [e.recommendation_id for e in events if e.recommendation_id not in sent]
        if outcome.failed:
            log.warning("broker did not acknowledge %d of %d items: %s",
                        len(outcome.failed), len(events), outcome.error)
        return outcome
