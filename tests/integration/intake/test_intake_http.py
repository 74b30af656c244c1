"""Intake over HTTP against the real broker: every source, every malformed request, imports,
auth, and the documents it serves (OpenAPI, AsyncAPI, metrics).

One intake app serves the whole module; ids are made unique per run (the broker is shared).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from services.intake.main import build_app
from services.intake.settings import IntakeSettings
from shared.auth import Role, create_token
from shared.ids import recommendation_id
from tests.conftest import Infra, running, unique

ROOT = Path(__file__).resolve().parents[3]
PLAN_FILE = ROOT / "data" / "national-action-plan-2009-2012.txt"
EXPORT = ROOT / "tests" / "fixtures" / "upr_info_export.csv"
MAX_BODY = 200_000

# UPR ids are (state, cycle, paragraph): a random paragraph prefix keeps runs apart.
P = str(random.randint(100_000, 999_999))

UPR: dict[str, Any] = {
    "source": "upr", "state": "KAZ", "cycle": 3, "session": 34, "review_date": "2019-11-07",
    "symbol": "A/HRC/43/10", "paragraph": f"{P}.1", "text": "Ratify OP-CAT.",
    "recommending_states": ["Germany"], "response": "supported", "themes": ["torture"],
    "affected_groups": ["detainees"], "sdgs": [16],
}


def treaty(symbol: str) -> dict[str, Any]:
    return {"source": "treaty_body", "state": "KAZ", "committee": "CAT", "symbol": symbol,
            "paragraph": "15", "sub_paragraph": "a", "adopted": "2014-11-21",
            "text": "Investigate.", "follow_up": True, "follow_up_due": "2015-11-28",
            "follow_up_grade": "B", "executors": "Ministry of Internal Affairs"}


def plan(plan_id: str, number: str = "1") -> dict[str, Any]:
    return {"source": "plan", "plan": plan_id, "chapter": "The Right to Life", "number": number,
            "text": "Study.", "deadline": "2011", "executors": "Ministry of Justice"}


@pytest_asyncio.fixture(scope="module")
async def intake(infra: Infra) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(IntakeSettings(**infra.env(), max_body_bytes=MAX_BODY))
    async with running(app, infra.coordinator_token()) as client:
        yield client


# --- each source ------------------------------------------------------------------------------


async def test_one_recommendation_of_each_source(intake: httpx.AsyncClient) -> None:
    symbol = f"CAT/C/KAZ/CO/{unique()}"
    for body, expected in [
        (UPR, recommendation_id("upr", "KAZ", "3", f"{P}.1")),
        (treaty(symbol), recommendation_id("treaty_body", "CAT", symbol, "15", "a")),
        (plan(unique("P")), None),
    ]:
        response = await intake.post("/v1/recommendations", json=body)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["accepted"] == [answer["id"]] and answer["count"] == 1
        if expected:
            assert answer["id"] == str(expected)


async def test_batch_accepts_the_valid_and_names_each_rejected_item(
    intake: httpx.AsyncClient,
) -> None:
    plan_id = unique("P")
    items: list[Any] = [plan(plan_id, str(n)) for n in range(1, 4)]
    items.append({k: v for k, v in UPR.items() if k != "review_date"})
    items.append({**plan(plan_id, "5"), "source": "ngo"})
    items.append("not an object")
    response = await intake.post("/v1/recommendations", json={"items": items})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == [str(recommendation_id("plan", plan_id, "The Right to Life",
                                                        "actions", str(n))) for n in (1, 2, 3)]
    assert answer["count"] == 3
    rejected = {r["index"]: r["reason"] for r in answer["rejected"]}
    assert rejected == {
        3: "items[3].review_date: Field required",
        4: "items[4].source: must be one of upr, treaty_body, plan (got 'ngo')",
        5: "items[5]: must be a JSON object (a recommendation)",
    }


async def test_a_batch_with_nothing_valid_is_422_naming_each_item(
    intake: httpx.AsyncClient,
) -> None:
    response = await intake.post("/v1/recommendations", json={"items": [
        {**UPR, "cycle": "two"}, {**UPR, "review_date": "2019-02-30"}]})
    assert response.status_code == 422
    answer = response.json()
    assert answer["accepted"] == []
    assert [r["errors"][0]["field"] for r in answer["rejected"]] == [
        "items[0].cycle", "items[1].review_date"]


# --- malformed requests -----------------------------------------------------------------------


def _deep(levels: int) -> str:
    return '{"items": [' + "[" * levels + "]" * levels + "]}"


MALFORMED = [
    # (id, body as JSON or raw bytes, status, text the message must contain)
    ("missing field", {k: v for k, v in UPR.items() if k != "paragraph"}, 422,
     "paragraph: Field required"),
    ("missing field in a batch item", {"items": [{k: v for k, v in UPR.items()
                                                  if k != "review_date"}]}, 422,
     "items[0].review_date: Field required"),
    ("wrong enum: response", {**UPR, "response": "accepted"}, 422,
     "response: Input should be 'supported', 'supported_in_part' or 'noted'"),
    ("wrong enum: committee", {**treaty("CAT/C/KAZ/CO/3"), "committee": "HRC"}, 422,
     "committee: Input should be 'CCPR'"),
    ("wrong enum: source", {**UPR, "source": "ngo"}, 422,
     "source: must be one of upr, treaty_body, plan (got 'ngo')"),
    ("bad date", {**UPR, "review_date": "2019-02-30"}, 422,
     "review_date: Input should be a valid date"),
    ("wrong type: integer", {**UPR, "cycle": "third"}, 422,
     "cycle: Input should be a valid integer"),
    ("wrong type: list", {**UPR, "themes": "torture"}, 422,
     "themes: Input should be a valid list"),
    ("wrong type: boolean", {**treaty("CAT/C/KAZ/CO/3"), "follow_up": "often"}, 422,
     "follow_up: Input should be a valid boolean"),
    ("unknown field", {**UPR, "colour": "red"}, 422, "colour: unknown field"),
    ("unknown batch field", {"items": [UPR], "priority": 1}, 422, "priority: unknown field"),
    ("follow-up without due date", {k: v for k, v in treaty("CAT/C/KAZ/CO/3").items()
                                    if k != "follow_up_due"}, 422,
     "follow_up_due: required when follow_up is true"),
    ("bare list", [UPR], 422, 'a batch must be {"items": [...]}'),
    ("oversized body", {**UPR, "text": "x" * MAX_BODY}, 413,
     f"request body over the limit of {MAX_BODY} bytes"),
    ("too many items", {"items": [{}] * 10_001}, 422, "items: at most 10000 per request"),
    ("deeply nested JSON", _deep(40).encode(), 400, "nested deeper than 32 levels"),
    ("absurdly nested JSON", _deep(50_000).encode(), 400, "nested deeper than 32 levels"),
    ("non-UTF-8 body", b'{"source": "upr", "text": "caf\xe9"}', 400,
     "body is not UTF-8: byte 0xe9 at offset 30"),
    ("not JSON", b"source=upr&text=hello", 400, "body is not valid JSON: Expecting value"),
    ("empty body", b"", 400, "body is empty"),
]


@pytest.mark.parametrize(("body", "status", "message"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
async def test_malformed_requests(intake: httpx.AsyncClient, body: Any, status: int,
                                  message: str) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await intake.post("/v1/recommendations", content=content,
                                 headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"], response.text


# --- auth -------------------------------------------------------------------------------------

ENDPOINTS = [("/v1/recommendations", {}), ("/v1/imports/plan", {}),
             ("/v1/imports/csv", {"source": "upr"})]


def _tokens(infra: Infra) -> list[tuple[str, dict[str, str], int, str]]:
    secret = infra.secret
    return [
        ("no token", {}, 401, "missing bearer token"),
        ("not a bearer token", {"Authorization": "Basic dXNlcjpwYXNz"}, 401,
         "missing bearer token"),
        ("garbage", {"Authorization": "Bearer not-a-jwt"}, 401, "invalid token"),
        ("expired", {"Authorization": "Bearer " + create_token(
            secret, Role.COORDINATOR, ttl=timedelta(seconds=-5))}, 401, "token expired"),
        ("bad signature", {"Authorization": "Bearer " + create_token(
            "another-secret-of-at-least-32-bytes!!", Role.COORDINATOR)}, 401,
         "Signature verification failed"),
        ("agency token", {"Authorization": "Bearer " + infra.agency_token(uuid.uuid4())}, 403,
         "coordinator token required"),
    ]


@pytest.mark.parametrize(("path", "params"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
async def test_every_endpoint_checks_the_token(
    intake: httpx.AsyncClient, infra: Infra, path: str, params: dict[str, str]
) -> None:
    for name, headers, status, message in _tokens(infra):
        # A fresh client: the module's one sends a coordinator token by default.
        transport = intake._transport  # noqa: SLF001 - same in-process app
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as anonymous:
            response = await anonymous.post(path, params=params, headers=headers,
                                            content=json.dumps(UPR))
        assert response.status_code == status, (name, response.text)
        assert message in response.json()["detail"], (name, response.text)
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"


# --- the National Plan ------------------------------------------------------------------------


async def test_plan_import_over_the_body_limit_is_413(intake: httpx.AsyncClient) -> None:
    plan_id = unique("NHRAP")
    response = await intake.post("/v1/imports/plan", params={"plan": plan_id},
                                 content=PLAN_FILE.read_bytes(),
                                 headers={"content-type": "text/plain; charset=utf-8"})
    assert response.status_code == 413  # the module's app has a 200 kB body limit
    assert "over the limit" in response.json()["detail"]


async def test_plan_import_of_no_plan_and_of_bad_bytes(intake: httpx.AsyncClient) -> None:
    response = await intake.post("/v1/imports/plan", content=b"Just some prose.\n")
    assert response.status_code == 422
    assert "no action table" in response.json()["detail"]
    response = await intake.post("/v1/imports/plan", content=b"The Right to Life\n\xff\n")
    assert response.status_code == 400
    assert "byte 0xff at offset 18 (line 2)" in response.json()["detail"]


async def test_plan_import_small_document(intake: httpx.AsyncClient) -> None:
    plan_id = unique("NHRAP")
    text = "\n".join([
        "National Human Rights Action Plan of Kazakhstan for 2009-2012", "",
        "The Right to Life", "", "No. Action Deadline Executors",
        "1. Study the question of abolition", "", "2011 Ministry of Justice, Supreme Court",
        "2. Hold a round table", "", "Yearly Human Rights Commission, UNDP (per",
        "agreement)", ""])
    response = await intake.post("/v1/imports/plan", params={"plan": plan_id},
                                 content=text.encode(), headers={"content-type": "text/plain"})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["plan"], answer["period"], answer["count"]) == (plan_id, [2009, 2012], 2)
    assert answer["accepted"] == [
        str(recommendation_id("plan", plan_id, "The Right to Life", "actions", n))
        for n in ("1", "2")]


# --- CSV --------------------------------------------------------------------------------------


def export_csv() -> tuple[str, bytes]:
    prefix = str(random.randint(100_000, 999_999))
    return prefix, EXPORT.read_bytes().replace(b"{P}", prefix.encode())


async def test_csv_upr_info_export_rows_named_by_spreadsheet_number(
    intake: httpx.AsyncClient,
) -> None:
    prefix, body = export_csv()
    response = await intake.post("/v1/imports/csv", params={"source": "upr"}, content=body,
                                 headers={"content-type": "text/csv"})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == [str(recommendation_id("upr", "KAZ", "2", f"{prefix}.{n}"))
                                  for n in (1, 2)]
    assert answer["ignored_columns"] == ["Regional Group"]
    rejected = {r["row"]: r for r in answer["rejected"]}
    assert sorted(rejected) == [4, 6, 7]  # header = row 1; a two-line cell is one row
    assert rejected[4]["errors"][0]["field"] == "review_date"
    assert rejected[4]["errors"][0]["column"] == "Review date"
    assert "response: Input should be 'supported'" in rejected[6]["reason"]
    assert "has 13 cells but the header names 12 columns" in rejected[7]["reason"]


async def test_csv_as_multipart_upload_with_defaults(intake: httpx.AsyncClient) -> None:
    symbol = f"CEDAW/C/KAZ/CO/{unique()}"
    csv_text = "Paragraph,Observation,Follow-up,Follow-up date\r\n12,Adopt a law,yes,2016-11-07\r\n"
    response = await intake.post(
        "/v1/imports/csv",
        params={"source": "treaty_body", "state": "KAZ", "committee": "CEDAW",
                "symbol": symbol, "adopted": "2014-11-07"},
        files={"file": ("observations.csv", csv_text.encode(), "text/csv")})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == [
        str(recommendation_id("treaty_body", "CEDAW", symbol, "12", ""))]


@pytest.mark.parametrize(
    ("params", "body", "status", "message"),
    [
        ({"source": "upr"}, "Recommendation\r\nCaf\u00e9\r\n".encode("cp1252"), 400,
         "CSV is not UTF-8: byte 0xe9 at offset 19 (line 2)"),
        ({"source": "ngo"}, b"text\r\na\r\n", 422, "query.source: Input should be"),
        ({}, b"text\r\na\r\n", 422, "query.source: Field required"),
        ({"source": "upr", "colour": "red"}, b"text\r\na\r\n", 422,
         "query.colour: not a field of a upr recommendation"),
        ({"source": "upr"}, b"", 400, "CSV is empty"),
        ({"source": "upr"}, b"State,Cycle\r\nKAZ,1\r\n", 400, "header: no text column"),
        ({"source": "upr"}, b"text\r\n" + b"a\r\n" * 10_001, 413, "at most 10000 rows"),
        ({"source": "upr"}, b"text\r\n" + b"a" * MAX_BODY, 413, "over the limit"),
    ],
    ids=["non-UTF-8", "wrong source", "no source", "unknown query field", "empty",
         "no text column", "too many rows", "oversized"],
)
async def test_malformed_csv(intake: httpx.AsyncClient, params: dict[str, str], body: bytes,
                             status: int, message: str) -> None:
    response = await intake.post("/v1/imports/csv", params=params, content=body,
                                 headers={"content-type": "text/csv"})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"], response.text


# --- documents --------------------------------------------------------------------------------


async def test_openapi_has_an_example_per_source_and_the_import_bodies(
    intake: httpx.AsyncClient,
) -> None:
    schema = (await intake.get("/openapi.json")).json()
    body = schema["paths"]["/v1/recommendations"]["post"]["requestBody"]["content"]
    examples = body["application/json"]["examples"]
    assert {"upr", "treaty_body", "plan", "batch"} <= set(examples)
    assert examples["treaty_body"]["value"]["committee"] == "CAT"
    assert "text/plain" in schema["paths"]["/v1/imports/plan"]["post"]["requestBody"]["content"]
    csv_body = schema["paths"]["/v1/imports/csv"]["post"]["requestBody"]["content"]
    assert {"text/csv", "multipart/form-data"} <= set(csv_body)
    for name in ("UprRecommendation", "TreatyBodyRecommendation", "PlanRecommendation"):
        assert name in schema["components"]["schemas"]


async def test_asyncapi_documents_the_recommendations_topic(intake: httpx.AsyncClient) -> None:
    response = await intake.get("/asyncapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["asyncapi"].startswith("3.")
    assert spec["channels"]["recommendations"]["address"] == "recommendations"
    event = spec["components"]["schemas"]["RecommendationEvent"]
    assert {"recommendation_id", "content_hash", "payload", "due_dates"} <= set(
        event["properties"])
    page = await intake.get("/asyncapi")
    assert page.status_code == 200 and "asyncapi" in page.text.lower()


async def test_item_counters_exist_from_the_start(intake: httpx.AsyncClient) -> None:
    metrics = (await intake.get("/metrics")).text
    for source in ("upr", "treaty_body", "plan"):
        for outcome in ("accepted", "rejected", "not_acknowledged"):
            assert (f'hrtrack_intake_items_total{{outcome="{outcome}",source="{source}"}}'
                    in metrics), (source, outcome)
