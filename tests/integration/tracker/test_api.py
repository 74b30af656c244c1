"""The tracker's HTTP API: reports with validated transitions, filters and pagination, the
implementation export, and isolation between agencies on every endpoint."""

from __future__ import annotations

import csv
import io
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pytest

from services.tracker.main import build_app
from services.tracker.settings import TrackerSettings
from shared.events import AssignmentEvent
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.tracker.support import (
    announced_assignments,
    assignments_of,
    encoded,
    plan_event,
    produce,
    upr_event,
)
from tests.integration.tracker.test_dead_letters import read_topic

TODAY = date(2010, 5, 15)  # the service clock: the plan's 4th quarter of 2009 is overdue


@dataclass
class World:
    client: httpx.AsyncClient  # coordinator
    app: Any
    plan: str
    a: dict[str, Any]  # two agencies of this module
    b: dict[str, Any]
    recs: dict[str, uuid.UUID]  # name -> recommendation id
    assignment: dict[tuple[str, str], uuid.UUID]  # (rec name, "a"|"b") -> assignment id
    token_a: str
    token_b: str

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_a if who == 'a' else self.token_b}"}


@pytest.fixture(scope="module")
async def world(infra: Infra) -> AsyncIterator[World]:
    settings = TrackerSettings(**infra.env(), consumer_group=unique("tracker-api"),
                               clock=TODAY, outbox_poll_seconds=0.2)
    app = build_app(settings)
    async with running(app, infra.coordinator_token()) as client:
        agencies = {}
        for who in ("a", "b"):
            created = await client.post("/v1/agencies", json={
                "name": f"Agency {who.upper()} {unique()}", "emails": [f"{who}@example.kz"]})
            assert created.status_code == 201, created.text
            agencies[who] = created.json()
        a, b = agencies["a"]["name"], agencies["b"]["name"]
        plan = unique("plan")
        paragraph = f"{random.randint(100, 999)}.{random.randint(1, 99999)}"
        events = {
            "both": plan_event(plan, "1", f"{a}, {b}", deadline="4th quarter of 2009"),
            "a_only": plan_event(plan, "2", a, deadline="2011"),
            "b_only": plan_event(plan, "3", b, deadline="2nd quarter 2010"),
            "a_upr": upr_event(paragraph, [{"name": a, "role": "lead"}], cycle=20),
        }
        await produce(infra.bootstrap, settings.recommendations_topic, encoded(events.values()))
        ids = {k: e.recommendation_id for k, e in events.items()}

        async def all_assigned() -> list[dict[str, Any]]:
            rows = await assignments_of(app.state.sessions, list(ids.values()))
            return rows if len(rows) == 5 else []
        rows = await eventually(all_assigned, timeout=60, what="assignments stored")
        by_rec = {v: k for k, v in ids.items()}
        agency_key = {uuid.UUID(agencies["a"]["id"]): "a", uuid.UUID(agencies["b"]["id"]): "b"}
        assignment = {(by_rec[r["recommendation_id"]], agency_key[r["agency_id"]]): r["id"]
                      for r in rows}
        yield World(client, app, plan, agencies["a"], agencies["b"], ids, assignment,
                    infra.agency_token(uuid.UUID(agencies["a"]["id"])),
                    infra.agency_token(uuid.UUID(agencies["b"]["id"])))


async def published_events(world: World, assignment_id: uuid.UUID, count: int
                           ) -> list[AssignmentEvent]:
    """The assignment's events on the assignments topic (keyed by its recommendation), once
    `count` of them are there."""
    recommendation = next(world.recs[rec] for (rec, _), aid in world.assignment.items()
                          if aid == assignment_id)

    async def enough() -> list[AssignmentEvent]:
        records = [r for r in await read_topic(world.app.state.settings.kafka_bootstrap,
                                               world.app.state.settings.assignments_topic)
                   if r.key == str(recommendation).encode()]
        events = [e for e in announced_assignments(records) if e.assignment_id == assignment_id]
        return events if len(events) >= count else []
    return list(await eventually(enough, timeout=30, what=f"{count} events of {assignment_id}"))


# --- reports --------------------------------------------------------------------------------


async def test_agency_reports_on_its_own_assignment(world: World) -> None:
    aid = world.assignment[("both", "a")]
    posted = await world.client.post(f"/v1/assignments/{aid}/reports", headers=world.headers("a"),
                                     json={"status": "in_progress", "text": "Draft law written",
                                           "evidence_links": ["https://adilet.zan.kz/doc/1"]})
    assert posted.status_code == 201, posted.text
    body = posted.json()
    assert body["report"]["period_start"] == "2010-04-01", "default: the clock's quarter"
    assert body["report"]["evidence_links"] == ["https://adilet.zan.kz/doc/1"]
    assert body["report"]["submitted_by"] == f"agency:{world.a['id']}"
    assert (body["assignment"]["status"], body["assignment"]["version"]) == ("in_progress", 2)

    detail = (await world.client.get(f"/v1/assignments/{aid}", headers=world.headers("a"))).json()
    assert detail["status"] == "in_progress"
    assert [r["text"] for r in detail["reports"]] == ["Draft law written"]
    assert [h["action"] for h in detail["history"]] == [
        "created", "report_submitted", "status_changed"]
    assert detail["history"][2]["data"] == {"from": "not_started", "to": "in_progress"}
    # Owed since the deadline's start (4th quarter of 2009), up to the clock's quarter.
    assert [(p["start"], p["reported"]) for p in detail["report_periods"]] == [
        ("2009-10-01", False), ("2010-01-01", False), ("2010-04-01", True)]
    assert detail["report_periods"][-1]["due"] == "2010-07-10"

    events = await published_events(world, aid, 3)
    assert [e.type.value for e in events] == [
        "assignment.created", "assignment.report_submitted", "assignment.status_changed"]
    assert events[-1].reported_periods == [date(2010, 4, 1)]
    assert events[-1].previous_status == "not_started" and events[-1].version == 2
    assert len({e.event_id for e in events}) == 3

    # A report for an earlier quarter, same status: accepted, no status event.
    late = await world.client.post(f"/v1/assignments/{aid}/reports", headers=world.headers("a"),
                                   json={"status": "in_progress", "text": "Q1 report",
                                         "period": "2010-02-20"})
    assert late.status_code == 201, late.text
    assert late.json()["report"]["period_start"] == "2010-01-01"
    events = await published_events(world, aid, 4)
    assert len(events) == 4
    assert events[-1].type.value == "assignment.report_submitted"
    assert events[-1].reported_periods == [date(2010, 1, 1), date(2010, 4, 1)]


async def test_status_transitions_are_validated(world: World) -> None:
    aid = world.assignment[("both", "b")]
    url = f"/v1/assignments/{aid}/reports"
    done = await world.client.post(url, headers=world.headers("b"),
                                   json={"status": "implemented", "text": "Law adopted"})
    assert done.status_code == 201, done.text
    assert done.json()["assignment"]["closed_at"] is not None
    assert done.json()["assignment"]["overdue"] is False
    events = await published_events(world, aid, 3)
    assert [e.type.value for e in events] == [
        "assignment.created", "assignment.report_submitted", "assignment.closed"]

    back = await world.client.post(url, headers=world.headers("b"),
                                   json={"status": "not_started", "text": "oops"})
    assert back.status_code == 409
    assert back.json()["errors"][0]["field"] == "status"
    assert "implemented to not_started" in back.json()["detail"]

    # Agencies do not cancel their obligations; coordinators may.
    aid_a = world.assignment[("both", "a")]
    refused = await world.client.post(f"/v1/assignments/{aid_a}/reports",
                                      headers=world.headers("a"),
                                      json={"status": "cancelled", "text": "not ours"})
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["field"] == "status"

    reopened = await world.client.post(url, json={"status": "in_progress",
                                                  "text": "reopened by coordinator"})
    assert reopened.status_code == 201
    assert reopened.json()["assignment"]["closed_at"] is None
    assert reopened.json()["report"]["submitted_by"] == "test-coordinator"

    # Nothing was stored by the refused reports.
    detail = (await world.client.get(f"/v1/assignments/{aid}")).json()
    assert [r["status"] for r in detail["reports"]] == ["implemented", "in_progress"]


@pytest.mark.parametrize(("body", "field"), [
    ({"status": "done", "text": "x"}, "status"),
    ({"status": "in_progress", "text": ""}, "text"),
    ({"status": "in_progress"}, "text"),
    ({"status": "in_progress", "text": "x", "evidence_links": ["not a url"]},
     "evidence_links[0]"),
    ({"status": "in_progress", "text": "x", "period": "2010-13-01"}, "period"),
    ({"status": "in_progress", "text": "x", "period": "2010-07-01"}, "period"),  # future
])
async def test_bad_reports_name_the_field(world: World, body: dict[str, Any], field: str) -> None:
    aid = world.assignment[("a_upr", "a")]
    response = await world.client.post(f"/v1/assignments/{aid}/reports",
                                       headers=world.headers("a"), json=body)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_unknown_assignment_is_404(world: World) -> None:
    response = await world.client.post(f"/v1/assignments/{uuid.uuid4()}/reports",
                                       json={"status": "in_progress", "text": "x"})
    assert response.status_code == 404
    assert (await world.client.get("/v1/assignments/not-a-uuid")).status_code == 422


# --- lists, filters, pagination -------------------------------------------------------------


async def test_filters_on_assignments(world: World) -> None:
    a = world.a["id"]

    async def ids(**params: Any) -> set[str]:
        response = await world.client.get("/v1/assignments", params={"agency_id": a, **params})
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == len(page["items"])
        return {i["recommendation_id"] for i in page["items"]}

    rec = {k: str(v) for k, v in world.recs.items()}
    assert await ids() == {rec["both"], rec["a_only"], rec["a_upr"]}
    assert await ids(source="upr") == {rec["a_upr"]}
    assert await ids(source="plan") == {rec["both"], rec["a_only"]}
    assert await ids(overdue="true") == {rec["both"]}  # due 2009-12-31, today 2010-05-15
    assert await ids(overdue="false") == {rec["a_only"], rec["a_upr"]}
    assert await ids(due_before="2010-01-01") == {rec["both"]}
    assert await ids(due_before="2012-01-01", source="plan") == {rec["both"], rec["a_only"]}
    assert await ids(status=["not_started", "in_progress", "partially_implemented",
                             "implemented", "not_implemented", "cancelled"]) == await ids()
    bad = await world.client.get("/v1/assignments", params={"status": "finished"})
    assert bad.status_code == 422 and "status" in bad.json()["detail"]

    page = (await world.client.get(f"/v1/agencies/{a}/assignments",
                                   params={"overdue": "true"})).json()
    assert [i["recommendation_id"] for i in page["items"]] == [rec["both"]]
    assert page["items"][0]["overdue"] is True and page["items"][0]["due"] == "2009-12-31"


async def test_pagination_walks_every_item_once(world: World) -> None:
    url: str | None = f"/v1/agencies/{world.a['id']}/assignments?limit=1"
    seen: list[str] = []
    totals = set()
    while url:
        page = (await world.client.get(url)).json()
        totals.add(page["total"])
        seen += [i["id"] for i in page["items"]]
        url = page["next"]
    assert totals == {3}
    assert len(seen) == len(set(seen)) == 3
    too_big = await world.client.get("/v1/assignments", params={"limit": 5000})
    assert too_big.status_code == 422 and "limit" in too_big.json()["detail"]


async def test_recommendation_list_and_detail(world: World) -> None:
    listed = (await world.client.get("/v1/recommendations",
                                     params={"q": world.plan, "source": "plan"})).json()
    assert listed["total"] == 3
    by_id = {i["id"]: i for i in listed["items"]}
    assert by_id[str(world.recs["b_only"])]["agencies"] == 1
    assert by_id[str(world.recs["both"])]["due"] == "2009-12-31"
    mine = (await world.client.get("/v1/recommendations",
                                   params={"agency_id": world.b["id"]})).json()
    assert {i["id"] for i in mine["items"]} == {str(world.recs["both"]), str(world.recs["b_only"])}

    detail = (await world.client.get(f"/v1/recommendations/{world.recs['both']}")).json()
    assert {a["agency_name"] for a in detail["assignments"]} == {world.a["name"], world.b["name"]}


# --- isolation --------------------------------------------------------------------------------


def _routes(w: World) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every tracker endpoint that names B's data, as agency A would try it."""
    b_assignment = w.assignment[("b_only", "b")]
    report = {"status": "in_progress", "text": "not mine"}
    return [
        ("GET", f"/v1/assignments/{b_assignment}", None),
        ("POST", f"/v1/assignments/{b_assignment}/reports", report),
        ("GET", f"/v1/agencies/{w.b['id']}/assignments", None),
        ("GET", f"/v1/assignments?agency_id={w.b['id']}", None),
        ("GET", f"/v1/recommendations/{w.recs['b_only']}", None),
        ("GET", f"/v1/recommendations?agency_id={w.b['id']}", None),
    ]


async def test_an_agency_token_never_reaches_another_agency(world: World) -> None:
    for method, url, body in _routes(world):
        response = await world.client.request(method, url, json=body, headers=world.headers("a"))
        assert response.status_code == 404, (method, url, response.text)
        assert world.b["name"] not in response.text
    # The coordinator reaches all of them.
    for method, url, _body in _routes(world):
        if method == "GET":
            assert (await world.client.get(url)).status_code == 200, url

    # Lists and shared recommendations show only the agency's own part.
    a_page = (await world.client.get("/v1/assignments", headers=world.headers("a"))).json()
    assert {i["agency_id"] for i in a_page["items"]} == {world.a["id"]}
    assert a_page["total"] == 3
    shared = (await world.client.get(f"/v1/recommendations/{world.recs['both']}",
                                     headers=world.headers("a"))).json()
    assert [a["agency_id"] for a in shared["assignments"]] == [world.a["id"]]
    recs = (await world.client.get("/v1/recommendations", headers=world.headers("a"))).json()
    assert {i["id"] for i in recs["items"]} == {
        str(world.recs[k]) for k in ("both", "a_only", "a_upr")}
    agencies = (await world.client.get("/v1/agencies", headers=world.headers("a"))).json()
    assert [a["id"] for a in agencies] == [world.a["id"]]

    # Coordinator-only endpoints: 403 for an agency token.
    coordinator_only: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/v1/agencies", {"name": "Sneaky Ministry"}),
        ("PUT", f"/v1/agencies/{world.a['id']}", {"emails": ["x@example.kz"]}),
        ("PUT", f"/v1/agencies/{world.b['id']}", {"emails": ["x@example.kz"]}),
        ("GET", "/v1/reports/implementation", None),
    ]
    for method, url, body in coordinator_only:
        response = await world.client.request(method, url, json=body, headers=world.headers("a"))
        assert response.status_code == 403, (method, url)

    # And B's assignment was not touched.
    detail = (await world.client.get(f"/v1/assignments/{world.assignment[('b_only', 'b')]}"
                                     )).json()
    assert detail["reports"] == [] and detail["version"] == 1


@pytest.mark.parametrize(("method", "url"), [
    ("GET", "/v1/assignments"), ("GET", f"/v1/assignments/{uuid.uuid4()}"),
    ("POST", f"/v1/assignments/{uuid.uuid4()}/reports"), ("GET", "/v1/agencies"),
    ("POST", "/v1/agencies"), ("PUT", f"/v1/agencies/{uuid.uuid4()}"),
    ("GET", f"/v1/agencies/{uuid.uuid4()}/assignments"), ("GET", "/v1/recommendations"),
    ("GET", f"/v1/recommendations/{uuid.uuid4()}"), ("GET", "/v1/reports/implementation"),
])
async def test_every_endpoint_needs_a_valid_token(world: World, method: str, url: str) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer forged.token.here"}):
        response = await world.client.request(method, url, headers=headers, json={})
        assert response.status_code == 401, (url, headers)


# --- the implementation export ------------------------------------------------------------------


async def test_implementation_export(world: World) -> None:
    aid = world.assignment[("b_only", "b")]
    reported = await world.client.post(f"/v1/assignments/{aid}/reports", headers=world.headers("b"),
                                       json={"status": "partially_implemented",
                                             "text": "Two of three regions done"})
    assert reported.status_code == 201

    as_json = await world.client.get("/v1/reports/implementation",
                                     params={"source": "plan", "format": "json"})
    assert as_json.status_code == 200
    rows = {r["recommendation_id"]: r for r in as_json.json()["items"]}
    assert as_json.json()["count"] == len(as_json.json()["items"])
    assert all(r["source"] == "plan" for r in rows.values())
    mine = {k: rows[str(v)] for k, v in world.recs.items() if k != "a_upr"}
    assert str(world.recs["a_upr"]) not in rows
    b_only = mine["b_only"]
    assert b_only["agencies"] == [{"agency_id": world.b["id"], "name": world.b["name"],
                                   "role": "lead", "status": "partially_implemented"}]
    assert b_only["status"] == "partially_implemented"
    assert b_only["latest_report_text"] == "Two of three regions done"
    assert b_only["latest_report_date"] and b_only["latest_report_agency"] == world.b["name"]
    assert b_only["due"] == "2010-06-30"
    both = mine["both"]
    assert [(a["name"], a["role"]) for a in both["agencies"]] == [
        (world.a["name"], "lead"), (world.b["name"], "co")]

    as_csv = await world.client.get("/v1/reports/implementation",
                                    params={"source": "plan", "format": "csv"})
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(table) == len(rows)
    line = next(r for r in table if r["reference"] == b_only["reference"])
    assert line["agencies"] == f"{world.b['name']} (lead): partially_implemented"
    assert line["status"] == "partially_implemented"
    assert line["latest_report_text"] == "Two of three regions done"

    every = (await world.client.get("/v1/reports/implementation")).json()
    assert {str(v) for v in world.recs.values()} <= {r["recommendation_id"]
                                                     for r in every["items"]}
    bad = await world.client.get("/v1/reports/implementation", params={"format": "pdf"})
    assert bad.status_code == 422 and "format" in bad.json()["detail"]


async def test_metrics_describe_the_state(world: World) -> None:
    from services.tracker.metrics import refresh

    await refresh(world.app.state.engine, TODAY)
    text = (await world.client.get("/metrics")).text
    for series in ('hrtrack_recommendations{source="plan"}', 'hrtrack_assignments{status=',
                   f'hrtrack_assignments_by_agency{{agency="{world.a["name"]}",status=',
                   "hrtrack_assignments_overdue ", "hrtrack_assignments_due_this_quarter ",
                   'hrtrack_reports_submitted_total{status="in_progress"}',
                   'hrtrack_reports_submitted_total{status="cancelled"} 0.0',
                   "hrtrack_agencies_needing_review ", "hrtrack_outbox_backlog "):
        assert series in text, series
    overdue = next(line for line in text.splitlines()
                   if line.startswith("hrtrack_assignments_overdue "))
    assert float(overdue.split()[1]) >= 1
