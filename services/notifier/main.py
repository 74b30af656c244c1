"""The notifier's composition root: broker, database, consumer, scheduler, HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.notifier.api import router
from services.notifier.consumer import TrackerEventsConsumer
from services.notifier.reminders import ReminderService
from services.notifier.settings import NotifierSettings
from services.notifier.tracker_client import TrackerClient
from shared.clock import Clock
from shared.db import make_engine, make_sessionmaker, ping
from shared.kafka import ensure_topics, make_broker, wait_for_broker, watch_consumer_lag
from shared.retry import is_database_problem
from shared.web import configure_logging, create_app, supervised

log = logging.getLogger("hrtrack.notifier")


async def scheduler(reminders: ReminderService, clock: Clock, settings: NotifierSettings) -> None:
    """Passes on the service clock, and delivery retries in between. Every replica runs it:
    claims and deliveries are safe to run concurrently."""
    loop = asyncio.get_running_loop()
    next_pass = loop.time() + settings.pass_interval_seconds
    while True:
        try:
            if settings.pass_interval_seconds > 0 and loop.time() >= next_pass:
                next_pass = loop.time() + settings.pass_interval_seconds
                await reminders.run_pass(clock.today())
            else:
                await reminders.deliver_pending()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the scheduler must outlive any outage
            if is_database_problem(exc):
                # An outage: one line per retry, not a traceback every few seconds.
                log.warning("reminder work waits for the database (%s); will retry",
                            type(exc).__name__)
            else:
                log.exception("scheduled reminder work failed; will retry")
        await asyncio.sleep(settings.delivery_retry_seconds)


def build_app(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    configure_logging(settings.log_level)
    clock = Clock(settings.clock)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    broker = make_broker(settings.kafka_bootstrap, "notifier")
    TrackerEventsConsumer(broker, sessions, settings, clock).register()
    secret = settings.token_secret.get_secret_value()
    tracker = TrackerClient(settings.tracker_url, secret,
                            timeout=settings.tracker_timeout_seconds) \
        if settings.tracker_lookup and secret else None
    reminders = ReminderService(sessions, settings, tracker)
    topics = [settings.assignments_topic, settings.agencies_topic]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def run() -> None:
            await wait_for_broker(settings.kafka_bootstrap, timeout=float("inf"))
            await ensure_topics(settings.kafka_bootstrap, topics)
            await broker.start()
            app.state.broker_connected = True
            await watch_consumer_lag(settings.kafka_bootstrap, settings.consumer_group, topics)

        tasks = [asyncio.create_task(supervised("consumer", run())),
                 asyncio.create_task(scheduler(reminders, clock, settings))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await broker.stop()
            await engine.dispose()

    async def broker_ready() -> None:
        if not app.state.broker_connected or not await broker.ping(2):
            raise ConnectionError("broker unreachable")

    async def database_ready() -> None:
        await ping(engine)

    app = create_app(
        service="notifier",
        description="Reminds each agency by email before its deadlines; escalates when overdue.",
        lifespan=lifespan,
        readiness=lambda _app: [("broker", broker_ready), ("database", database_ready)],
    )
    app.state.settings = settings
    app.state.token_secret = settings.token_secret.get_secret_value()
    app.state.reminders = reminders
    app.state.clock = clock
    app.state.broker_connected = False
    app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus what it cannot see: /metrics answers Prometheus text."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    metrics = schema.get("paths", {}).get("/metrics", {}).get("get")
    if metrics:
        metrics["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    app.openapi_schema = schema
    return schema


app = build_app()
