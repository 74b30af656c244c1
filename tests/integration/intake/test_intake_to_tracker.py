"""Intake and the tracker together on the real broker and database: what intake accepts
reaches the tracker, whole documents and big batches included, and versions are right.

Both apps run on topics of their own (a 10,000-item batch must not flood the other tests'
consumers); rows are told apart by unique plan ids.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import text

from services.intake.main import build_app as build_intake
from services.intake.settings import IntakeSettings
from services.tracker.main import build_app as build_tracker
from services.tracker.settings import TrackerSettings
from tests.conftest import Infra, running, unique
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[3]
PLAN_FILE = ROOT / "data" / "national-action-plan-2009-2012.txt"
UPR_SAMPLE = ROOT / "data" / "samples" / "upr.csv"


@dataclass
class Stack:
    intake: httpx.AsyncClient
    tracker: httpx.AsyncClient
    engine: Any

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def plan_rows(self, plan: str) -> int:
        count: int = await self.scalar(
            "SELECT count(*) FROM tracker.recommendations WHERE payload->>'plan' = :plan",
            plan=plan)
        return count


@pytest_asyncio.fixture(scope="module")
async def stack(infra: Infra) -> AsyncIterator[Stack]:
    suffix = unique("intake-it")
    recommendations_topic = f"recommendations.{suffix}"
    tracker_app = build_tracker(TrackerSettings(
        **infra.env(), recommendations_topic=recommendations_topic,
        consumer_group=f"tracker-{suffix}", assignments_topic=f"assignments.{suffix}",
        agencies_topic=f"agencies.{suffix}"))
    intake_app = build_intake(IntakeSettings(**infra.env(),
                                             recommendations_topic=recommendations_topic))
    token = infra.coordinator_token()
    async with running(tracker_app, token) as tracker, running(intake_app, token) as intake:
        yield Stack(intake, tracker, tracker_app.state.engine)


async def test_the_plan_document_reaches_the_tracker(stack: Stack) -> None:
    plan = unique("NHRAP")
    response = await stack.intake.post(
        "/v1/imports/plan", params={"plan": plan}, content=PLAN_FILE.read_bytes(),
        headers={"content-type": "text/plain; charset=utf-8"})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["count"], answer["rejected"]) == (74, [])
    assert answer["title"] == "National Human Rights Action Plan of Kazakhstan for 2009-2012"

    async def all_stored() -> bool:
        return await stack.plan_rows(plan) == 74

    await eventually(all_stored, timeout=60, what="74 plan actions in the tracker")
    first = (await stack.tracker.get(f"/v1/recommendations/{answer['accepted'][0]}")).json()
    assert first["payload"]["chapter"] == "The Right to Life"
    assert first["payload"]["plan_period"] == [2009, 2012]
    assert first["deadline"]["due"] == "2011-12-31"
    assert [a["role"] for a in first["assignments"]].count("lead") == 1
    flagged = await stack.scalar(
        "SELECT count(*) FROM tracker.recommendations WHERE payload->>'plan' = :plan "
        "AND needs_deadline", plan=plan)
    assert flagged == 9  # list items whose years date only past events: kept, flagged


async def test_identical_repush_changes_nothing_and_a_change_is_version_2(stack: Stack) -> None:
    item = {"source": "plan", "plan": unique("P"), "chapter": "The Right to Life",
            "number": "1", "text": "Study the question.", "deadline": "2011",
            "executors": "Ministry of Justice"}
    first = await stack.intake.post("/v1/recommendations", json=item)
    assert first.status_code == 202, first.text
    rec_id = first.json()["id"]

    async def stored() -> dict[str, Any] | None:
        got = await stack.tracker.get(f"/v1/recommendations/{rec_id}")
        return got.json() if got.status_code == 200 else None

    v1 = await eventually(stored, what="version 1 in the tracker")
    assert v1["version"] == 1

    # The identical re-push, then a change, on the same key: one partition, in this order.
    again = await stack.intake.post("/v1/recommendations", json=item)
    assert again.status_code == 202 and again.json()["id"] == rec_id
    changed = {**item, "text": "Study the question and report.", "deadline": "2012"}
    assert (await stack.intake.post("/v1/recommendations", json=changed)).status_code == 202

    async def updated() -> dict[str, Any] | None:
        rec = await stored()
        return rec if rec and rec["text"] == changed["text"] else None

    v2 = await eventually(updated, what="the changed version in the tracker")
    assert v2["version"] == 2  # the identical re-push did not count as a version
    assert v2["deadline"]["due"] == "2012-12-31"
    assert v2["assignments"][0]["due"] == "2012-12-31"
    # Version 2 is the recommendation row; the version it replaced is archived.
    archived = await stack.scalar(
        "SELECT string_agg(version || ':' || (payload->>'text'), ',') "
        "FROM tracker.recommendation_versions WHERE recommendation_id = :id", id=rec_id)
    assert archived == f"1:{item['text']}"


async def test_a_10000_item_batch_is_accepted_in_one_request_and_all_reach_the_tracker(
    stack: Stack,
) -> None:
    plan = unique("BATCH")
    items = [{"source": "plan", "plan": plan, "plan_period": [2009, 2012],
              "chapter": f"Chapter {n // 100}", "number": str(n % 100 + 1),
              "text": f"Action {n}: hold a seminar on the rights of detainees.",
              "deadline": ["1st", "2nd", "3rd", "4th"][n % 4] + " quarter of 2010",
              "executors": "Ministry of Justice"}
             for n in range(10_000)]
    response = await stack.intake.post("/v1/recommendations", json={"items": items})
    assert response.status_code == 202, response.text[:500]
    answer = response.json()
    assert (answer["count"], len(set(answer["accepted"])), answer["rejected"]) == (
        10_000, 10_000, [])

    async def all_stored() -> bool:
        return await stack.plan_rows(plan) == 10_000

    await eventually(all_stored, timeout=120, interval=0.5, what="10,000 rows in the tracker")
    assignments = await stack.scalar(
        "SELECT count(*) FROM tracker.assignments a JOIN tracker.recommendations r "
        "ON r.id = a.recommendation_id WHERE r.payload->>'plan' = :plan", plan=plan)
    assert assignments == 10_000


async def test_a_upr_info_csv_reaches_the_tracker_with_every_field(stack: Stack) -> None:
    # The sample's paragraphs, moved to a number of their own so runs do not meet.
    prefix = str(random.randint(100_000, 999_999))
    body = UPR_SAMPLE.read_bytes().replace(b",97.", f",{prefix}.".encode())
    response = await stack.intake.post("/v1/imports/csv", params={"source": "upr"},
                                       content=body, headers={"content-type": "text/csv"})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["count"], answer["rejected"]) == (5, [])

    async def stored() -> dict[str, Any] | None:
        got = await stack.tracker.get(f"/v1/recommendations/{answer['accepted'][0]}")
        return got.json() if got.status_code == 200 else None

    rec = await eventually(stored, what="the first UPR row in the tracker")
    assert rec["reference"] == f"KAZ / cycle 1 / {prefix}.1"
    payload = rec["payload"]
    assert (payload["session"], payload["symbol"], payload["response"]) == (
        7, "A/HRC/14/10", "supported")
    assert payload["recommending_states"] == ["Germany", "Czech Republic"]
    assert payload["themes"] == ["Torture", "International instruments"]
    assert {d["kind"] for d in rec["due_dates"]} >= {"mid_term", "next_review"}
    assert sorted(a["agency_name"] for a in rec["assignments"]) == [
        "Ministry of Foreign Affairs", "Ministry of Justice"]
