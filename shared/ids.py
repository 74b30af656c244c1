"""Ids: deterministic ones (the same natural key always gives the same id) and random
event ids."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterable, Iterator

from asyncpg.pgproto.pgproto import UUID as FastUUID

HRTRACK_NAMESPACE = uuid.UUID("6f1d7c2e-3b9a-5e44-9a0c-2d7f1e8b4c10")
_NAMESPACE = HRTRACK_NAMESPACE.bytes


def _uuid5(name: str) -> uuid.UUID:
    """``uuid.uuid5(HRTRACK_NAMESPACE, name)`` as asyncpg's UUID: a ``uuid.UUID`` subclass,
    equal to it and hashing alike, whose hashing, ``str`` and encoding run in C (the tracker
    makes two per assignment, thousands per batch, and hashes and prints each several times).
    orjson does not know the subclass: encode with ``default=str``."""
    digest = bytearray(hashlib.sha1(_NAMESPACE + name.encode()).digest()[:16])
    digest[6] = digest[6] & 0x0F | 0x50  # version 5
    digest[8] = digest[8] & 0x3F | 0x80  # RFC 4122 variant
    return FastUUID(bytes(digest))


def _key(*parts: object) -> str:
    return "|".join(str(p).strip().casefold() for p in parts)


def recommendation_id(*natural_key: object) -> uuid.UUID:
    return uuid.uuid5(HRTRACK_NAMESPACE, "recommendation|" + _key(*natural_key))


def agency_id(agency_key: str) -> uuid.UUID:
    return uuid.uuid5(HRTRACK_NAMESPACE, "agency|" + agency_key)


def assignment_id(recommendation: uuid.UUID, agency: uuid.UUID) -> uuid.UUID:
    return _uuid5(f"assignment|{recommendation}|{agency}")


def assignment_event_id(assignment: uuid.UUID, version: int, event_type: str) -> uuid.UUID:
    """An assignment event's id: one per version of the assignment and event type (a report
    announces the report and the status change it makes, both of one version). Announcing
    the same again (after a crash) repeats the id, so consumers can drop the copy."""
    return _uuid5(f"assignment-event|{assignment}|{version}|{event_type}")


def assignments_changed_id(change_event_ids: Iterable[uuid.UUID]) -> uuid.UUID:
    """An `AssignmentsChanged` event's id: one per set of assignment states it announces
    (their event ids, in any order: a change announced again from the stored rows lists
    them in another), so announcing the same again repeats it too."""
    return _uuid5("assignments-changed|" + "|".join(sorted(map(str, change_event_ids))))


_IDS_PER_READ = 1024
_buffers = threading.local()


def _random_blocks() -> Iterator[bytes]:
    pool = os.urandom(16 * _IDS_PER_READ)
    return (pool[i:i + 16] for i in range(0, len(pool), 16))


def random_uuid() -> uuid.UUID:
    """A random (version 4) UUID like ``uuid.uuid4()``, its randomness read from the system
    1,024 ids at a time (per thread) instead of once per id.

    ``os.urandom`` releases the GIL: intake makes an event id per item in a worker thread,
    and every call let the event loop take the GIL, the worker waiting for it to come back.
    """
    try:
        block = next(_buffers.blocks)
    except (AttributeError, StopIteration):
        _buffers.blocks = _random_blocks()
        block = next(_buffers.blocks)
    return uuid.UUID(bytes=block, version=4)


def _forget_buffers() -> None:
    # A forked child must not hand out the ids its parent has left in a buffer (whichever
    # thread forked).
    global _buffers
    _buffers = threading.local()


os.register_at_fork(after_in_child=_forget_buffers)
