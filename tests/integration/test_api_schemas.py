"""Property-based requests against every service's OpenAPI, on the real processes.

Schemathesis generates valid and invalid requests from each service's own schema, with a
coordinator token, and checks that nothing answers 5xx, that invalid requests are
rejected, and that every answer matches the documented schema (status code, content type,
headers, body). Business rules that a JSON schema cannot express (e.g. a plan period's
first year before its last) are why valid-looking requests may still be refused, so the
`positive_data_acceptance` check is left out.

One worker (`--workers 1`): with two, schemathesis' coverage phase sometimes ends in a
"Runtime Error" (SystemError: AST constructor recursion depth mismatch, after a KeyError in
hypothesis' lambda-source cache). That is CPython 3.11's `ast` module not being thread-safe
(python/cpython#106905): two worker threads describing a `.filter(lambda ...)` of
schemathesis' query-parameter generation at once. Any query parameter triggers it (first
seen on intake's `plan` of /v1/imports/plan), so no schema change avoids it; one worker
does, and makes a run with a given seed reproducible too.

What the runs found and how it was fixed (issue 7): a NUL in a query parameter or JSON text
reached PostgreSQL (500) and an offset past bigint did too (now 422 naming the parameter,
shared.web.CheckedRoute); `0` or "0" was read as the date 1970-01-01 and 0/1 as booleans
(now strict: shared.inputs.IsoDate, StrictInt, StrictBool); too many batch items answered
413 where the schema's maxItems makes it a 422; 405 named only one of a path's methods in
Allow; and the documents lacked the error answers (one `Problem` schema, shared.web), the
/metrics and CSV content types and the response models.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hrtrack.devstack import DevStack
from tests.conftest import STACK_TEST_ENV

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("schemas"), extra_env=STACK_TEST_ENV) as dev:
        yield dev


@pytest.mark.parametrize("service", ["intake", "tracker", "notifier"])
def test_api_matches_its_schema(stack: DevStack, service: str) -> None:
    token = stack.info()["coordinator_token"]
    run = subprocess.run(
        [str(SCHEMATHESIS), "--no-color", "run", f"{stack.url(service)}/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--max-examples", "30", "--seed", "1",
         "--workers", "1", "--exclude-checks", "positive_data_acceptance"],
        capture_output=True, text=True, timeout=600,
    )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, f"schemathesis found problems in {service}:\n{report}"
