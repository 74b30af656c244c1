"""A tracker app per test module, on the session's real broker and PostgreSQL; an engine
per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.tracker.main import build_app
from services.tracker.settings import TrackerSettings
from shared.db import make_engine
from tests.conftest import Infra, running, unique


@dataclass
class Tracker:
    app: FastAPI
    client: httpx.AsyncClient  # with a coordinator token
    settings: TrackerSettings
    infra: Infra

    @property
    def sessions(self):  # type: ignore[no-untyped-def]
        return self.app.state.sessions


@pytest.fixture(scope="module")
async def tracker(infra: Infra) -> AsyncIterator[Tracker]:
    settings = TrackerSettings(**infra.env(), consumer_group=unique("tracker"),
                               outbox_poll_seconds=0.2, metrics_refresh_seconds=1.0)
    app = build_app(settings)
    async with running(app, infra.coordinator_token()) as client:
        yield Tracker(app, client, settings, infra)


@pytest.fixture
async def engine(infra: Infra) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(infra.database_url)
    yield engine
    await engine.dispose()
