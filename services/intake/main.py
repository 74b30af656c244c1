"""Intake's composition root: settings, broker, HTTP app and metrics wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI, get_asyncapi_html
from pydantic import BaseModel, Field

from services.intake.api import router
from services.intake.publisher import RecommendationPublisher, declare_publisher
from services.intake.settings import IntakeSettings
from shared.kafka import ensure_topics, make_broker, wait_for_broker
from shared.recommendations import (
    PlanRecommendation,
    TreatyBodyRecommendation,
    UprRecommendation,
)
from shared.settings import TOPIC_RECOMMENDATIONS
from shared.web import configure_logging, create_app, serve_openapi, supervised

log = logging.getLogger("hrtrack.intake")


class RecommendationBatch(BaseModel):
    items: list[dict[str, Any]] = Field(
        min_length=1, max_length=10_000,
        description="Recommendations of any source (each as UprRecommendation, "
                    "TreatyBodyRecommendation or PlanRecommendation)",
    )


def build_app(settings: IntakeSettings | None = None) -> FastAPI:
    settings = settings or IntakeSettings()
    configure_logging(settings.log_level)
    broker = make_broker(settings.kafka_bootstrap, "intake")
    publisher = RecommendationPublisher(
        broker, settings.publish_timeout_seconds,
        declare_publisher(broker, settings.recommendations_topic),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def connect() -> None:
            # The service answers (503, not ready) while the broker is still away.
            await wait_for_broker(settings.kafka_bootstrap, timeout=float("inf"))
            if settings.recommendations_topic != TOPIC_RECOMMENDATIONS:
                await ensure_topics(settings.kafka_bootstrap, [settings.recommendations_topic])
            await broker.start()
            app.state.broker_connected = publisher.connected = True
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
    app.state.publisher = publisher
    app.include_router(router)
    _serve_asyncapi(app, broker)
    serve_openapi(app, _add_request_models)
    return app


def _serve_asyncapi(app: FastAPI, broker: KafkaBroker) -> None:
    """The Kafka side of the contract: FastStream's AsyncAPI document of what intake
    publishes (topic, key, RecommendationEvent schema), public like /docs."""
    spec = AsyncAPI(broker, title="hrtrack intake events", version=app.version,
                    description="What intake publishes on Kafka. Events are versioned JSON "
                                "(schema_version); consumers deduplicate by event_id.")

    @app.get("/asyncapi.json", tags=["operations"], summary="AsyncAPI document (Kafka topics)")
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(spec.to_specification().to_jsonable())

    @app.get("/asyncapi", tags=["operations"], summary="AsyncAPI document as a page",
             response_class=HTMLResponse)
    async def asyncapi_page() -> HTMLResponse:
        return HTMLResponse(get_asyncapi_html(spec.to_specification(), try_it_out_path=None))


def _add_request_models(schema: dict[str, Any]) -> None:
    """The request bodies intake reads itself (per item), for the document's requestBody."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (UprRecommendation, TreatyBodyRecommendation, PlanRecommendation,
                  RecommendationBatch):
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in model_schema.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components[model.__name__] = model_schema


app = build_app()
