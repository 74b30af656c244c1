"""Publishes recommendation events and reports exactly which ones the broker acknowledged."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from faststream.kafka import KafkaBroker

from services.intake.domain import Submission
from shared.events import RecommendationEvent
from shared.kafka import JSON_CONTENT, EventProducer, Header, OutgoingRecord
from shared.settings import TOPIC_RECOMMENDATIONS

log = logging.getLogger(__name__)

SCHEMA_HEADER = "hrtrack.recommendation.v1"
HEADERS: list[Header] = [JSON_CONTENT, ("x-schema", SCHEMA_HEADER.encode())]


@dataclass
class PublishOutcome:
    acknowledged: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    error: str | None = None


def declare_publisher(broker: KafkaBroker, topic: str = TOPIC_RECOMMENDATIONS) -> Any:
    """The `recommendations` publisher, declared so FastStream's AsyncAPI documents it
    (the events themselves go out through `RecommendationPublisher`)."""
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


# --- records ----------------------------------------------------------------------------------


def encode_records(events: Iterable[Submission]) -> list[OutgoingRecord]:
    """(key, value, headers) of each event: keyed by recommendation id."""
    return [(str(e.recommendation_id).encode(), e.to_json(), HEADERS) for e in events]


# --- publishing -------------------------------------------------------------------------------


def _consume_result(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved, so asyncio does not log it as never retrieved


def _delivered(fut: asyncio.Future[Any]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None


class RecommendationPublisher:
    """Sends a request's events in one go (one batch per partition, acks=all)."""

    def __init__(self, producer: EventProducer, topic: str, timeout: float) -> None:
        self.producer = producer
        self.topic = topic
        self.timeout = timeout

    async def publish(self, events: list[Submission]) -> PublishOutcome:
        """Send every event, then wait for each acknowledgement (acks=all).

        An id is reported acknowledged only once its own delivery future resolved (the
        future of the partition batch it went in). Any failure, timeout included, leaves
        the rest reported as not acknowledged: a client may safely re-post them all.
        """
        outcome = PublishOutcome()
        if not self.producer.started:
            outcome.failed = [e.recommendation_id for e in events]
            outcome.error = "not connected to the broker yet"
            return outcome
        futures: list[asyncio.Future[object]] = []
        try:
            async with asyncio.timeout(self.timeout):
                futures = await self.producer.send(self.topic, encode_records(events))
                # One future per partition batch, shared by the records in it.
                await asyncio.gather(*dict.fromkeys(futures), return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - whatever it was, those items are not acked
            outcome.error = f"{type(exc).__name__}: {exc}"
        waiting: set[asyncio.Future[object]] = set()
        for event, fut in zip(events, futures, strict=False):
            if _delivered(fut):
                outcome.acknowledged.append(event.recommendation_id)
                continue
            outcome.failed.append(event.recommendation_id)
            if fut.done() and not fut.cancelled():
                outcome.error = outcome.error or f"{type(fut.exception()).__name__}"
            elif fut not in waiting:  # still pending after the timeout: no longer awaited
                waiting.add(fut)
                fut.add_done_callback(_consume_result)
        # Events the producer never took (it raised before handing out their futures).
        outcome.failed += [e.recommendation_id for e in events[len(futures):]]
        if outcome.failed:
            log.warning("broker did not acknowledge %d of %d items: %s",
                        len(outcome.failed), len(events), outcome.error)
        return outcome
