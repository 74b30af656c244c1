"""Our murmur2 and partition choice equal aiokafka's (and so Kafka's default partitioner):
a key's events must land on the same partition whoever publishes them."""

from __future__ import annotations

import random
import uuid

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from shared.kafka import murmur2, partition_of


def keys() -> list[bytes]:
    rng = random.Random(7)
    return ([str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(5000)]
            + [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
               for _ in range(5000)]
            + [b"", b"a", b"ab", b"abc", "Министерство юстиции".encode()])


KEYS = keys()


def test_murmur2_equals_aiokafkas_for_every_length_and_byte() -> None:
    mismatches = [k for k in KEYS if murmur2(k) != aiokafka_murmur2(k)]
    assert mismatches == []


def test_partition_equals_the_default_partitioners() -> None:
    place = DefaultPartitioner()
    for count in (1, 3, 6, 12):
        partitions = list(range(count))
        assert [partition_of(k, partitions) for k in KEYS] == \
            [place(k, partitions, partitions) for k in KEYS]
