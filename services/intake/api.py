"""Intake's HTTP entrypoints: thin, they turn request bodies into events to publish.

Every answer that accepts anything is 202 and lists exactly the ids the broker acknowledged;
items or rows that fail validation are listed with their index or row number and reasons,
and the valid ones go ahead. Broker trouble is 503 with Retry-After: re-posting is safe,
ids are deterministic and an unchanged recommendation changes nothing downstream.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from services.intake.csv_import import COLUMNS, RowLimit, read_csv
from services.intake.domain import (
    BadRequest,
    BatchError,
    ItemInvalid,
    Rejection,
    Submission,
    decode_utf8,
    deduplicate,
    envelope,
    item_source,
    parse_json_body,
    plan_item,
    unique_ids,
    validate_item,
    validate_items,
)
from services.intake.examples import CSV_EXAMPLES, PLAN_EXAMPLE, RECOMMENDATION_EXAMPLES
from services.intake.metrics import BROKER_UNAVAILABLE, ITEMS
from services.intake.publisher import RecommendationPublisher
from services.intake.settings import IntakeSettings
from shared.auth import Coordinator
from shared.events import Source
from shared.plan_parser import parse_plan
from shared.web import (
    CheckedRoute,
    FieldError,
    Problem,
    field_problem,
    problem_responses,
)

# CheckedRoute: query parameters with text PostgreSQL cannot store are refused with a 422
# naming them (the bodies are read and checked here, item by item).
router = APIRouter(prefix="/v1", tags=["intake"], route_class=CheckedRoute)


def get_settings(request: Request) -> IntakeSettings:
    settings: IntakeSettings = request.app.state.settings
    return settings


def get_publisher(request: Request) -> RecommendationPublisher:
    publisher: RecommendationPublisher = request.app.state.publisher
    return publisher


Settings = Annotated[IntakeSettings, Depends(get_settings)]
Publisher = Annotated[RecommendationPublisher, Depends(get_publisher)]


# --- request bodies ---------------------------------------------------------------------------


def too_large(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=detail)


def bad_request(exc: Exception) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(exc))


async def read_body(request: Request) -> bytes:
    """The body. Over `max_body_bytes` the shared size limit (shared.web.BodySizeLimit) has
    answered 413 already, from Content-Length or as soon as the stream passed it."""
    return await request.body()


async def uploaded_file(request: Request, body: bytes) -> bytes:
    """The `file` part of a multipart/form-data body (the body itself otherwise)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return body

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body
        yield b""

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1,
                                     max_fields=10).parse()
    except MultiPartException as exc:
        raise bad_request(BadRequest(f"multipart body unreadable: {exc.message}")) from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise bad_request(BadRequest("multipart body has no file part named 'file'"))
    data = await upload.read()
    await form.close()
    return data


# --- answers ----------------------------------------------------------------------------------


def count_by_source(events: list[Submission]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        counts[event.source.value] = counts.get(event.source.value, 0) + 1
    return counts


def count_rejections(sources: list[str]) -> None:
    for source in sources:
        ITEMS.labels(source=source, outcome="rejected").inc()


async def accept(
    publisher: RecommendationPublisher,
    settings: IntakeSettings,
    events: list[Submission],
    rejections: list[Rejection],
    extra: dict[str, Any] | None = None,
    *,
    single: bool = False,
) -> JSONResponse:
    """Publish the valid items: 202 listing what the broker acknowledged, or 503."""
    body: dict[str, Any] = dict(extra or {})
    rejected = [r.as_dict() for r in rejections]
    if not events:
        return JSONResponse(status_code=422, content={
            **body, "detail": "nothing valid to accept: " + "; ".join(
                f"{r.label} {r.index}: {r.reason}" for r in rejections[:5]),
            "count": 0, "accepted": [], "rejected": rejected})
    unique = deduplicate(events)
    outcome = await publisher.publish(unique)
    failed = set(outcome.failed)
    acked = [e for e in unique if e.recommendation_id not in failed] if failed else unique
    for source, count in count_by_source(acked).items():
        ITEMS.labels(source=source, outcome="accepted").inc(count)
    if failed:
        BROKER_UNAVAILABLE.inc()
        for source, count in count_by_source(
                [e for e in unique if e.recommendation_id in failed]).items():
            ITEMS.labels(source=source, outcome="not_acknowledged").inc(count)
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(settings.retry_after_seconds)},
            content={
                **body,
                "detail": "the broker did not acknowledge every item; retry after "
                f"{settings.retry_after_seconds} s (re-posting is safe: ids are deterministic)",
                "count": len(acked),
                "accepted": unique_ids(acked),
                "not_acknowledged": [str(i) for i in outcome.failed],
                "rejected": rejected,
            },
        )
    accepted = unique_ids(events)
    if single:  # one recommendation posted: its id, too
        body["id"] = accepted[0]
    return JSONResponse(status_code=status.HTTP_202_ACCEPTED, content={
        **body, "count": len(accepted), "accepted": accepted, "rejected": rejected})


class ItemError(FieldError):
    column: str | None = Field(default=None, description="The CSV column as written")


class RejectedItem(BaseModel):
    """One item or row refused, with where it is and every reason."""

    index: int | None = Field(default=None, description="Position in `items` or in the plan")
    row: int | None = Field(default=None, description="CSV row number (the header is row 1)")
    chapter: str | None = Field(default=None, description="Plan imports: the action's chapter")
    number: str | None = Field(default=None, description="Plan imports: the action's number")
    reason: str
    errors: list[ItemError]


class Accepted(BaseModel):
    """What the broker acknowledged, and what was refused."""

    count: int = Field(description="How many recommendations were accepted")
    accepted: list[uuid.UUID] = Field(description="Their ids (deterministic)")
    rejected: list[RejectedItem]
    id: uuid.UUID | None = Field(default=None, description="One recommendation posted: its id")


class PlanAccepted(Accepted):
    plan: str = Field(description="The plan id given to every action")
    title: str | None
    period: list[int] = Field(description="[first year, last year]")


class CsvAccepted(Accepted):
    source: Source
    ignored_columns: list[str] = Field(description="Columns that are not a field")


class IntakeProblem(Problem):
    """An error; when items were looked at, also what happened to each (plan and CSV imports
    add the fields of their 202 answer)."""

    count: int | None = None
    accepted: list[uuid.UUID] | None = None
    not_acknowledged: list[uuid.UUID] | None = Field(
        default=None, description="Valid, but not acknowledged by the broker: post again")
    rejected: list[RejectedItem] | None = None


ACCEPTED_EXAMPLE = {
    "count": 1,
    "accepted": ["2f0a6a0e-5d7c-5d0f-8c4e-0d5f1f4f7b11"],
    "rejected": [{"index": 3, "reason": "items[3].review_date: Input should be a valid date",
                  "errors": [{"field": "items[3].review_date",
                              "message": "Input should be a valid date", "type": "date_type"}]}],
}


def _responses(model: type[Accepted], too_large: str,
               extra: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    return {
        202: {"model": model,
              "description": "accepted: ids the broker acknowledged, and the rejections",
              "content": {"application/json": {"example": {**ACCEPTED_EXAMPLE,
                                                            **(extra or {})}}}},
        **problem_responses(403, _413=too_large),
        422: {"model": IntakeProblem,
              "description": "nothing valid: every item or row rejected, each with its reasons "
                             "(or an invalid parameter)"},
        503: {"model": IntakeProblem,
              "description": "the broker did not acknowledge every item; retry after "
                             "Retry-After (re-posting is safe)",
              "headers": {"Retry-After": {"schema": {"type": "integer"},
                                          "description": "seconds"}}},
    }


# --- POST /v1/recommendations -----------------------------------------------------------------


@router.post(
    "/recommendations",
    status_code=status.HTTP_202_ACCEPTED,
    summary='Submit one recommendation, or a batch as {"items": [...]}',
    description=(
        "A UPR recommendation, a treaty-body concluding observation or a National Plan action "
        "(`source` says which), or `{\"items\": [...]}` with up to `max_batch_items` (10,000) "
        "of them. Invalid items are listed under `rejected` with their index and reasons "
        "(`items[3].review_date: ...`); the valid ones are accepted. 202 once the broker "
        "acknowledged every accepted item."
    ),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"oneOf": [
            {"$ref": "#/components/schemas/UprRecommendation"},
            {"$ref": "#/components/schemas/TreatyBodyRecommendation"},
            {"$ref": "#/components/schemas/PlanRecommendation"},
            {"$ref": "#/components/schemas/RecommendationBatch"},
        ]},
        "examples": RECOMMENDATION_EXAMPLES,
    }}}},
    response_model=Accepted,
    responses=_responses(Accepted, "request body over the size limit"),
)
async def submit_recommendations(
    request: Request, principal: Coordinator, settings: Settings, publisher: Publisher
) -> JSONResponse:
    try:
        raw = parse_json_body(await read_body(request))
        posted = envelope(raw)
    except BadRequest as exc:
        raise bad_request(exc) from exc
    except BatchError as exc:
        field, _, message = str(exc).partition(": ")
        raise field_problem(422, field, message, "value_error") from exc
    if not posted.batch:
        try:
            event = validate_item(raw, submitted_by=principal.subject)
        except ItemInvalid as exc:
            ITEMS.labels(source=item_source(raw), outcome="rejected").inc()
            return JSONResponse(status_code=422, content={"detail": str(exc),
                                                          "errors": exc.errors})
        return await accept(publisher, settings, [event], [], single=True)
    items = posted.items
    if len(items) > settings.max_batch_items:
        # A validation error like the schema's maxItems (413 is for bytes over the limit).
        raise field_problem(422, "items", f"at most {settings.max_batch_items} per request "
                            f"(got {len(items)})", "too_long")
    # Validation is CPU work (about 40 us an item): off the event loop for big batches.
    events, rejections = await asyncio.to_thread(
        validate_items, items, submitted_by=principal.subject)
    count_rejections([item_source(items[r.index]) for r in rejections])
    return await accept(publisher, settings, events, rejections)


# --- POST /v1/imports/plan --------------------------------------------------------------------


@router.post(
    "/imports/plan",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Import a National Plan document (its text, as extracted from the PDF)",
    description=(
        "Parses the document like `hrtrack plan parse` and publishes every action-table row "
        "and every recommendation-list item whose text carries a year, as `plan` "
        "recommendations with the plan's title and period, the chapter, and the deadline and "
        "executors as written. `plan` overrides the plan id read from the title "
        "(e.g. NHRAP-2009-2012). Items that fail validation are listed with their index."
    ),
    openapi_extra={"requestBody": {"required": True, "content": {"text/plain": {
        "schema": {"type": "string", "description": "The plan's text, UTF-8"},
        "example": PLAN_EXAMPLE,
    }}}},
    response_model=PlanAccepted,
    responses=_responses(PlanAccepted, "request body over the size limit, or a document of "
                         "more than max_batch_items actions",
                         {"plan": "NHRAP-2009-2012", "title": "National Human Rights Action "
                          "Plan of Kazakhstan for 2009-2012", "period": [2009, 2012]}),
)
async def import_plan(
    request: Request,
    principal: Coordinator,
    settings: Settings,
    publisher: Publisher,
    plan: Annotated[str | None, Query(min_length=1, max_length=100,
                                      description="Plan id (default: from its title)")] = None,
) -> JSONResponse:
    try:
        text = decode_utf8(await read_body(request))
    except BadRequest as exc:
        raise bad_request(exc) from exc
    actions = await asyncio.to_thread(parse_plan, text)
    if not actions:
        return JSONResponse(status_code=422, content={
            "detail": "body: no action table (\"No. Action Deadline Executors\") and no dated "
                      "recommendation found in the document", "count": 0, "accepted": [],
            "rejected": []})
    if len(actions) > settings.max_batch_items:
        raise too_large(f"the document has {len(actions)} actions; at most "
                        f"{settings.max_batch_items} per request")
    items = [plan_item(a, plan) for a in actions]
    where = [(("chapter", a.chapter), ("number", a.number)) for a in actions]
    events, rejections = await asyncio.to_thread(
        validate_items, items, submitted_by=principal.subject, extras=where)
    count_rejections(["plan"] * len(rejections))
    first = actions[0]
    return await accept(publisher, settings, events, rejections, {
        "plan": plan or first.plan, "title": first.plan_title, "period": list(first.plan_period)})


# --- POST /v1/imports/csv ---------------------------------------------------------------------


def _csv_description() -> str:
    lines = ["A CSV file as `text/csv`, or as the `file` part of `multipart/form-data`. "
             "UTF-8 (a BOM is fine), CRLF or LF. The header row names the columns; rows are "
             "numbered as in a spreadsheet (header = row 1). Multi-valued cells: `;` or `|`. "
             "Extra query parameters named like a field give its value to every row whose "
             "cell is empty (e.g. `&state=KAZ&cycle=1&review_date=2010-02-12`). "
             "Columns and their accepted headers:"]
    for source, columns in COLUMNS.items():
        lines.append(f"\n\n**{source}**: " + "; ".join(
            f"`{name}` ({', '.join(a for a in aliases if a != name) or '-'})"
            for name, aliases in columns.items()))
    return "".join(lines)


@router.post(
    "/imports/csv",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Import a CSV file of recommendations of one source",
    description=_csv_description(),
    openapi_extra={"requestBody": {"required": True, "content": {
        "text/csv": {"schema": {"type": "string"}, "examples": CSV_EXAMPLES},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"}}}},
    }}},
    response_model=CsvAccepted,
    responses=_responses(CsvAccepted, "request body over the size limit, or more than "
                         "max_batch_items rows (`hrtrack push` splits the file then)",
                         {"source": "upr", "ignored_columns": ["Regional Group"],
                          "rejected": [{"row": 5, "reason": "review_date: Input should be a "
                                        "valid date", "errors": []}]}),
)
async def import_csv(
    request: Request,
    principal: Coordinator,
    settings: Settings,
    publisher: Publisher,
    source: Annotated[Source, Query(description="Which source every row is from")],
) -> JSONResponse:
    defaults = {k: v for k, v in request.query_params.items() if k != "source"}
    unknown = sorted(set(defaults) - set(COLUMNS[source.value]) - {"source"})
    if unknown:
        return JSONResponse(status_code=422, content={
            "detail": f"query.{unknown[0]}: not a field of a {source.value} recommendation",
            "errors": [{"field": f"query.{name}", "message": "unknown field",
                        "type": "extra_forbidden"} for name in unknown]})
    try:
        body = await uploaded_file(request, await read_body(request))
        text = decode_utf8(body, "CSV")
        parsed = read_csv(text, source.value, defaults=defaults,
                          max_rows=settings.max_batch_items)
    except BadRequest as exc:
        raise bad_request(exc) from exc
    except RowLimit as exc:
        raise too_large(str(exc)) from exc
    events, rejections = await asyncio.to_thread(
        validate_items, [r.item for r in parsed.rows], submitted_by=principal.subject,
        prefix="", label="row")
    rows = [r.row for r in parsed.rows]
    rejections = [Rejection(rows[r.index], _with_columns(r.errors, parsed.columns), "row")
                  for r in rejections]
    rejections += [Rejection(p.row, [{"field": "row", "message": p.message,
                                      "type": "value_error"}], "row") for p in parsed.problems]
    rejections.sort(key=lambda r: r.index)
    count_rejections([source.value] * len(rejections))
    return await accept(publisher, settings, events, rejections,
                        {"source": source.value, "ignored_columns": parsed.ignored_columns})


def _with_columns(errors: list[dict[str, Any]], columns: dict[str, str]) -> list[dict[str, Any]]:
    """Name the column as written in the file next to the field it gives."""
    out = []
    for error in errors:
        head = error["field"].split(".")[0].split("[")[0]
        column = columns.get(head)
        out.append({**error, "column": column} if column and column != head else error)
    return out
