"""Bad bodies on every body-taking endpoint of intake and the tracker: oversized (declared
and streamed), not UTF-8, nested too deeply, not JSON, in another content type, or carrying
text PostgreSQL cannot store. Each is a 4xx naming what is wrong and where, never a 5xx;
the same endpoints take a good body afterwards. Also the bad parameters schemathesis found
(a NUL in a query, an offset past PostgreSQL's bigint).

One intake and one tracker app (real broker and PostgreSQL) serve the whole module, with a
small body limit so oversized bodies stay cheap.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.intake.main import build_app as build_intake
from services.intake.settings import IntakeSettings
from services.tracker.main import build_app as build_tracker
from services.tracker.settings import TrackerSettings
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.tracker.support import encoded, plan_event, produce

LIMIT = 64 * 1024
CHUNK = 8 * 1024


@dataclass
class Apps:
    intake: httpx.AsyncClient
    tracker: httpx.AsyncClient
    agency_id: str
    assignment_id: str
    tag: str


@pytest.fixture(scope="module")
async def apps(infra: Infra) -> AsyncIterator[Apps]:
    tag = unique("bad")
    recommendations_topic = f"recommendations-{tag}"
    intake = build_intake(IntakeSettings(**infra.env(), max_body_bytes=LIMIT,
                                         recommendations_topic=recommendations_topic))
    tracker = build_tracker(TrackerSettings(
        **infra.env(), max_body_bytes=LIMIT, consumer_group=tag, directory_file=None,
        recommendations_topic=recommendations_topic, assignments_topic=f"assignments-{tag}",
        agencies_topic=f"agencies-{tag}"))
    token = infra.coordinator_token()
    async with running(intake, token) as intake_client, running(tracker, token) as client:
        name = f"Agency of bad bodies {tag}"
        created = await client.post("/v1/agencies", json={"name": name})
        assert created.status_code == 201, created.text
        agency_id = created.json()["id"]
        await produce(infra.bootstrap, recommendations_topic,
                      encoded([plan_event(f"P-{tag}", "1", [{"name": name, "role": "lead"}])]))

        async def assignment() -> str | None:
            page = (await client.get(f"/v1/agencies/{agency_id}/assignments")).json()
            return page["items"][0]["id"] if page["items"] else None
        assignment_id = await eventually(assignment, what="the assignment stored")
        yield Apps(intake_client, client, agency_id, assignment_id, tag)


@dataclass(frozen=True)
class Endpoint:
    service: str  # "intake" | "tracker"
    method: str
    path: str
    content_type: str
    good: Any  # a body it takes (bytes, or JSON)
    nul_body: Any  # JSON (or bytes) with a NUL in a text field
    nul_field: str  # the field a NUL there is reported in

    @property
    def json(self) -> bool:
        return self.content_type == "application/json"


def plan_item(tag: str, text: str = "Adopt a law.") -> dict[str, Any]:
    return {"source": "plan", "plan": f"P-{tag}", "chapter": "The Right to Life",
            "number": "9", "text": text, "deadline": "2011"}


def endpoints(tag: str) -> list[Endpoint]:
    return [
        Endpoint("intake", "POST", "/v1/recommendations", "application/json",
                 plan_item(tag), plan_item(tag, "bad \x00 text"), "text"),
        Endpoint("intake", "POST", "/v1/imports/plan", "text/plain",
                 b"No. Action Deadline Executors\n", None, ""),
        Endpoint("intake", "POST", "/v1/imports/csv?source=plan&plan=P&chapter=C", "text/csv",
                 b"number,text\r\n1,Adopt.\r\n", b"number,text\r\n1,bad \x00 text\r\n",
                 "text"),
        Endpoint("tracker", "POST", "/v1/agencies", "application/json",
                 {"name": f"Another agency {tag}"}, {"name": "Ministry of \x00"}, "name"),
        Endpoint("tracker", "PUT", "/v1/agencies/{agency}", "application/json",
                 {"language": "ru"}, {"aliases": ["MoJ", "Mo\x00J"]}, "aliases[1]"),
        Endpoint("tracker", "POST", "/v1/assignments/{assignment}/reports",
                 "application/json", {"status": "in_progress", "text": "Drafted."},
                 {"status": "in_progress", "text": "Drafted \x00."}, "text"),
    ]


ENDPOINT_IDS = ["recommendations", "plan", "csv", "agencies-post", "agencies-put", "reports"]
JSON_BODIES = [0, 3, 4, 5]  # the others take text (a plan document, CSV)
NUL_FIELDS = [0, 2, 3, 4, 5]  # a plan document with a NUL has no action to name it in
TRACKER = [3, 4, 5]  # intake reads its bodies itself, whatever their content type


async def send(apps: Apps, endpoint: Endpoint, body: Any, content_type: str | None = None,
               extra_headers: dict[str, str] | None = None) -> httpx.Response:
    client = apps.intake if endpoint.service == "intake" else apps.tracker
    path = endpoint.path.format(agency=apps.agency_id, assignment=apps.assignment_id)
    if not isinstance(body, bytes) and not hasattr(body, "__aiter__"):
        body = json.dumps(body).encode()
    headers = {"content-type": content_type or endpoint.content_type, **(extra_headers or {})}
    response = await client.request(endpoint.method, path, content=body, headers=headers)
    assert response.status_code < 500, response.text
    return response


def detail(response: httpx.Response) -> str:
    answer = response.json()
    assert isinstance(answer["detail"], str) and answer["detail"]
    return answer["detail"]


def endpoint_params(indexes: list[int]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("index", indexes, ids=[ENDPOINT_IDS[i] for i in indexes])


@pytest.fixture
def endpoint(index: int, apps: Apps) -> Endpoint:
    return endpoints(apps.tag)[index]


every_endpoint = endpoint_params(list(range(len(ENDPOINT_IDS))))


@every_endpoint
async def test_a_good_body_is_taken(apps: Apps, endpoint: Endpoint) -> None:
    """The control: what makes the other answers 4xx is the body alone."""
    response = await send(apps, endpoint, endpoint.good)
    if endpoint.path == "/v1/imports/plan":  # a header row alone: no action, 422 naming it
        assert response.status_code == 422 and "no action table" in detail(response)
    else:
        assert response.status_code in (200, 201, 202), response.text


@every_endpoint
async def test_oversized_declared_body_is_413_before_it_is_read(
        apps: Apps, endpoint: Endpoint) -> None:
    body = b"x" * (LIMIT + 1)
    response = await send(apps, endpoint, body)
    assert response.status_code == 413
    assert detail(response) == f"request body over the limit of {LIMIT} bytes"


@every_endpoint
async def test_oversized_streamed_body_is_413_as_it_passes_the_limit(
        apps: Apps, endpoint: Endpoint) -> None:
    sent = 0

    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        nonlocal sent
        for _ in range(20 * LIMIT // CHUNK):
            sent += 1
            yield b" " * CHUNK

    response = await send(apps, endpoint, stream())
    assert response.status_code == 413
    assert detail(response) == f"request body over the limit of {LIMIT} bytes"
    assert sent <= LIMIT // CHUNK + 2, f"read {sent} chunks of a body refused after {LIMIT} B"


@every_endpoint
async def test_non_utf8_body_is_400_naming_the_byte(apps: Apps, endpoint: Endpoint) -> None:
    body = (b'{"name": "Caf\xe9"}' if endpoint.json
            else b"No. Action Deadline Executors\n1 Caf\xe9 2011 MoJ\n")
    response = await send(apps, endpoint, body)
    assert response.status_code == 400
    assert "not UTF-8: byte 0xe9 at offset" in detail(response)


@endpoint_params(JSON_BODIES)
async def test_deeply_nested_json_is_400(apps: Apps, endpoint: Endpoint) -> None:
    for levels in (40, 30_000):  # past the limit; past the JSON decoder's recursion
        body = ('{"items": ' + "[" * levels + "]" * levels + "}").encode()
        response = await send(apps, endpoint, body)
        assert response.status_code == 400, (levels, response.text)
        assert detail(response) == "body is nested deeper than 32 levels"


@endpoint_params(JSON_BODIES)
async def test_not_json_is_400_naming_line_and_column(apps: Apps, endpoint: Endpoint) -> None:
    response = await send(apps, endpoint, b'{"name": "x",\n oops}')
    assert response.status_code == 400
    assert detail(response).startswith("body is not valid JSON: Expecting property name")
    assert "line 2 column 2" in detail(response)


@endpoint_params(NUL_FIELDS)
async def test_nul_in_text_is_422_naming_the_field(apps: Apps, endpoint: Endpoint) -> None:
    response = await send(apps, endpoint, endpoint.nul_body)
    assert response.status_code == 422, response.text
    answer = response.json()
    fields = [e["field"] for e in answer.get("errors", [])] + [
        e["field"] for r in answer.get("rejected", []) for e in r["errors"]]
    assert endpoint.nul_field in fields, answer
    assert "NUL" in json.dumps(answer)


@endpoint_params(JSON_BODIES)
async def test_lone_surrogate_is_422_not_500(apps: Apps, endpoint: Endpoint) -> None:
    """JSON can spell a lone surrogate ("\\ud800"), which UTF-8 and PostgreSQL cannot hold
    (a text body cannot: it is UTF-8 or refused)."""
    good = dict(endpoint.good)
    key = "text" if "text" in good else "name" if "name" in good else "aliases"
    good[key] = ["ok", "\ud800"] if key == "aliases" else "x \ud800"
    response = await send(apps, endpoint, json.dumps(good).encode())
    assert response.status_code == 422, response.text
    assert "surrogate" in detail(response) or "unicode" in detail(response).lower()


@endpoint_params(TRACKER)
async def test_tracker_refuses_other_content_types_with_415(apps: Apps,
                                                           endpoint: Endpoint) -> None:
    response = await send(apps, endpoint, endpoint.good, content_type="text/plain")
    assert response.status_code == 415
    assert "application/json" in detail(response)


async def test_multipart_csv_over_the_limit_or_not_utf8(apps: Apps) -> None:
    endpoint = endpoints(apps.tag)[2]
    for data, status, message in [
        (b"number,text\r\n1,Caf\xe9\r\n", 400, "CSV is not UTF-8: byte 0xe9"),
        (b"number,text\r\n" + b"1,x\r\n" * (LIMIT // 4), 413, "over the limit"),
    ]:
        boundary = "hrtrack-bad-bodies"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"r.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode() + data + \
            f"\r\n--{boundary}--\r\n".encode()
        response = await send(apps, endpoint, body,
                              content_type=f"multipart/form-data; boundary={boundary}")
        assert response.status_code == status, response.text
        assert message in detail(response)


@pytest.mark.parametrize(("query", "field"), [
    ({"q": "\x00"}, "query.q"),
    ({"q": "a\x00b", "limit": "5"}, "query.q"),
    ({"offset": str(2**70)}, "query.offset"),
    ({"offset": "-1"}, "query.offset"),
    ({"source": "ngo"}, "query.source"),
])
async def test_bad_query_parameters_are_422_naming_them(apps: Apps, query: dict[str, str],
                                                        field: str) -> None:
    response = await apps.tracker.get("/v1/recommendations", params=query)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_nul_in_an_intake_query_parameter_is_422(apps: Apps) -> None:
    response = await apps.intake.post("/v1/imports/plan", params={"plan": "NHRAP\x00"},
                                      content=b"No. Action Deadline Executors\n",
                                      headers={"content-type": "text/plain"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "query.plan"
