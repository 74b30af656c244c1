"""A recipient with more reminders on one day than a digest lists (HRTRACK_DIGEST_MAX_ITEMS)
gets one digest: the most urgent listed in full (and in its calendar), the others counted in
its summary, and every one of them recorded in the ledger as sent with that digest."""

from __future__ import annotations

import re
import uuid
from datetime import date
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import create_async_engine

from services.notifier.main import build_app
from tests.conftest import Infra, running, unique
from tests.integration.notifier.support import (
    Agency,
    Assignment,
    load_book,
    notifier_settings,
    read_mails,
)

# Far in the future: no other module's passes reach these due dates.
DAY = date(2072, 3, 1)
OVERDUE_DUE = date(2072, 2, 29)  # overdue day 1
UPCOMING_DUE = date(2072, 3, 31)  # 30 days before
CAP, OVERDUE, UPCOMING = 5, 3, 9  # 12 reminders: 5 listed, 7 summarised


def table(text: str, heading: str) -> list[tuple[int, str]]:
    """A plain-text summary table's rows: (count, the rest of the line)."""
    lines = text.split("\n")
    rows = []
    for line in lines[lines.index(heading) + 3:]:
        if not line.strip():
            break
        count, rest = line.strip().split(" ", 1)
        rows.append((int(count), rest.strip()))
    return rows


async def test_capped_digest_lists_the_most_urgent_and_records_every_reminder(
        infra: Infra) -> None:
    tag = unique("digest-cap")
    domain = f"{tag}.hrtrack.test"
    agency = Agency(f"Ministry of Justice <{tag}>", [f"moj@{domain}"])
    overdue = [Assignment(agency, OVERDUE_DUE, date(2072, 1, 1)) for _ in range(OVERDUE)]
    upcoming = [Assignment(agency, UPCOMING_DUE, date(2072, 1, 1)) for _ in range(UPCOMING)]
    work = overdue + upcoming
    settings = notifier_settings(infra, tag, digest_max_items=CAP,
                                 coordinator_emails=[f"coordinators@{domain}"],
                                 public_url=f"https://{domain}/notifier/")
    engine = create_async_engine(infra.database_url)
    try:
        async with running(build_app(settings), infra.coordinator_token()) as client:
            await load_book(infra, settings, engine, [agency], work)

            report = (await client.post("/v1/reminders/run", params={"as_of": str(DAY)})).json()
            assert report["claimed"] == OVERDUE + UPCOMING and report["errors"] == 0
            assert [(d["recipient"], d["items"]) for d in report["sent"]] == [
                (f"moj@{domain}", OVERDUE + UPCOMING)]
            assert report["failed"] == [] and report["retrying"] == []

            # One digest to the recipient: the 3 overdue and the 2 first upcoming in full.
            mails = read_mails(infra.mail_dir, [f"moj@{domain}"])
            assert len(mails) == 1
            mail = mails[0]
            assert mail.as_of == DAY
            listed = re.findall(r"^(\d+)\. (.+)$", mail.text, flags=re.MULTILINE)
            assert [int(n) for n, _ in listed] == [1, 2, 3, 4, 5]
            references = [ref for _, ref in listed]
            assert set(references[:OVERDUE]) == {a.reference for a in overdue}
            assert set(references[OVERDUE:]) <= {a.reference for a in upcoming}
            # The calendar: the listed ones only.
            in_calendar = {key[2] for key in mail.reminder_keys()}
            by_reference = {a.reference: str(a.id) for a in work}
            assert in_calendar == {by_reference[r] for r in references}

            # The other 7, counted: by agency and by due date, adding up.
            text = mail.text
            assert "Not listed above: 7 more items" in text
            assert table(text, "By agency") == [(7, f"0  {agency.name} ({agency.id})")]
            assert table(text, "By due date and reminder") == [
                (7, "31 March 2072 (30 days left) — advance reminder")]
            assert f"Ministry of Justice &lt;{tag}&gt;" in mail.html
            assert "7 more items" in mail.html and "By agency" in mail.html
            # ... with where to see them all: this notifier's ledger.
            link = next(line for line in text.split("\n") if line.startswith("GET https://"))
            url = urlsplit(link.removeprefix("GET "))
            assert url.netloc == domain and url.path == "/notifier/v1/reminders"

            # The ledger behind that link: all 12, sent with that one digest.
            ledger = (await client.get(f"/v1/reminders?{url.query}")).json()
            assert sorted(e["assignment_id"] for e in ledger) == sorted(str(a.id) for a in work)
            assert {(e["status"], e["digest_id"], e["message_id"]) for e in ledger} == {
                ("sent", ledger[0]["digest_id"], mail.message_id)}
            uuid.UUID(ledger[0]["digest_id"])

            # Never twice: the day again sends nothing.
            again = (await client.post("/v1/reminders/run", params={"as_of": str(DAY)})).json()
            assert again["claimed"] == 0 and again["sent"] == []
            assert len(read_mails(infra.mail_dir, [f"moj@{domain}"])) == 1
    finally:
        await engine.dispose()
