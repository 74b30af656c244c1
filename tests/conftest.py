"""Real parts for the integration and end-to-end tests, started once per session.

The broker (tansu), PostgreSQL and an SMTP sink run as child processes on free ports;
the migrations run once. Each test isolates itself with its own ids and consumer groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from hrtrack.devstack import migrate
from hrtrack.stack import Broker, Postgres, SmtpSink, free_port
from shared.auth import Role, create_token

ROOT = Path(__file__).resolve().parent.parent
PLAN_FILE = ROOT / "data" / "national-action-plan-2009-2012.txt"


@dataclass
class Infra:
    broker: Broker
    postgres: Postgres
    smtp: SmtpSink
    secret: str

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def mail_dir(self) -> Path:
        return self.smtp.mail_dir

    def env(self) -> dict[str, Any]:
        return {"kafka_bootstrap": self.bootstrap, "database_url": self.database_url,
                "token_secret": self.secret, "kafka_session_timeout_ms": 2000,
                "kafka_heartbeat_interval_ms": 300}

    def coordinator_token(self) -> str:
        return create_token(self.secret, Role.COORDINATOR, subject="test-coordinator")

    def agency_token(self, agency_id: uuid.UUID) -> str:
        return create_token(self.secret, Role.AGENCY, agency_id=agency_id)


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    base = tmp_path_factory.mktemp("stack")
    broker = Broker(free_port(), base / "logs" / "broker.log")
    postgres = Postgres(base / "pg", free_port(), base / "logs" / "postgres.log")
    smtp = SmtpSink(free_port(), base / "mail", base / "logs" / "smtp.log")
    parts: list[Broker | Postgres | SmtpSink] = [broker, postgres, smtp]
    try:
        for part in parts:
            part.start()
        from shared.kafka import wait_for_broker

        asyncio.run(wait_for_broker(broker.bootstrap))
        migrate(postgres.url)
        yield Infra(broker, postgres, smtp, secrets.token_urlsafe(32))
    finally:
        for part in reversed(parts):
            part.stop()


@contextlib.asynccontextmanager
async def running(app: FastAPI, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan (broker, consumers, background tasks) and talk to it in-process."""
    async with app.router.lifespan_context(app):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     headers=headers, timeout=60) as client:
            await wait_ready(client)
            yield client


async def wait_ready(client: httpx.AsyncClient, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await client.get("/readyz")
        if response.status_code == 200:
            return
        if loop.time() > deadline:
            raise AssertionError(f"service not ready: {response.text}")
        await asyncio.sleep(0.1)


# Consumer groups rejoin quickly after a restart; no scheduled passes in the way of tests.
STACK_TEST_ENV = {"HRTRACK_KAFKA_SESSION_TIMEOUT_MS": "2000",
                  "HRTRACK_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
                  "HRTRACK_PASS_INTERVAL_SECONDS": "0"}


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
