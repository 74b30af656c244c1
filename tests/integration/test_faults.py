"""Faults on the whole stack (real processes): PostgreSQL and the broker restarted mid-stream.

Every service must recover by itself; nothing acknowledged may be lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from hrtrack.devstack import DevStack
from shared.db import asyncpg_dsn
from tests.conftest import STACK_TEST_ENV
from tests.helpers import eventually


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    env = {**STACK_TEST_ENV, "HRTRACK_DB_RETRY_MAX_SECONDS": "1"}
    with DevStack(tmp_path_factory.mktemp("faults"), extra_env=env) as dev:
        yield dev


def items(plan: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"source": "plan", "plan": plan, "chapter": "Faults", "number": str(n),
             "text": f"Action {n} of {plan}", "deadline": "4th quarter 2031",
             "executors": "Ministry of Justice, Prosecutor General"}
            for n in range(start, start + count)]


async def post_all(stack: DevStack, batches: list[list[dict[str, Any]]]) -> list[str]:
    """Post each batch until the broker acknowledged it (503 means: retry later)."""
    token = stack.info()["coordinator_token"]
    accepted: list[str] = []
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                 timeout=60) as http:
        for batch in batches:
            deadline = time.monotonic() + 120
            while True:
                try:
                    answer = await http.post(f"{stack.url('intake')}/v1/recommendations",
                                             json={"items": batch})
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    accepted += answer.json()["accepted"]
                    break
                assert answer is None or answer.status_code == 503, answer.text
                assert time.monotonic() < deadline, "intake never recovered"
                await asyncio.sleep(0.5)
    return accepted


async def counts(stack: DevStack, plan: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(asyncpg_dsn(stack.info()["database_url"]))
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM tracker.recommendations WHERE payload->>'plan' = $1),"
            " (SELECT count(*) FROM tracker.assignments a JOIN tracker.recommendations r"
            "    ON r.id = a.recommendation_id WHERE r.payload->>'plan' = $1),"
            " (SELECT count(*) FROM notifier.assignments WHERE reference LIKE $1 || ' /%')",
            plan)
        return int(row[0]), int(row[1]), int(row[2])
    finally:
        await conn.close()


def log_tails(stack: DevStack, lines: int = 30) -> str:
    """The end of each service's log, to say why a recovery did not happen."""
    out = []
    for name, process in stack.services.items():
        text = process.log_path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {name} ---\n" + "\n".join(text))
    return "\n".join(out)


async def wait_stored(stack: DevStack, plan: str, expected: tuple[int, int, int]) -> None:
    seen: tuple[int, int, int] = (0, 0, 0)

    async def stored() -> bool:
        nonlocal seen
        seen = await counts(stack, plan)
        return seen == expected

    try:
        await eventually(stored, timeout=120, interval=1, what=f"{plan} stored everywhere")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; counts {seen} != {expected}\n{log_tails(stack)}") from exc


async def test_postgres_restart_mid_stream_loses_nothing(stack: DevStack) -> None:
    plan = "FAULT-PG"
    batches = [items(plan, 200, start) for start in range(0, 2000, 200)]
    posting = asyncio.create_task(post_all(stack, batches))
    await asyncio.sleep(1.0)
    assert stack.postgres is not None
    stack.postgres.stop()          # the database goes away in mid-stream ...
    await asyncio.sleep(3.0)
    stack.postgres.start()         # ... and comes back on the same port
    accepted = await posting
    assert len(set(accepted)) == 2000

    await wait_stored(stack, plan, (2000, 4000, 4000))
    async with httpx.AsyncClient(timeout=5) as http:
        for service in ("intake", "tracker", "notifier"):
            assert (await http.get(stack.url(service) + "/readyz")).status_code == 200


async def test_broker_restart_services_recover(stack: DevStack) -> None:
    """The dev broker keeps nothing across a restart; the services reconnect and go on."""
    assert stack.broker is not None
    stack.broker.stop()
    token = stack.info()["coordinator_token"]
    async with httpx.AsyncClient(timeout=60) as http:
        refused = await http.post(f"{stack.url('intake')}/v1/recommendations",
                                  json={"items": items("FAULT-BROKER-DOWN", 1)},
                                  headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 503, refused.text
    assert refused.headers.get("Retry-After")
    assert "accepted" not in refused.json() or refused.json()["accepted"] == []
    stack.broker.start()
    from shared.kafka import ensure_topics

    await ensure_topics(stack.broker.bootstrap)
    plan = "FAULT-BROKER"
    accepted = await post_all(stack, [items(plan, 100)])
    assert len(accepted) == 100

    await wait_stored(stack, plan, (100, 200, 200))
