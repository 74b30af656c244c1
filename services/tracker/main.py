"""The tracker's composition root: broker, database, consumer, outbox relay, HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.tracker.agencies import read_directory, seed_directory
from services.tracker.api import router
from services.tracker.consumer import RecommendationConsumer
from services.tracker.metrics import preinitialize, refresh_forever
from services.tracker.outbox import OutboxRelay
from services.tracker.repository import TrackerRepository
from services.tracker.settings import TrackerSettings
from shared.clock import Clock
from shared.db import make_engine, make_sessionmaker, ping
from shared.kafka import (
    EventProducer,
    ensure_topics,
    make_broker,
    wait_for_broker,
    watch_consumer_lag,
)
from shared.retry import retry_transient
from shared.web import configure_logging, create_app, supervised

log = logging.getLogger("hrtrack.tracker")


def build_app(settings: TrackerSettings | None = None) -> FastAPI:
    settings = settings or TrackerSettings()
    configure_logging(settings.log_level)
    preinitialize()
    clock = Clock(settings.clock)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    broker = make_broker(settings.kafka_bootstrap, "tracker")
    producer = EventProducer(settings.kafka_bootstrap, "hrtrack-tracker")
    relay = OutboxRelay(engine, producer, batch_size=settings.outbox_batch_size,
                        poll_seconds=settings.outbox_poll_seconds)
    consumer = RecommendationConsumer(broker, sessions, settings, clock, producer,
                                      on_commit=relay.notify)
    consumer.register()

    async def seed() -> None:
        """The directory goes in before the first message, so names resolve through it."""
        if settings.directory_file is None:
            return
        try:
            entries = read_directory(settings.directory_file)
        except Exception:  # noqa: BLE001 - the directory can still be loaded over HTTP
            log.exception("cannot read the agency directory %s", settings.directory_file)
            return

        async def once() -> None:
            async with sessions() as session, session.begin():
                repo = TrackerRepository(session, consumer.topics)
                result = await seed_directory(repo, entries)
                await repo.flush()
            if result.created or result.updated:
                log.info("agency directory: %d created, %d updated", len(result.created),
                         len(result.updated))
            relay.notify()

        try:
            await retry_transient(once, what="seeding the agency directory",
                                  max_delay=settings.db_retry_max_seconds)
        except Exception:  # noqa: BLE001 - the directory can still be loaded over HTTP
            log.exception("seeding the agency directory from %s failed", settings.directory_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def run() -> None:
            await wait_for_broker(settings.kafka_bootstrap, timeout=float("inf"))
            await ensure_topics(settings.kafka_bootstrap, sorted(
                {t for t in (consumer.topics.recommendations, consumer.topics.assignments,
                             consumer.topics.agencies)}))
            await seed()
            await producer.start()  # before the consumers, which publish with it
            await broker.start()
            app.state.broker_connected = True
            await asyncio.gather(
                relay.run(),
                watch_consumer_lag(settings.kafka_bootstrap, settings.consumer_group,
                                   [consumer.topic]),
            )

        background = [
            asyncio.create_task(supervised("consumer and relay", run())),
            asyncio.create_task(supervised("metrics", refresh_forever(
                engine, clock, settings.metrics_refresh_seconds))),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await broker.stop()
            await producer.stop()
            await engine.dispose()

    async def broker_ready() -> None:
        if not app.state.broker_connected or not producer.started or not await broker.ping(2):
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
    app.state.topics = consumer.topics
    app.include_router(router)
    return app


app = build_app()
