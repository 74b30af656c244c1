"""Ids: the fast uuid5 gives exactly the standard library's values; random ids are uuid4s."""

from __future__ import annotations

import os
import threading
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


def test_random_ids_are_version_4_and_never_repeat() -> None:
    made = [ids.random_uuid() for _ in range(5 * 1024 + 7)]  # several buffer refills
    assert len(set(made)) == len(made)
    assert {(u.version, u.variant) for u in made} == {(4, uuid.RFC_4122)}
    assert all(type(u) is uuid.UUID for u in made)


def test_threads_draw_different_random_ids() -> None:
    made: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def draw(into: list[uuid.UUID]) -> None:
        into.extend(ids.random_uuid() for _ in range(3000))

    workers = [threading.Thread(target=draw, args=(into,)) for into in made]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    every = [u for into in made for u in into]
    assert len(every) == 12_000 and len(set(every)) == len(every)


def test_a_forked_child_does_not_repeat_its_parents_buffered_ids() -> None:
    ids.random_uuid()  # the buffer is filled: the child inherits the rest of it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once, whatever happens
        try:
            os.write(write, ids.random_uuid().bytes)
        finally:
            os._exit(0)
    os.close(write)
    child = uuid.UUID(bytes=os.read(read, 16))
    os.close(read)
    os.waitpid(pid, 0)
    assert child != ids.random_uuid()
