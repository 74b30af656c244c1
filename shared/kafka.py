"""Kafka plumbing shared by the services: broker factory, topics, dead letters, lag."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from shared.metrics import (
    CONSUMER_LAG,
    DEAD_LETTERS,
    EVENTS_PUBLISH_DURATION,
    EVENTS_PUBLISH_ERRORS,
    EVENTS_PUBLISHED,
    kafka_middleware,
)
from shared.settings import ALL_TOPICS, dead_letter_topic

log = logging.getLogger(__name__)

MAIN_TOPIC_PARTITIONS = 6


def make_broker(bootstrap: str, app_name: str) -> KafkaBroker:
    # acks="all" so a publish is acknowledged only once the broker has stored it;
    # no idempotent producer: the dev broker (tansu) does not support InitProducerId.
    return KafkaBroker(
        bootstrap,
        client_id=f"hrtrack-{app_name}",
        acks="all",
        linger_ms=5,
        max_batch_size=1024 * 1024,
        request_timeout_ms=10_000,
        middlewares=[kafka_middleware(app_name)],
        logger=logging.getLogger(f"hrtrack.{app_name}.kafka"),
    )


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{n}I") for n in range(64)]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (what its default partitioner hashes keys with), equal to aiokafka's
    `murmur2` for every input (tests/unit/test_kafka_partitioner.py) at half its cost: the
    key's 4-byte words are unpacked at once instead of assembled byte by byte."""
    length = len(data)
    h = 0x9747B28C ^ length
    n = length // 4
    for k in (_WORDS[n] if n < 64 else struct.Struct(f"<{n}I")).unpack_from(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest:
        tail = length & ~3
        if rest >= 3:
            h ^= data[tail + 2] << 16
        if rest >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


def partition_of(key: bytes, partitions: list[int]) -> int:
    """Kafka's default partitioner for a keyed record (as aiokafka's and Java's)."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


Header = tuple[str, bytes]
OutgoingRecord = tuple[bytes, bytes, list[Header]]  # key, value, headers
JSON_CONTENT: Header = ("content-type", b"application/json")


def json_record(key: str, payload: str, event_id: object) -> OutgoingRecord:
    """An event as a record: keyed, JSON, its id also in a header (read without decoding)."""
    return key.encode(), payload.encode(), [JSON_CONTENT, ("x-event-id", str(event_id).encode())]


class EventProducer:
    """Publishes many records at once, one batch per partition, with aiokafka directly.

    The hot paths (intake's batches, the tracker's outbox relay) send thousands of records
    at a time; building partition batches here costs a few microseconds per record, where a
    send() per record through FastStream's publisher costs about a hundred. Keys are placed
    with Kafka's default partitioner (murmur2), as every other producer places them, so one
    key's events stay on one partition whoever publishes them. acks=all: a future resolves
    once the broker has stored its batch.
    """

    def __init__(self, bootstrap: str, client_id: str, *, request_timeout_ms: int = 10_000,
                 linger_ms: int = 5, max_batch_bytes: int = 1024 * 1024) -> None:
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap, "client_id": client_id, "acks": "all",
            "linger_ms": linger_ms, "max_batch_size": max_batch_bytes,
            "max_request_size": max_batch_bytes * 2, "request_timeout_ms": request_timeout_ms}
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect (aiokafka wants its running loop, so this is not done in __init__)."""
        producer = AIOKafkaProducer(**self._options)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def ping(self) -> None:
        """Raises unless started and the broker answers a metadata request (readiness)."""
        if self._producer is None:
            raise ConnectionError("the producer is not connected")
        await self._producer.client.fetch_all_metadata()

    async def send(self, topic: str, records: Iterable[OutgoingRecord]
                   ) -> list[asyncio.Future[object]]:
        """Queue the records; one delivery future per record, in the records' order.

        Records of one partition keep their order (they go in order into that partition's
        batches). Raises if the producer cannot take them (stopped, no metadata).
        """
        producer = self._producer
        if producer is None:
            raise ConnectionError("the producer is not connected")
        await producer.client._wait_on_metadata(topic)  # noqa: SLF001 - as send() does
        every = sorted(producer.client.cluster.partitions_for_topic(topic) or ())
        open_batches: dict[int, tuple[Any, list[int]]] = {}
        futures: list[asyncio.Future[object] | None] = []
        pending: list[tuple[Any, int, list[int]]] = []
        for key, value, headers in records:
            partition = partition_of(key, every)
            batch, members = open_batches.get(partition) or (producer.create_batch(), [])
            if batch.append(key=key, value=value, timestamp=None,
                            headers=headers) is None:
                pending.append((batch, partition, members))
                batch, members = producer.create_batch(), []
                # An empty batch takes any record, one larger than the batch size too.
                batch.append(key=key, value=value, timestamp=None, headers=headers)
            members.append(len(futures))
            futures.append(None)
            open_batches[partition] = (batch, members)
        pending += [(b, p, m) for p, (b, m) in open_batches.items()]
        for batch, partition, members in pending:
            batch.close()
            delivered = await producer.send_batch(batch, topic, partition=partition)
            delivered.add_done_callback(_count_outcome(topic, len(members), time.monotonic()))
            for index in members:
                futures[index] = delivered
        return [f for f in futures if f is not None]


def _count_outcome(topic: str, records: int, sent_at: float
                   ) -> Callable[[asyncio.Future[object]], None]:
    """Metrics of one batch once the broker answered (or the send failed)."""
    def done(future: asyncio.Future[object]) -> None:
        if future.cancelled() or future.exception() is not None:
            error = "Cancelled" if future.cancelled() else type(future.exception()).__name__
            EVENTS_PUBLISHED.labels(destination=topic, status="failed").inc(records)
            EVENTS_PUBLISH_ERRORS.labels(destination=topic, exception_type=error).inc(records)
            return
        EVENTS_PUBLISHED.labels(destination=topic, status="acked").inc(records)
        EVENTS_PUBLISH_DURATION.labels(destination=topic).observe(time.monotonic() - sent_at)
    return done


async def ensure_topics(bootstrap: str, topics: Iterable[str] = ALL_TOPICS) -> None:
    """Create the main topics and their dead-letter topics (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        wanted = []
        for topic in topics:
            wanted.append(NewTopic(topic, MAIN_TOPIC_PARTITIONS, 1))
            wanted.append(NewTopic(dead_letter_topic(topic), 1, 1))
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def wait_for_broker(bootstrap: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await ensure_topics(bootstrap)
            return
        except (KafkaError, OSError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.info("broker not ready yet (%s), retrying", exc)
            await asyncio.sleep(0.5)


def error_headers(error: BaseException | str, source_topic: str) -> dict[str, str]:
    if isinstance(error, BaseException):
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        kind = type(error).__name__
    else:
        detail, kind = error, "InvalidMessage"
    return {
        "x-error-type": kind,
        "x-error-message": detail[:4000],
        "x-source-topic": source_topic,
    }


async def send_to_dead_letters(
    broker: KafkaBroker,
    source_topic: str,
    body: bytes,
    key: bytes | None,
    error: BaseException | str,
    extra_headers: dict[str, str] | None = None,
) -> None:
    """Park a message that can never be processed, with the reason in its headers."""
    headers = {**error_headers(error, source_topic), **(extra_headers or {})}
    await broker.publish(body, topic=dead_letter_topic(source_topic), key=key, headers=headers)
    DEAD_LETTERS.labels(topic=source_topic).inc()
    log.warning(
        "message sent to %s: %s", dead_letter_topic(source_topic), headers["x-error-message"]
    )


async def consumer_lag(bootstrap: str, group: str, topic: str) -> int:
    """End offsets minus the group's committed offsets, summed over partitions."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return 0
        ends = await consumer.end_offsets(tps)
        lag = 0
        for tp in tps:
            committed = await consumer.committed(tp)
            lag += max(0, ends[tp] - (committed or 0))
        return lag
    finally:
        await consumer.stop()


async def watch_consumer_lag(
    bootstrap: str, group: str, topics: list[str], interval: float = 15.0
) -> None:
    """Background task: export consumer lag per topic for this service's group."""
    while True:
        for topic in topics:
            try:
                CONSUMER_LAG.labels(topic=topic, group=group).set(
                    await consumer_lag(bootstrap, group, topic)
                )
            except Exception as exc:  # noqa: BLE001 - a metrics probe must never kill the service
                log.debug("lag probe failed for %s: %s", topic, exc)
        await asyncio.sleep(interval)
