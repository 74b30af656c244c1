"""The acknowledgement contract when the broker is away: 503 with Retry-After, and nothing
listed as accepted that the broker did not acknowledge."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from hrtrack.stack import Broker, free_port
from services.intake.main import build_app
from services.intake.settings import IntakeSettings
from shared.kafka import wait_for_broker
from tests.conftest import Infra, running, unique
from tests.helpers import eventually

ITEMS = [{"source": "plan", "plan": "P-unreachable", "chapter": "C", "number": str(n),
          "text": "Study.", "deadline": "2011"} for n in range(1, 4)]


@contextlib.asynccontextmanager
async def started(settings: IntakeSettings, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan without waiting for readiness (it never gets ready here)."""
    app = build_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60,
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        yield client


async def not_acknowledged(client: httpx.AsyncClient) -> float:
    name = 'hrtrack_intake_items_total{outcome="not_acknowledged",source="plan"} '
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(name):
            return float(line.removeprefix(name))
    raise AssertionError(f"{name} not exported")


def assert_503_nothing_accepted(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    answer = response.json()
    assert answer["accepted"] == [] and answer["count"] == 0
    assert len(answer["not_acknowledged"]) == len(ITEMS)
    assert "did not acknowledge" in answer["detail"]


async def test_broker_never_reachable_gives_503(infra: Infra) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = IntakeSettings(**{**infra.env(), "kafka_bootstrap": closed})
    async with started(settings, infra.coordinator_token()) as client:
        assert (await client.get("/readyz")).status_code == 503
        response = await client.post("/v1/recommendations", json={"items": ITEMS})
        assert_503_nothing_accepted(response)
        single = await client.post("/v1/recommendations", json=ITEMS[0])
        assert single.status_code == 503 and "id" not in single.json()


async def test_broker_gone_after_connecting_gives_503_then_back(
    infra: Infra, tmp_path: Path
) -> None:
    broker = Broker(free_port(), tmp_path / "broker.log")
    broker.start()
    try:
        settings = IntakeSettings(**{**infra.env(), "kafka_bootstrap": broker.bootstrap},
                                  publish_timeout_seconds=3)
        async with running(build_app(settings), infra.coordinator_token()) as client:
            items = [{**item, "plan": unique("P")} for item in ITEMS]
            ok = await client.post("/v1/recommendations", json={"items": items})
            assert ok.status_code == 202, ok.text
            assert broker.process is not None
            broker.process.stop(sig=signal.SIGKILL)  # gone at once, as in a crash
            before = await not_acknowledged(client)
            response = await client.post("/v1/recommendations", json={"items": ITEMS})
            assert_503_nothing_accepted(response)
            assert await not_acknowledged(client) == before + len(ITEMS)
            # The broker back (empty: memory storage), the same request is accepted.
            broker.start()
            await wait_for_broker(broker.bootstrap)

            async def accepted() -> httpx.Response | None:
                again = await client.post("/v1/recommendations", json={"items": ITEMS})
                return again if again.status_code == 202 else None

            again = await eventually(accepted, timeout=60, what="202 once the broker is back")
            assert again.json()["count"] == len(ITEMS)
    finally:
        broker.stop()
