"""The HTTP app every service starts from: health, readiness, metrics, error format, and the
guards against bad input (body size, unreadable JSON, text PostgreSQL cannot store).

Every 4xx/5xx answer has one shape, `Problem`: `{"detail": summary, "errors": [{field,
message, type}]}`, documented once here and used by every service's OpenAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.inputs import json_depth_exceeded, unstorable, utf8_text
from shared.metrics import HttpMetricsMiddleware, package_version, set_build_info

ReadinessCheck = Callable[[], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
# Allocations between young collections (CPython: 700). Above what a consumer batch keeps
# alive (2,000 records: some 200,000 objects, freed by reference counting when it ends), so a
# collection seldom runs in the middle of one, walking those objects and promoting them to
# older generations. Measured over 50,000 recommendations through the pipeline: the
# collector used 1.1 s of the tracker's CPU, 1.0 s of the notifier's and 0.7 s of intake's
# at 50,000; at 500,000, 0.04 s or less each, startup included; peak memory did not grow.
GC_YOUNG_THRESHOLD = 500_000


# --- the error format -------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str = Field(description="Where: `text`, `items[3].review_date`, `query.q`")
    message: str
    type: str = Field(description="Machine-readable kind, e.g. missing, string_unstorable")


class Problem(BaseModel):
    """Every error answer: a readable summary, and the fields at fault when there are any."""

    detail: str = Field(description="What is wrong, and where")
    errors: list[FieldError] = Field(default_factory=list)


PROBLEM_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "body unreadable: not UTF-8 (the byte is named), not JSON, or nested too deeply",
    401: "no token, bad signature or expired token",
    403: "this token's role may not do this",
    404: "not found (another agency's data is answered the same way)",
    409: "conflicts with the current state",
    413: "request body over the size limit",
    415: "body in a content type this operation does not take",
    422: "invalid fields or parameters, each named with its reason",
    503: "a dependency is unavailable; retry later",
}


def problem_responses(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for these status codes, answered with a Problem; `described` overrides a
    description by code (`_404="no such agency"`)."""
    texts = {int(k.lstrip("_")): v for k, v in described.items()}
    return {code: {"model": Problem,
                   "description": texts.get(code, ERROR_DESCRIPTIONS.get(code, "error"))}
            for code in sorted({*codes, *texts})}


class ProblemError(HTTPException):
    """An error answered as a Problem, with the fields at fault."""

    def __init__(self, status_code: int, detail: str,
                 errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, detail=detail, headers=headers)
        self.errors = errors or []


def field_problem(status_code: int, field: str, message: str, kind: str) -> ProblemError:
    return ProblemError(status_code, f"{field}: {message}",
                        [{"field": field, "message": message, "type": kind}])


def location(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'items', 3, 'cycle') -> 'items[3].cycle'."""
    parts: list[str] = []
    for part in loc:
        if part == "body" and not parts:
            continue
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "body"


def validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"field": location(e.get("loc", ())),
         "message": str(e.get("msg", "invalid")).removeprefix("Value error, "),
         "type": e.get("type", "value_error")}
        for e in errors
    ]


def summary(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(list(exc.errors()))
    return JSONResponse(status_code=422, content={"detail": summary(errors), "errors": errors})


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every documented method of the path. Starlette's 405 names only the methods of the
    first route matching the path (`Allow: GET` where POST is there too)."""
    table = getattr(app.state, "allowed_methods", None)
    if table is None:
        table = [(compile_path(template)[0], sorted(m.upper() for m in item))
                 for template, item in app.openapi().get("paths", {}).items()]
        app.state.allowed_methods = table
    return sorted({m for regex, methods in table if regex.match(path) for m in methods})


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := allowed_methods(request.app, request.url.path)):
        headers["Allow"] = ", ".join(allowed)
    if exc.status_code in (204, 304) or exc.status_code < 200:
        return Response(status_code=exc.status_code, headers=headers)
    content: dict[str, Any] = {"detail": str(exc.detail)}
    if isinstance(exc, ProblemError) and exc.errors:
        content["errors"] = exc.errors
    return JSONResponse(content, status_code=exc.status_code, headers=headers)


# --- bad input: body size ---------------------------------------------------------------------


class BodyTooLarge(ProblemError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes")


class BodySizeLimit:
    """Refuses a request body over the service's `max_body_bytes` setting with 413: at once
    when Content-Length says so, else as soon as the streamed body passes it (the rest is
    never read or buffered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def limit(scope: Scope) -> int:
        settings = getattr(scope["app"].state, "settings", None) if "app" in scope else None
        return int(getattr(settings, "max_body_bytes", DEFAULT_MAX_BODY_BYTES))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = await _http_error_handler(Request(scope), BodyTooLarge(limit))
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException: FastAPI's body reading passes it on to the handler.
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


# --- bad input: JSON bodies and parameters ----------------------------------------------------


def decode_utf8(body: bytes, what: str = "body") -> str:
    """The body as text; 400 naming the first byte that is not UTF-8, its offset and line."""
    try:
        return utf8_text(body, what)
    except ValueError as exc:
        raise ProblemError(400, str(exc)) from exc


def read_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON body, or a ProblemError: 400 when it cannot be read as JSON (naming the byte,
    line and column), 422 naming each string PostgreSQL could not store."""
    text = decode_utf8(body)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProblemError(400, f"body is not valid JSON: {exc.msg} at line {exc.lineno} "
                                f"column {exc.colno}") from exc
    except RecursionError as exc:  # the decoder gives up on absurd nesting
        raise ProblemError(400, f"body is nested deeper than {max_depth} levels") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ProblemError(400, f"body is not usable JSON: {exc}") from exc
    if json_depth_exceeded(value, max_depth):
        raise ProblemError(400, f"body is nested deeper than {max_depth} levels")
    bad = unstorable(value)
    if bad:
        errors = [{"field": location(("body", *path)), "message": problem,
                   "type": "string_unstorable"} for path, problem in bad]
        raise ProblemError(422, summary(errors), errors)
    return value


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


class CheckedJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = read_json(await self.body())
        return self._json


def check_parameters(request: Request) -> None:
    """422 naming each query or path parameter whose text PostgreSQL could not store."""
    errors = []
    for kind, items in (("query", request.query_params.multi_items()),
                        ("path", request.path_params.items())):
        for name, value in items:
            for _, problem in unstorable([name, value]):
                errors.append({"field": f"{kind}.{name}".replace("\x00", "\\u0000"),
                               "message": problem, "type": "string_unstorable"})
    if errors:
        raise ProblemError(422, summary(errors), errors)


class CheckedRoute(APIRoute):
    """A route whose input is checked before FastAPI sees it: parameters free of text
    PostgreSQL cannot store, JSON bodies in JSON, UTF-8, not nested deeper than 32 levels
    and with storable text (see `read_json`). Use as `APIRouter(route_class=CheckedRoute)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.body_field is not None:  # what `checked` answers, documented
            documented: dict[int | str, dict[str, Any]] = {
                code: {"description": ERROR_DESCRIPTIONS[code], "content": PROBLEM_CONTENT}
                for code in (400, 415)}
            self.responses = {**documented, **self.responses}

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_json = self.body_field is not None

        async def checked(request: Request) -> Response:
            request = CheckedJsonRequest(request.scope, request.receive)
            check_parameters(request)
            if takes_json:
                content_type = request.headers.get("content-type", "")
                if not _is_json(content_type) and await request.body():
                    raise ProblemError(415, "body: send it as application/json (Content-Type "
                                            f"was {content_type or 'missing'!r})")
            return await handler(request)

        return checked


# --- the OpenAPI document ---------------------------------------------------------------------

_REF = "#/components/schemas/"


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's `anyOf: [T, null]` as T: a query or path parameter is absent or a value,
    never null (and the simpler schema is what schemathesis' coverage phase handles)."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list) or {"type": "null"} not in branches:
        return schema
    rest = [b for b in branches if b != {"type": "null"}]
    simplified = {k: v for k, v in schema.items()
                  if k != "anyOf" and not (k == "default" and v is None)}
    if len(rest) == 1:
        simplified.update(rest[0])
    else:
        simplified["anyOf"] = rest
    return simplified


def _add_models(components: dict[str, Any], models: Iterable[type[BaseModel]]) -> None:
    for model in models:
        schema = model.model_json_schema(ref_template=_REF + "{model}")
        for name, sub in schema.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components.setdefault(model.__name__, schema)


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, corrected to what the service really answers: the Problem format
    for 422, and 400, 401 and 413, which any operation with a body or a token may get;
    parameters without null."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _add_models(components, [Problem])

    def answer(code: int) -> dict[str, Any]:
        return {"description": ERROR_DESCRIPTIONS[code], "content": PROBLEM_CONTENT}

    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for response in responses.values():
                for media in (response.get("content") or {}).values():
                    if media.get("schema") == {"$ref": _REF + "HTTPValidationError"}:
                        media["schema"] = {"$ref": _REF + "Problem"}
            for parameter in operation.get("parameters", []):
                if "schema" in parameter:
                    parameter["schema"] = _without_null(parameter["schema"])
            wanted = []
            if operation.get("security"):
                wanted.append(401)
            if operation.get("parameters") or "requestBody" in operation:
                wanted.append(422)
            if "requestBody" in operation:
                wanted += [400, 413]
            for code in wanted:
                responses.setdefault(str(code), answer(code))
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def serve_openapi(app: FastAPI,
                  customize: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Serve `openapi_document`, with a service's own additions, built once."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = openapi_document(app)
            if customize is not None:
                customize(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


# --- the app ----------------------------------------------------------------------------------


class Readiness(BaseModel):
    status: str = Field(description="ready or not ready")
    checks: dict[str, str] = Field(description="ok, or unavailable: the error's type")


class Health(BaseModel):
    status: str
    service: str


def tune_garbage_collector() -> None:
    """Fewer, cheaper cyclic collections for a service that allocates many short-lived objects.

    Measured here: with CPython's defaults (a young collection every 700 allocations) half of
    the time spent decoding a batch of events went to the collector walking the objects the
    batch keeps alive. Everything alive at startup (modules, app) is frozen out of the scans.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def create_app(
    *,
    service: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    readiness: Callable[[FastAPI], list[tuple[str, ReadinessCheck]]],
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def tuned_lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_garbage_collector()
        async with lifespan(app):
            yield

    app = FastAPI(
        title=f"hrtrack {service}",
        description=description,
        version=package_version(),
        lifespan=tuned_lifespan,
    )
    # Added last is outermost: metrics see every answer, the 413s of the size limit too.
    app.add_middleware(BodySizeLimit)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(HTTPException, _http_error_handler)
    set_build_info()
    serve_openapi(app)

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> Health:
        return Health(status="ok", service=service)

    @app.get(
        "/readyz", tags=["operations"], summary="Readiness: broker and database reachable",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "a dependency is unreachable"}},
    )
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in readiness(app):
            try:
                await asyncio.wait_for(check(), timeout=3)
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                results[name] = f"unavailable: {type(exc).__name__}"
        ready = all(v == "ok" for v in results.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "not ready", "checks": results},
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def configure_logging(level: str) -> None:
    """One line per record to stderr; secrets are never passed to loggers."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # aiokafka logs every reconnect attempt at ERROR while a broker is away; we log our own.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


async def supervised(name: str, coro: Awaitable[None]) -> None:
    """Run a background task; an unexpected end is logged, never silent."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        logging.getLogger("hrtrack").exception("background task %s failed", name)
        raise
