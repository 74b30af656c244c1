"""HTML, SQL and email-header injection in every text field that flows end to end.

Each payload goes into a recommendation posted to intake (its text, plan id, chapter and
subsection, which make up its reference, and a theme), into the name of the agency it
names as executor, and into that agency's progress report. Then, on the real broker,
PostgreSQL and SMTP sink:

- the tracker's API gives every field back byte for byte, and its tables are intact;
- the notifier's digest to the agency escapes it in the HTML part, keeps it readable in
  the text part (whitespace collapsed, as for any text), and never lets it split a header:
  no Bcc header, the Subject one line.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from markupsafe import escape
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.intake.main import build_app as build_intake
from services.intake.settings import IntakeSettings
from services.notifier.main import build_app as build_notifier
from services.tracker.main import build_app as build_tracker
from services.tracker.settings import TrackerSettings
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.notifier.support import notifier_settings

PAYLOADS = {
    "html": "<script>alert(1)</script>",
    "sql": "'); DROP TABLE tracker.assignments; --",
    "header": "Subject\r\nBcc: attacker@example.com",
}
# A year of its own: no other module's reminder passes reach these due dates.
DUE, START, AS_OF = date(2061, 6, 30), date(2061, 4, 1), date(2061, 5, 31)  # 30 days before


def flat(value: str) -> str:
    """Whitespace collapsed, as the digest shows every text (a line break included)."""
    return " ".join(value.split())


@dataclass
class Case:
    kind: str
    payload: str
    agency_name: str
    email: str
    item: dict[str, Any]  # as posted to intake
    recommendation: dict[str, Any]  # as the tracker answers
    agency: dict[str, Any]
    report_text: str
    assignment: dict[str, Any]  # GET /v1/assignments/{id}, after the report
    mail: EmailMessage
    raw_mail: bytes


@dataclass
class World:
    tracker: httpx.AsyncClient
    engine: AsyncEngine
    cases: dict[str, Case]


def read_mails(infra: Infra, address: str) -> list[tuple[EmailMessage, bytes]]:
    found = []
    for path in sorted(infra.mail_dir.glob("*.eml")):
        raw = path.read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if address in str(message.get("To", "")):
            found.append((message, raw))
    return found


@pytest.fixture(scope="module")
async def world(infra: Infra) -> AsyncIterator[World]:
    tag = unique("inject")
    notifier_config = notifier_settings(infra, tag)
    recommendations_topic = f"recommendations-{tag}"
    intake = build_intake(IntakeSettings(
        **infra.env(), recommendations_topic=recommendations_topic))
    tracker = build_tracker(TrackerSettings(
        **infra.env(), consumer_group=f"tracker-{tag}", directory_file=None,
        outbox_poll_seconds=0.2, recommendations_topic=recommendations_topic,
        assignments_topic=notifier_config.assignments_topic,
        agencies_topic=notifier_config.agencies_topic))
    notifier = build_notifier(notifier_config)
    engine = create_async_engine(infra.database_url)
    token = infra.coordinator_token()
    try:
        async with running(intake, token) as intake_client, \
                running(tracker, token) as client, running(notifier, token) as notifier_client:
            made = await asyncio.gather(*(one_case(infra, intake_client, client, tag, kind,
                                                    payload) for kind, payload in PAYLOADS.items()))
            cases = {case.kind: case for case in made}

            async def notifier_knows_all() -> bool:
                async with engine.connect() as conn:
                    versions: dict[str, int] = dict((await conn.execute(text(
                        "SELECT id::text, version FROM notifier.assignments "
                        "WHERE id = ANY(CAST(:ids AS uuid[]))"),
                        {"ids": [c.assignment["id"] for c in cases.values()]})).all())
                    names: dict[str, str] = dict((await conn.execute(text(
                        "SELECT id::text, name FROM notifier.agency_contacts "
                        "WHERE id = ANY(CAST(:ids AS uuid[]))"),
                        {"ids": [c.agency["id"] for c in cases.values()]})).all())
                return all(versions.get(c.assignment["id"], 0) >= c.assignment["version"]
                           and names.get(c.agency["id"]) == c.agency_name
                           for c in cases.values())
            await eventually(notifier_knows_all, timeout=60,
                             what="the notifier holding the assignments and agencies")
            ran = await notifier_client.post("/v1/reminders/run",
                                             params={"as_of": AS_OF.isoformat()})
            assert ran.status_code == 200, ran.text
            for case in cases.values():
                mails = read_mails(infra, case.email)
                assert len(mails) == 1, f"one digest for {case.email}, got {len(mails)}"
                case.mail, case.raw_mail = mails[0]
            yield World(client, engine, cases)
    finally:
        await engine.dispose()


async def one_case(infra: Infra, intake: httpx.AsyncClient, tracker: httpx.AsyncClient,
                   tag: str, kind: str, payload: str) -> Case:
    """The payload through intake, the tracker's directory and a progress report."""
    agency_name = f"{payload} {tag}-{kind}"
    address = f"{kind}-{tag}@example.kz"
    created = await tracker.post("/v1/agencies", json={"name": agency_name,
                                                        "emails": [address]})
    assert created.status_code == 201, created.text
    item = {"source": "plan", "plan": f"NHRAP {tag}-{kind} {payload}", "chapter": payload,
            "section": "recommendations", "subsection": payload, "number": "1",
            "text": payload, "themes": [payload],
            "deadline": {"start": START.isoformat(), "due": DUE.isoformat()},
            "executors": [{"name": agency_name, "role": "lead"}]}
    posted = await intake.post("/v1/recommendations", json=item)
    assert posted.status_code == 202, posted.text
    rec_id = posted.json()["id"]

    async def stored() -> dict[str, Any] | None:
        got = await tracker.get(f"/v1/recommendations/{rec_id}")
        return got.json() if got.status_code == 200 and got.json()["assignments"] else None
    recommendation = await eventually(stored, what=f"the {kind} recommendation stored")
    assignment_id = recommendation["assignments"][0]["id"]

    report_text = f"Report on {payload}"
    agency_token = infra.agency_token(created.json()["id"])
    reported = await tracker.post(f"/v1/assignments/{assignment_id}/reports",
                                  json={"status": "in_progress", "text": report_text},
                                  headers={"Authorization": f"Bearer {agency_token}"})
    assert reported.status_code == 201, reported.text
    assert reported.json()["report"]["text"] == report_text
    assignment = (await tracker.get(f"/v1/assignments/{assignment_id}")).json()
    agencies = (await tracker.get("/v1/agencies")).json()
    agency = next(a for a in agencies if a["id"] == created.json()["id"])
    return Case(kind, payload, agency_name, address, item, recommendation, agency,
                report_text, assignment, EmailMessage(), b"")


KINDS = list(PAYLOADS)


@pytest.mark.parametrize("kind", KINDS)
async def test_every_field_is_stored_verbatim(world: World, kind: str) -> None:
    case = world.cases[kind]
    rec, item = case.recommendation, case.item
    assert rec["text"] == case.payload
    for field in ("plan", "chapter", "subsection", "themes"):
        assert rec["payload"][field] == item[field], field
    assert rec["reference"] == (f"{item['plan']} / {case.payload} / {case.payload} / "
                                "recommendation 1")
    assert case.agency["name"] == case.agency_name
    assert rec["assignments"][0]["agency_name"] == case.agency_name
    assert case.assignment["agency_name"] == case.agency_name
    assert case.assignment["text"] == case.payload
    assert [r["text"] for r in case.assignment["reports"]] == [case.report_text]


@pytest.mark.parametrize("kind", KINDS)
async def test_text_search_takes_the_payload_as_text(world: World, kind: str) -> None:
    case = world.cases[kind]
    found = await world.tracker.get("/v1/recommendations", params={"q": case.payload})
    assert found.status_code == 200, found.text
    assert case.recommendation["id"] in [r["id"] for r in found.json()["items"]]


async def test_tables_are_intact(world: World) -> None:
    async with world.engine.connect() as conn:
        for table in ("assignments", "recommendations", "agencies", "progress_reports"):
            exists = (await conn.execute(text("SELECT to_regclass(:name)"),
                                         {"name": f"tracker.{table}"})).scalar_one()
            assert exists is not None, f"tracker.{table} is gone"
        ids = [c.assignment["id"] for c in world.cases.values()]
        kept = (await conn.execute(text(
            "SELECT count(*) FROM tracker.assignments WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": ids})).scalar_one()
    assert kept == len(ids)


@pytest.mark.parametrize("kind", KINDS)
async def test_mail_headers_are_never_split(world: World, kind: str) -> None:
    case = world.cases[kind]
    header_block = re.split(rb"\r?\n\r?\n", case.raw_mail, maxsplit=1)[0]
    names = [line.split(b":", 1)[0].strip().lower()
             for line in header_block.splitlines() if line[:1] not in (b" ", b"\t")]
    assert b"bcc" not in names and b"cc" not in names, header_block
    assert case.mail.get_all("Bcc") is None
    for name, value in case.mail.items():
        assert "\r" not in str(value) and "\n" not in str(value), (name, value)
    assert case.mail["To"].addresses[0].addr_spec == case.email
    assert len(case.mail["To"].addresses) == 1
    subject = str(case.mail["Subject"])
    assert flat(case.agency_name) in subject, subject  # the name, on one line


@pytest.mark.parametrize("kind", KINDS)
async def test_html_part_escapes_the_payload(world: World, kind: str) -> None:
    case = world.cases[kind]
    part = case.mail.get_body(preferencelist=("html",))
    assert part is not None
    html = str(part.get_content())
    shown = flat(case.payload)
    assert str(escape(shown)) in html  # the text, as text
    assert str(escape(flat(case.agency_name))) in html
    if escape(shown) != shown:  # "<" and "'" are escaped: the raw payload never appears
        assert shown not in html
    assert "<script>" not in html


@pytest.mark.parametrize("kind", KINDS)
async def test_text_part_shows_the_payload_as_written(world: World, kind: str) -> None:
    case = world.cases[kind]
    part = case.mail.get_body(preferencelist=("plain",))
    assert part is not None
    plain = str(part.get_content())
    assert flat(case.payload) in plain
    assert flat(case.agency_name) in plain
    assert f"{flat(case.item['plan'])} / {flat(case.payload)}" in plain  # the reference
