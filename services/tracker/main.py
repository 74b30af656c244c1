"""The tracker's composition root: broker, database, consumer, outbox relay, HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.tracker.api import router
from services.tracker.consumer import RecommendationConsumer
from services.tracker.outbox import OutboxRelay
from services.tracker.settings import TrackerSettings
from shared.clock import Clock
from shared.db import make_engine, make_sessionmaker, ping
from shared.kafka import make_broker, wait_for_broker, watch_consumer_lag
from shared.settings import TOPIC_RECOMMENDATIONS
from shared.web import configure_logging, create_app, supervised

log = logging.getLogger("hrtrack.tracker")


def build_app(settings: TrackerSettings | None = None) -> FastAPI:
    settings = settings or TrackerSettings()
    configure_logging(settings.log_level)
    clock = Clock(settings.clock)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    broker = make_broker(settings.kafka_bootstrap, "tracker")
    relay = OutboxRelay(engine, broker, batch_size=settings.outbox_batch_size,
                        poll_seconds=settings.outbox_poll_seconds)
    RecommendationConsumer(broker, sessions, settings, clock, on_commit=relay.notify).register()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def run() -> None:
            await wait_for_broker(settings.kafka_bootstrap, timeout=float("inf"))
            await broker.start()
            app.state.broker_connected = True
            await asyncio.gather(
                relay.run(),
                watch_consumer_lag(settings.kafka_bootstrap, settings.consumer_group,
                                   [TOPIC_RECOMMENDATIONS]),
            )

        background = asyncio.create_task(supervised("consumer and relay", run()))
        try:
            yield
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await background
            await broker.stop()
            await engine.dispose()

    async def broker_ready() -> None:
        if not app.state.broker_connected or not await broker.ping(2):
            raise ConnectionError("broker unreachable")

    async def database_ready() -> None:
        await ping(engine)

    app = create_app(
        service="tracker",
        description="Implementation state of every recommendation per executor agency.",
        lifespan=lifespan,
        readiness=lambda _app: [("broker", broker_ready), ("database", database_ready)],
    )
    app.state.settings = settings
    app.state.token_secret = settings.token_secret.get_secret_value()
    app.state.sessions = sessions
    app.state.engine = engine
    app.state.broker = broker
    app.state.broker_connected = False
    app.state.relay = relay
    app.state.clock = clock
    app.include_router(router)
    return app


app = build_app()
