"""Intake's HTTP entrypoints: thin, they turn request bodies into events to publish."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.intake.domain import deduplicate, validate_item, validate_items
from services.intake.metrics import BROKER_UNAVAILABLE, ITEMS
from services.intake.publisher import RecommendationPublisher
from services.intake.settings import IntakeSettings
from shared.auth import Coordinator
from shared.events import RecommendationEvent
from shared.web import validation_errors

router = APIRouter(prefix="/v1", tags=["intake"])

RETRY_AFTER_SECONDS = 5


def get_settings(request: Request) -> IntakeSettings:
    settings: IntakeSettings = request.app.state.settings
    return settings


def get_publisher(request: Request) -> RecommendationPublisher:
    publisher: RecommendationPublisher = request.app.state.publisher
    return publisher


Settings = Annotated[IntakeSettings, Depends(get_settings)]
Publisher = Annotated[RecommendationPublisher, Depends(get_publisher)]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes the limit (not after reading it all)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"request body over the limit of {limit} bytes",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                detail=f"request body over the limit of {limit} bytes",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, detail=f"body is not UTF-8 (byte {exc.start})"
        ) from exc
    except json.JSONDecodeError as exc:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from exc


async def publish_or_503(
    publisher: RecommendationPublisher,
    events: list[RecommendationEvent],
    source_count: dict[str, int],
) -> list[str]:
    """Publish; 503 with Retry-After unless the broker acknowledged every item."""
    outcome = await publisher.publish(deduplicate(events))
    if outcome.failed:
        BROKER_UNAVAILABLE.inc()
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail={
                "message": "the broker did not acknowledge every item; retry the request "
                "(re-posting is safe: ids are deterministic)",
                "acknowledged": [str(i) for i in outcome.acknowledged],
                "not_acknowledged": [str(i) for i in outcome.failed],
            },
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    for source, count in source_count.items():
        ITEMS.labels(source=source, outcome="accepted").inc(count)
    return [str(e.recommendation_id) for e in events]


def count_sources(events: list[RecommendationEvent]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        counts[event.source.value] = counts.get(event.source.value, 0) + 1
    return counts


RECOMMENDATION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/UprRecommendation"},
                        {"$ref": "#/components/schemas/TreatyBodyRecommendation"},
                        {"$ref": "#/components/schemas/PlanRecommendation"},
                        {"$ref": "#/components/schemas/RecommendationBatch"},
                    ]
                }
            }
        },
    }
}


@router.post(
    "/recommendations",
    status_code=status.HTTP_202_ACCEPTED,
    summary='Submit one recommendation, or a batch as {"items": [...]}',
    openapi_extra=RECOMMENDATION_BODY,
    responses={
        400: {"description": "not JSON"},
        401: {"description": "no or bad token"},
        403: {"description": "not a coordinator"},
        413: {"description": "body too large"},
        422: {"description": "invalid recommendation, field named"},
        503: {"description": "broker did not acknowledge; retry after Retry-After"},
    },
)
async def submit_recommendations(
    request: Request, principal: Coordinator, settings: Settings, publisher: Publisher
) -> JSONResponse:
    raw = parse_json(await read_body(request, settings.max_body_bytes))
    if isinstance(raw, dict) and "items" in raw and "source" not in raw:
        items = raw["items"]
        if not isinstance(items, list):
            raise HTTPException(422, detail="items: must be a list of recommendations")
        if len(items) > settings.max_batch_items:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                detail=f"items: at most {settings.max_batch_items} per request",
            )
        events, rejections = validate_items(items, submitted_by=principal.subject)
        for rejection in rejections:
            source = (
                items[rejection.index].get("source")
                if isinstance(items[rejection.index], dict)
                else None
            )
            ITEMS.labels(
                source=source if source in ("upr", "treaty_body", "plan") else "unknown",
                outcome="rejected",
            ).inc()
        if not events and rejections:
            return JSONResponse(
                status_code=422,
                content={
                    "detail": "no valid item in the batch",
                    "accepted": [],
                    "rejected": [r.as_dict() for r in rejections],
                },
            )
        accepted = await publish_or_503(publisher, events, count_sources(events))
        return JSONResponse(
            status_code=202,
            content={"accepted": accepted, "rejected": [r.as_dict() for r in rejections]},
        )
    try:
        event = validate_item(raw, submitted_by=principal.subject)
    except ValidationError as exc:
        errors = validation_errors(list(exc.errors()))
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
        return JSONResponse(status_code=422, content={"detail": summary, "errors": errors})
    accepted = await publish_or_503(publisher, [event], count_sources([event]))
    return JSONResponse(status_code=202, content={"accepted": accepted, "id": accepted[0]})
