"""Consumes recommendation events in batches: validate, store, announce, commit offsets.

A batch is stored in one transaction; once it has committed, its assignment events (one
AssignmentsChanged per recommendation change) are published, and only once the broker has
acknowledged them are the offsets committed. A crash anywhere in between re-delivers the
batch: the idempotent upsert makes the re-delivery change nothing, and an event whose change
was already committed announces its assignments' current state again (same event ids), so
no announcement is lost. A message that can never
be stored goes to the dead-letter topic and the batch goes on. While the database or the
broker is down the handler waits (nothing committed, nothing dropped); any other failure
rewinds the batch so it is read again, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.tracker.metrics import INGESTED
from services.tracker.repository import Topics, TrackerRepository
from services.tracker.settings import TrackerSettings
from shared.clock import Clock
from shared.events import RecommendationEvent
from shared.kafka import EventProducer, OutgoingRecord, send_to_dead_letters
from shared.retry import is_transient_db_error, retry_transient

log = logging.getLogger(__name__)
REWIND_PAUSE_SECONDS = 1.0


def raw_bodies(msg: Any) -> Any:
    """Hand the handler the undecoded bytes: decoding is ours, so poison can be parked."""
    return msg.body


class RecommendationConsumer:
    def __init__(self, broker: KafkaBroker, sessions: async_sessionmaker,  # type: ignore[type-arg]
                 settings: TrackerSettings, clock: Clock, producer: EventProducer,
                 on_commit: Callable[[], None] = lambda: None) -> None:
        self.broker = broker
        self.producer = producer
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.on_commit = on_commit
        self.topic = settings.recommendations_topic
        self.topics = Topics(settings.recommendations_topic, settings.assignments_topic,
                             settings.agencies_topic)

    def register(self) -> None:
        """One batch consumer per worker, all in the service's group.

        The group spreads the topic's partitions over them, so while one worker waits for
        PostgreSQL another decodes its batch; a key's events stay on one partition and so
        with one worker, in order. Each worker commits only its own partitions' offsets.
        """
        for worker in range(self.settings.consumer_workers):
            subscriber = self.broker.subscriber(
                self.topic,
                group_id=self.settings.consumer_group,
                batch=True,
                max_records=self.settings.batch_max_records,
                batch_timeout_ms=100,
                fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
                auto_offset_reset="earliest",
                ack_policy=AckPolicy.MANUAL,
                session_timeout_ms=self.settings.kafka_session_timeout_ms,
                heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
                max_poll_interval_ms=30 * 60 * 1000,  # an outage is waited out in the handler
                decoder=raw_bodies,
                title="recommendations",
                description="Recommendation events from intake, stored per executor agency",
                include_in_schema=worker == 0,  # one channel in the AsyncAPI document
            )
            subscriber(self.handle)

    async def handle(self, bodies: list[bytes], msg: KafkaMessage) -> None:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        try:
            valid: list[tuple[Any, RecommendationEvent]] = []
            for record in records:
                try:
                    valid.append((record, RecommendationEvent.model_validate_json(record.value)))
                except (ValidationError, ValueError, TypeError) as exc:
                    await send_to_dead_letters(self.broker, self.topic,
                                               record.value or b"", record.key, exc)
            if valid:
                await self.announce(await self.store(valid))
            await msg.ack()
        except asyncio.CancelledError:
            raise
        except Exception:
            # With manual acks a failed batch would otherwise be skipped by the next commit:
            # seek back so it is fetched again.
            log.exception("batch of %d records failed; it will be read again", len(records))
            await msg.nack()
            await asyncio.sleep(REWIND_PAUSE_SECONDS)

    async def store(self, valid: list[tuple[Any, RecommendationEvent]]) -> list[OutgoingRecord]:
        """Store the events; the assignment events their changes announce."""
        try:
            return await retry_transient(lambda: self._store([e for _, e in valid]),
                                         what="storing recommendations",
                                         max_delay=self.settings.db_retry_max_seconds)
        except Exception as exc:
            if is_transient_db_error(exc):
                raise
            # One bad item must not block the rest: store one by one, park the failures.
            log.warning("batch of %d failed (%s: %s); storing one by one", len(valid),
                        type(exc).__name__, (str(exc).splitlines() or [""])[0])
            announcements: list[OutgoingRecord] = []
            for record, event in valid:
                try:
                    announcements += await retry_transient(
                        lambda e=event: self._store([e]),  # type: ignore[misc]
                        what="storing a recommendation",
                        max_delay=self.settings.db_retry_max_seconds)
                except Exception as item_exc:  # noqa: BLE001 - parked with its reason
                    await send_to_dead_letters(self.broker, self.topic,
                                               record.value, record.key, item_exc)
            return announcements

    async def announce(self, records: list[OutgoingRecord]) -> None:
        """Publish the committed batch's assignment events; wait until the broker has
        acknowledged every one (an outage is waited out: the batch stays unacknowledged)."""
        if not records:
            return

        async def publish() -> None:
            await asyncio.gather(*await self.producer.send(self.topics.assignments, records))

        await retry_transient(publish, what="announcing assignments",
                              max_delay=self.settings.db_retry_max_seconds,
                              is_transient=lambda exc: True)

    async def _store(self, events: list[RecommendationEvent]) -> list[OutgoingRecord]:
        async with self.sessions() as session, session.begin():
            repo = TrackerRepository(session, self.topics)
            result = await repo.ingest(events, self.clock.today())
            await repo.flush()
        if result.agencies_created:
            log.info("new agencies to review: %s", ", ".join(result.agencies_created))
        INGESTED.labels(outcome="changed").inc(result.recommendations_changed)
        INGESTED.labels(outcome="unchanged").inc(result.recommendations_unchanged)
        INGESTED.labels(outcome="stale").inc(result.recommendations_stale)
        if result.recommendations_restated:
            log.info("%d re-delivered recommendations: their assignments announced again",
                     result.recommendations_restated)
        self.on_commit()
        return repo.announcements
