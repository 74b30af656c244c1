"""Publishes recommendation events and reports exactly which ones the broker acknowledged."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from shared.events import RecommendationEvent
from shared.settings import TOPIC_RECOMMENDATIONS

log = logging.getLogger(__name__)


@dataclass
class PublishOutcome:
    acknowledged: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    error: str | None = None


class RecommendationPublisher:
    def __init__(self, broker: KafkaBroker, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout

    async def publish(self, events: list[RecommendationEvent]) -> PublishOutcome:
        """Send every event, then wait for each acknowledgement (acks=all).

        Sends are pipelined (the producer batches them); each id is reported as
        acknowledged only once its own delivery future resolved.
        """
        outcome = PublishOutcome()
        futures: list[tuple[uuid.UUID, asyncio.Future]] = []  # type: ignore[type-arg]
        try:
            async with asyncio.timeout(self.timeout):
                for event in events:
                    fut = await self.broker.publish(
                        event.model_dump_json().encode(),
                        topic=TOPIC_RECOMMENDATIONS,
                        key=str(event.recommendation_id).encode(),
                        headers={"content-type": "application/json",
                                 "x-schema": "hrtrack.recommendation.v1"},
                        no_confirm=True,
                    )
                    futures.append((event.recommendation_id, fut))
                results = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
        except (KafkaError, OSError, TimeoutError) as exc:
            results = [f.exception() if f.done() and not f.cancelled() and f.exception()
                       else (f.result() if f.done() and not f.cancelled() else exc)
                       for _, f in futures]
            outcome.error = f"{type(exc).__name__}: {exc}"
        sent_ids = {rid for rid, _ in futures}
        for (rid, _), result in zip(futures, results, strict=True):
            if isinstance(result, BaseException):
                outcome.failed.append(rid)
                outcome.error = outcome.error or f"{type(result).__name__}: {result}"
            else:
                outcome.acknowledged.append(rid)
        outcome.failed += [e.recommendation_id for e in events
                           if e.recommendation_id not in sent_ids]
        if outcome.failed:
            log.warning("broker did not acknowledge %d of %d items: %s",
                        len(outcome.failed), len(events), outcome.error)
        return outcome
