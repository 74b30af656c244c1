"""The HTTP app every service starts from: health, readiness, metrics, error format."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.metrics import HttpMetricsMiddleware, package_version, set_build_info

ReadinessCheck = Callable[[], Awaitable[None]]


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
        {"field": location(e.get("loc", ())), "message": e.get("msg", "invalid"),
         "type": e.get("type", "value_error")}
        for e in errors
    ]


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(list(exc.errors()))
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:10])
    return JSONResponse(status_code=422, content={"detail": summary, "errors": errors})


def create_app(
    *,
    service: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    readiness: Callable[[FastAPI], list[tuple[str, ReadinessCheck]]],
) -> FastAPI:
    app = FastAPI(
        title=f"hrtrack {service}",
        description=description,
        version=package_version(),
        lifespan=lifespan,
    )
    app.add_middleware(HttpMetricsMiddleware)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    set_build_info()

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get(
        "/readyz", tags=["operations"], summary="Readiness: broker and database reachable",
        responses={503: {"description": "a dependency is unreachable"}},
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

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
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
