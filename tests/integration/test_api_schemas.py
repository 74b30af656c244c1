"""Property-based requests against every service's OpenAPI, on the real processes.

Schemathesis generates valid and invalid requests from each service's own schema and
checks that nothing answers 5xx and that every answer matches the documented schema
(status code, content type, body).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from hrtrack.devstack import DevStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    dev = DevStack(tmp_path_factory.mktemp("schemas"),
                   extra_env={"HRTRACK_KAFKA_SESSION_TIMEOUT_MS": "2000",
                              "HRTRACK_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
                              "HRTRACK_PASS_INTERVAL_SECONDS": "0"})
    try:
        dev.start()
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def auth(stack: DevStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.info()['coordinator_token']}"}


def service_schema(stack: DevStack, service: str) -> Any:
    schema = schemathesis.openapi.from_url(f"{stack.url(service)}/openapi.json")
    # Deterministic runs, sized for CI: every operation, a modest number of examples.
    return schema


@pytest.fixture(scope="module")
def intake_schema(stack: DevStack) -> Any:
    return service_schema(stack, "intake")


@pytest.fixture(scope="module")
def tracker_schema(stack: DevStack) -> Any:
    return service_schema(stack, "tracker")


@pytest.fixture(scope="module")
def notifier_schema(stack: DevStack) -> Any:
    return service_schema(stack, "notifier")


intake = schemathesis.pytest.from_fixture("intake_schema")
tracker = schemathesis.pytest.from_fixture("tracker_schema")
notifier = schemathesis.pytest.from_fixture("notifier_schema")

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@intake.parametrize()
@SETTINGS
def test_intake_api(case: Any, auth: dict[str, str]) -> None:
    case.call_and_validate(headers=auth)


@tracker.parametrize()
@SETTINGS
def test_tracker_api(case: Any, auth: dict[str, str]) -> None:
    case.call_and_validate(headers=auth)


@notifier.parametrize()
@SETTINGS
def test_notifier_api(case: Any, auth: dict[str, str]) -> None:
    case.call_and_validate(headers=auth)
