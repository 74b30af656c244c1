"""Intake's composition root: settings, producer, HTTP app and metrics wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI, get_asyncapi_html
from pydantic import BaseModel, Field

from services.intake.api import router
from services.intake.publisher import RecommendationPublisher, declare_publisher
from services.intake.settings import IntakeSettings
from shared.kafka import EventProducer, ensure_topics, make_broker, wait_for_broker
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
    # Events go out through aiokafka directly, a request's events in one batch per partition
    # (FastStream's publish, message by message, cost more CPU than validating the item).
    # The FastStream broker only describes them for the AsyncAPI document: it never connects.
    docs_broker = make_broker(settings.kafka_bootstrap, "intake")
    declare_publisher(docs_broker, settings.recommendations_topic)
    producer = EventProducer(settings.kafka_bootstrap, "hrtrack-intake")
    publisher = RecommendationPublisher(
        producer, settings.recommendations_topic, settings.publish_timeout_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def connect() -> None:
            # The service answers (503, not ready) while the broker is still away.
            while True:
                await wait_for_broker(settings.kafka_bootstrap, timeout=float("inf"))
                try:
                    if settings.recommendations_topic != TOPIC_RECOMMENDATIONS:
                        await ensure_topics(settings.kafka_bootstrap,
                                            [settings.recommendations_topic])
                    await producer.start()
                    break
                except (KafkaError, OSError) as exc:  # gone again in between: wait anew
                    log.info("broker not ready yet (%s), retrying", exc)
                    await asyncio.sleep(0.5)
            log.info("intake connected to the broker")

        connecting = asyncio.create_task(supervised("broker connection", connect()))
        try:
            yield
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            await producer.stop()

    async def broker_ready() -> None:
        await producer.ping()  # the producer intake publishes with reaches the broker

    app = create_app(
        service="intake",
        description="Coordinators submit UPR, treaty-body and National Plan recommendations.",
        lifespan=lifespan,
        readiness=lambda _app: [("broker", broker_ready)],
    )
    app.state.settings = settings
    app.state.token_secret = settings.token_secret.get_secret_value()
    app.state.publisher = publisher
    app.include_router(router)
    _serve_asyncapi(app, docs_broker)
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
