"""EventProducer against the real broker: placement, order, headers, acknowledgements."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY

from shared.kafka import EventProducer, OutgoingRecord, ensure_topics
from tests.conftest import Infra, unique
from tests.helpers import read_records


async def test_records_land_where_the_default_partitioner_puts_them_in_order(
        infra: Infra) -> None:
    topic = unique("producer")
    await ensure_topics(infra.bootstrap, [topic])
    producer = EventProducer(infra.bootstrap, "test", max_batch_bytes=64 * 1024)
    acked_before = acked(topic)
    await producer.start()
    try:
        keys = [str(uuid.uuid4()).encode() for _ in range(40)]
        # 3,000 records of about 1 KB: several batches per partition (64 KB each).
        sent = [(keys[i % len(keys)], f"{i:06d}".encode() + b"x" * 1000,
                 [("x-seq", str(i).encode())]) for i in range(3000)]
        futures = await producer.send(topic, sent)
        assert len(futures) == len(sent)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    received = await read_records(infra.bootstrap, topic, len(sent))
    assert len(received) == len(sent)
    partitions = sorted({r.partition for r in received})  # type: ignore[attr-defined]
    place = DefaultPartitioner()
    per_key: dict[bytes, list[int]] = defaultdict(list)
    for record in received:
        key, value = record.key, record.value  # type: ignore[attr-defined]
        assert record.partition == place(key, list(range(6)), list(range(6)))  # type: ignore[attr-defined]
        assert int(dict(record.headers)["x-seq"]) == int(value[:6])  # type: ignore[attr-defined]
        per_key[key].append(int(value[:6]))
    assert len(partitions) > 1
    assert all(seq == sorted(seq) for seq in per_key.values()), "one key's records in order"
    assert sorted(s for seq in per_key.values() for s in seq) == list(range(3000))
    assert acked(topic) - acked_before == 3000, "every record counted once acknowledged"
    assert REGISTRY.get_sample_value("hrtrack_events_publish_duration_seconds_count",
                                     {"destination": topic}), "batches timed"


def acked(topic: str) -> float:
    return REGISTRY.get_sample_value("hrtrack_events_published_total",
                                     {"destination": topic, "status": "acked"}) or 0.0


async def test_a_record_larger_than_a_batch_goes_in_a_batch_of_its_own(infra: Infra) -> None:
    topic = unique("producer")
    await ensure_topics(infra.bootstrap, [topic])
    producer = EventProducer(infra.bootstrap, "test", max_batch_bytes=16 * 1024)
    await producer.start()
    try:
        sent: list[OutgoingRecord] = [(b"k", b"small-1", []), (b"k", b"x" * 40_000, []),
                                      (b"k", b"small-2", [])]
        await asyncio.gather(*await producer.send(topic, sent))
    finally:
        await producer.stop()
    received = await read_records(infra.bootstrap, topic, 3)
    assert [r.value for r in received] == [v for _, v, _ in sent]  # type: ignore[attr-defined]
