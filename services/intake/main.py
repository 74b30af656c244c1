"""Intake's composition root: settings, broker, HTTP app and metrics wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from services.intake.api import router
from services.intake.publisher import RecommendationPublisher
from services.intake.settings import IntakeSettings
from shared.kafka import make_broker, wait_for_broker
from shared.recommendations import (
    PlanRecommendation,
    TreatyBodyRecommendation,
    UprRecommendation,
)
from shared.web import configure_logging, create_app, supervised

log = logging.getLogger("hrtrack.intake")


class RecommendationBatch(BaseModel):
    items: list[dict[str, Any]] = Field(max_length=10_000, description="Recommendations")


def build_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    configure_logging(settings.log_level)
    broker = make_broker(settings.kafka_bootstrap, "intake")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def connect() -> None:
            # The service answers (503, not ready) while the broker is still away.
            await wait_for_broker(settings.kafka_bootstrap, timeout=float("inf"))
            await broker.start()
            app.state.broker_connected = True
            log.info("intake connected to the broker")

        connecting = asyncio.create_task(supervised("broker connection", connect()))
        try:
            yield
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            await broker.stop()

    async def broker_ready() -> None:
        if not getattr(app.state, "broker_connected", False) or not await broker.ping(2):
            raise ConnectionError("broker unreachable")

    app = create_app(
        service="intake",
        description="Coordinators submit UPR, treaty-body and National Plan recommendations.",
        lifespan=lifespan,
        readiness=lambda _app: [("broker", broker_ready)],
    )
    app.state.settings = settings
    app.state.token_secret = settings.token_secret.get_secret_value()
    app.state.broker = broker
    app.state.broker_connected = False
    app.state.publisher = RecommendationPublisher(broker, settings.publish_timeout_seconds)
    app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (UprRecommendation, TreatyBodyRecommendation, PlanRecommendation,
                  RecommendationBatch):
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in model_schema.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components[model.__name__] = model_schema
    app.openapi_schema = schema
    return schema


app = build_app()
