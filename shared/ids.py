"""Deterministic ids: the same natural key always gives the same id."""

from __future__ import annotations

import hashlib
import uuid

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
