"""Deterministic ids: the fast uuid5 gives exactly the standard library's values."""

from __future__ import annotations

import uuid

import pytest

from shared import ids


@pytest.mark.parametrize("name", ["", "agency|ministry of justice", "assignment|a|b",
                                  "recommendation|\u0430\u043a\u0438\u043c\u0430\u0442|97.12",
                                  "x" * 5000])
def test_the_fast_uuid5_equals_the_standard_one(name: str) -> None:
    made = ids._uuid5(name)  # noqa: SLF001 - the helper under test
    expected = uuid.uuid5(ids.HRTRACK_NAMESPACE, name)
    assert made == expected and made.int == expected.int
    assert str(made) == str(expected) and hash(made) == hash(expected)
    assert (made.version, made.variant) == (5, uuid.RFC_4122)
    assert made.bytes == expected.bytes and isinstance(made, uuid.UUID)
    assert {expected: 1}[made] == 1 and made in {expected}


def test_the_public_ids_are_uuid5_of_their_names() -> None:
    rec, agency = uuid.uuid4(), uuid.uuid4()
    assert ids.assignment_id(rec, agency) == uuid.uuid5(ids.HRTRACK_NAMESPACE,
                                                        f"assignment|{rec}|{agency}")
    assert ids.agency_id("ministry of justice") == uuid.uuid5(
        ids.HRTRACK_NAMESPACE, "agency|ministry of justice")
    assert ids.recommendation_id("KAZ", " 2 ", "97.12") == uuid.uuid5(
        ids.HRTRACK_NAMESPACE, "recommendation|kaz|2|97.12")
