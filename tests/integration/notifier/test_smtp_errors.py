"""An SMTP server that answers 4xx (the digest is retried with backoff until delivered) and
5xx (the digest is marked failed, counted, and visible to the coordinators)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import create_async_engine

from hrtrack.stack import free_port
from services.notifier.main import build_app
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.notifier.support import (
    Agency,
    Assignment,
    RefusesRejectAddresses,
    emails_total,
    load_book,
    notifier_settings,
    parse_mail,
)

DAY = date(2047, 3, 1)  # 30 days before 31 March


class PickyServer(RefusesRejectAddresses):
    """Refuses ``reject*`` recipients for good (550) and answers the first ``tempfails``
    deliveries to ``temp*`` recipients with 451."""

    def __init__(self, tempfails: int) -> None:
        self.tempfails = tempfails
        self.attempts: Counter[str] = Counter()
        self.accepted: list[bytes] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        to = envelope.rcpt_tos[0]
        with self.lock:
            self.attempts[to] += 1
            if to.startswith("temp") and self.attempts[to] <= self.tempfails:
                return "451 4.3.0 try again later"
            self.accepted.append(envelope.original_content or envelope.content)
        return "250 Message accepted"


@pytest.fixture(scope="module")
def picky() -> Iterator[tuple[PickyServer, int]]:
    handler = PickyServer(tempfails=2)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


async def test_temporary_failures_retried_permanent_ones_failed_and_visible(
        infra: Infra, picky: tuple[PickyServer, int]) -> None:
    server, port = picky
    tag = unique("smtp-codes")
    domain = f"{tag}.hrtrack.test"
    temp = Agency(f"Ministry of Labour {tag}", [f"temp@{domain}"])
    reject = Agency(f"Ministry of Culture {tag}", [f"reject@{domain}"])
    work = [Assignment(temp, date(2047, 3, 31), date(2047, 1, 1)),
            Assignment(reject, date(2047, 3, 31), date(2047, 1, 1))]
    settings = notifier_settings(infra, tag, smtp_port=port,
                                 coordinator_emails=[f"coordinators@{domain}"],
                                 delivery_retry_seconds=0.2, delivery_max_backoff_seconds=1.0)
    engine = create_async_engine(infra.database_url)
    try:
        async with running(build_app(settings), infra.coordinator_token()) as client:
            await load_book(infra, settings, engine, [temp, reject], work)
            before = (await client.get("/metrics")).text

            report = (await client.post("/v1/reminders/run", params={"as_of": str(DAY)})).json()
            assert [d["recipient"] for d in report["failed"]] == [f"reject@{domain}"]
            assert "550" in report["failed"][0]["error"]
            assert f"temp@{domain}" in [d["recipient"] for d in report["retrying"]]

            async def temp_sent() -> dict[str, Any] | None:
                rows = (await client.get("/v1/reminders",
                                         params={"recipient": f"temp@{domain}"})).json()
                return rows[0] if rows and rows[0]["status"] == "sent" else None

            entry = await eventually(temp_sent, timeout=30, what="the 451 digest delivered")
            assert entry["attempts"] == 3 and server.attempts[f"temp@{domain}"] == 3

            # Coordinators see the permanent failure, with the server's answer.
            failed = (await client.get("/v1/reminders", params={
                "status": "failed", "recipient": f"reject@{domain}"})).json()
            assert len(failed) == 1 and failed[0]["attempts"] == 1
            assert "550" in failed[0]["last_error"] and failed[0]["agency_id"] == str(reject.id)
            # The agency sees its own failure; another agency gets a 404 for it.
            own = await client.get("/v1/reminders", params={"status": "failed"}, headers={
                "Authorization": f"Bearer {infra.agency_token(reject.id)}"})
            assert [e["assignment_id"] for e in own.json()] == [str(work[1].id)]
            other = await client.get("/v1/reminders", params={"agency_id": str(reject.id)},
                                     headers={"Authorization":
                                              f"Bearer {infra.agency_token(temp.id)}"})
            assert other.status_code == 404

            # A failed digest is not sent again by a later pass of the same day.
            again = (await client.post("/v1/reminders/run", params={"as_of": str(DAY)})).json()
            assert [d for d in again["sent"] + again["failed"]
                    if d["recipient"].endswith(domain)] == []

            after = (await client.get("/metrics")).text
            assert emails_total(after, "failed") >= emails_total(before, "failed") + 1
            assert emails_total(after, "retried") >= emails_total(before, "retried") + 2
            assert emails_total(after, "sent") >= emails_total(before, "sent") + 1
    finally:
        await engine.dispose()

    delivered = [parse_mail(raw) for raw in server.accepted]
    mine = [m for m in delivered if m.to.endswith(domain)]
    assert [(m.to, m.as_of) for m in mine] == [(f"temp@{domain}", DAY)]
