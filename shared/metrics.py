"""Prometheus metrics every service exports, and the HTTP metrics middleware.

Names follow Prometheus conventions: `hrtrack_` prefix, base units, `_total` counters
(prometheus-client appends `_total` to Counter names), bounded label values.
"""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "hrtrack_http_requests", "HTTP requests by route and status", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "hrtrack_http_request_duration_seconds", "HTTP request duration", ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BUILD_INFO = Gauge("hrtrack_build_info", "Build information (value 1)", ["version"])
DEAD_LETTERS = Counter(
    "hrtrack_dead_letters", "Messages sent to a dead-letter topic, by source topic", ["topic"]
)
# Records published with shared.kafka.EventProducer (intake's batches, the tracker's outbox
# relay); timed from send to the broker's acknowledgement of the record's batch.
EVENTS_PUBLISHED = Counter(
    "hrtrack_events_published", "Records published, by topic and outcome",
    ["destination", "status"],
)
EVENTS_PUBLISH_ERRORS = Counter(
    "hrtrack_events_publish_errors", "Records whose publishing failed, by error",
    ["destination", "exception_type"],
)
EVENTS_PUBLISH_DURATION = Histogram(
    "hrtrack_events_publish_duration_seconds", "Send to acknowledgement, per record batch",
    ["destination"], buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "hrtrack_kafka_consumer_lag", "Messages not yet committed by a group", ["topic", "group"]
)


def package_version() -> str:
    try:
        return version("hrtrack")
    except PackageNotFoundError:
        return "0+unknown"


def set_build_info() -> None:
    BUILD_INFO.labels(version=package_version()).set(1)


def kafka_middleware(app_name: str) -> KafkaPrometheusMiddleware:
    return KafkaPrometheusMiddleware(
        registry=REGISTRY, app_name=app_name, metrics_prefix="hrtrack_kafka"
    )


class HttpMetricsMiddleware:
    """Counts and times every request by its route template (bounded labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(method, template, str(status_code)).inc()
            HTTP_DURATION.labels(method, template).observe(time.perf_counter() - started)
