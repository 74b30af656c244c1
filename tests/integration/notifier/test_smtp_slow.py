"""A slow SMTP server (issue 7's fault suite; down, 4xx and 5xx are in test_smtp_outage.py,
test_smtp_errors.py and test_delivery_connection.py):

- slow but within the timeout: every digest is delivered once, the pass says so;
- slower than the timeout at the end of the message, then fast again: the digests are
  retried with backoff until delivered; a copy the server took after the notifier gave up
  makes a duplicate with the same Message-ID (so the receiving side can drop it), none is
  missing and the ledger holds each reminder once;
- a server that never greets, then one that stalls mid-session: the pass ends within its
  timeouts, the digests wait, and a working server on the same port gets them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any, NamedTuple

import httpx
from aiosmtpd.controller import Controller
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hrtrack.stack import free_port
from services.notifier.main import build_app
from services.notifier.settings import NotifierSettings
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.notifier.support import (
    TEST_POLICY,
    Agency,
    Assignment,
    Mail,
    Timeline,
    emails_total,
    expected_reminders,
    load_book,
    notifier_settings,
    parse_mail,
)

# Far-future days (30 days before 31 March), one per test: no other module's passes get here.
WITHIN, BEYOND, STALLED = date(2081, 3, 1), date(2082, 3, 1), date(2083, 3, 1)
# A hang guard for one pass (it ends within its SMTP timeouts: a few seconds), not a speed
# requirement: a hung pass fails the test with a clear message instead of the suite timeout.
PASS_GUARD_SECONDS = 120


class SlowServer:
    """An SMTP server (aiosmtpd handler) whose answers take their time.

    ``data_delay``: seconds before the answer to a message (after its final dot). The message
    is taken when the delay is over, even if the client has hung up by then, as a real MTA
    that queued it would: the client never hears the "250", and its retry is a duplicate.
    ``stall_mail``: MAIL is never answered (until the client hangs up)."""

    def __init__(self, data_delay: float = 0.0, stall_mail: bool = False) -> None:
        self.data_delay = data_delay
        self.stall_mail = stall_mail
        self.accepted: list[bytes] = []
        self.slow_answers = 0  # messages answered after a delay
        self.stalled_mails = 0  # MAIL commands left unanswered
        self.lock = threading.Lock()
        self._taking: set[asyncio.Task[None]] = set()  # messages being taken, late or not

    @property
    def in_flight(self) -> int:
        return len(self._taking)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any,  # noqa: N802
                          address: str, mail_options: list[str]) -> str:
        if self.stall_mail:
            with self.lock:
                self.stalled_mails += 1
            await asyncio.sleep(3600)  # cancelled by aiosmtpd when the client hangs up
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        # Shielded: aiosmtpd cancels the handler when the client hangs up, the taking goes on.
        task = asyncio.ensure_future(self._take(raw, self.data_delay))
        self._taking.add(task)
        task.add_done_callback(self._taking.discard)
        await asyncio.shield(task)
        return "250 Message accepted"

    async def _take(self, raw: bytes, delay: float) -> None:
        if delay > 0:
            with self.lock:
                self.slow_answers += 1
            await asyncio.sleep(delay)
        with self.lock:
            self.accepted.append(raw)

    def mails(self, domain: str) -> list[Mail]:
        with self.lock:
            accepted = list(self.accepted)
        return [m for m in map(parse_mail, accepted) if m.to.endswith(f"@{domain}")]


@contextlib.contextmanager
def smtp_server(handler: SlowServer, port: int) -> Iterator[Controller]:
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@contextlib.asynccontextmanager
async def silent_server(port: int) -> AsyncIterator[None]:
    """Takes connections and never says a word (no greeting): held until the client hangs
    up."""
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


def world(tag: str, due: date, agencies: int) -> tuple[str, list[Agency], list[Assignment]]:
    domain = f"{tag}.hrtrack.test"
    found = [Agency(f"Agency {n} {tag}", [f"a{n}@{domain}"]) for n in range(agencies)]
    work = [Assignment(a, due, date(due.year, 1, 1)) for a in found]
    return domain, found, work


def settings_for(infra: Infra, tag: str, domain: str, port: int, timeout: float
                 ) -> NotifierSettings:
    return notifier_settings(infra, tag, smtp_port=port, smtp_timeout_seconds=timeout,
                             coordinator_emails=[f"coordinators@{domain}"],
                             delivery_retry_seconds=0.2, delivery_max_backoff_seconds=1.0)


async def run_pass(client: httpx.AsyncClient, day: date) -> dict[str, Any]:
    answer = await asyncio.wait_for(
        client.post("/v1/reminders/run", params={"as_of": str(day)}), PASS_GUARD_SECONDS)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def ledger(client: httpx.AsyncClient, agencies: list[Agency]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for agency in agencies:
        answer = await client.get("/v1/reminders", params={"recipient": agency.emails[0],
                                                           "limit": 5000})
        assert answer.status_code == 200, answer.text
        rows += answer.json()
    return rows


def mine(entries: list[dict[str, Any]], domain: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["recipient"].endswith(f"@{domain}")]


def check_delivered(mails: list[Mail], rows: list[dict[str, Any]], work: list[Assignment],
                    day: date, settings: NotifierSettings, *, copies_at_most: bool = False
                    ) -> None:
    """Every reminder due is in the ledger once and sent; every recipient has its digest
    (and, with ``copies_at_most``, perhaps duplicates of it, never more than its attempts),
    every copy with the Message-ID the ledger gives and the same reminders."""
    expected = expected_reminders(Timeline(work), [day], TEST_POLICY,
                                  list(settings.coordinator_emails))
    keys = [(r["recipient"], date.fromisoformat(r["as_of"]), r["assignment_id"],
             r["due_kind"], date.fromisoformat(r["due_date"]), r["kind"]) for r in rows]
    assert len(keys) == len(set(keys)), "a reminder is in the ledger twice"
    assert sorted(keys) == sorted((*k, kind.value) for k, kinds in expected.items()
                                  for kind in kinds)
    assert {r["status"] for r in rows} == {"sent"}

    by_recipient: dict[str, list[Mail]] = defaultdict(list)
    for mail in mails:
        by_recipient[mail.to].append(mail)
    digests = {r["recipient"]: r for r in rows}  # one digest per recipient on that day
    assert set(by_recipient) == set(digests), "a digest is missing"
    for recipient, copies in by_recipient.items():
        entry = digests[recipient]
        assert {r["digest_id"] for r in rows if r["recipient"] == recipient} == {
            entry["digest_id"]}
        if copies_at_most:
            assert len(copies) <= entry["attempts"], (recipient, len(copies), entry["attempts"])
        else:
            assert len(copies) == 1 and entry["attempts"] == 1, (recipient, len(copies))
        # Duplicates are the same digest: same Message-ID (the ledger's), day and reminders.
        assert {m.message_id for m in copies} == {entry["message_id"]}
        assert {m.as_of for m in copies} == {day}
        assert {tuple(sorted(m.reminder_keys())) for m in copies} == {
            tuple(sorted(k for k in expected if k[0] == recipient))}


class Book(NamedTuple):
    """A running notifier (SMTP on ``port``) whose book holds one test's world."""

    domain: str
    agencies: list[Agency]
    work: list[Assignment]
    settings: NotifierSettings
    port: int
    engine: AsyncEngine
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def notifier_with_book(infra: Infra, prefix: str, due: date, agencies: int,
                             timeout: float, handler: SlowServer | None = None
                             ) -> AsyncIterator[Book]:
    """A notifier on a free SMTP port (served by ``handler`` if given) with the book
    loaded; the engine is disposed of on the way out."""
    port, tag = free_port(), unique(prefix)
    domain, found, work = world(tag, due, agencies)
    settings = settings_for(infra, tag, domain, port, timeout)
    engine = create_async_engine(infra.database_url)
    try:
        with smtp_server(handler, port) if handler is not None else contextlib.nullcontext():
            async with running(build_app(settings), infra.coordinator_token()) as client:
                await load_book(infra, settings, engine, found, work)
                yield Book(domain, found, work, settings, port, engine, client)
    finally:
        await engine.dispose()


async def delivered(client: httpx.AsyncClient, agencies: list[Agency]
                    ) -> list[dict[str, Any]]:
    rows = await ledger(client, agencies)
    return rows if all(r["status"] == "sent" for r in rows) else []


async def test_slow_within_the_timeout_every_digest_once(infra: Infra) -> None:
    handler = SlowServer(data_delay=0.6)
    async with notifier_with_book(infra, "smtp-slow-ok", date(2081, 3, 31), 3, timeout=5.0,
                                  handler=handler) as book:
        domain, agencies, client = book.domain, book.agencies, book.client
        report = await run_pass(client, WITHIN)
        sent = mine(report["sent"], domain)
        assert sorted(d["recipient"] for d in sent) == sorted(
            a.emails[0] for a in agencies)
        assert {d["attempts"] for d in sent} == {1}
        assert mine(report["retrying"], domain) == []
        assert mine(report["failed"], domain) == []
        rows = await ledger(client, agencies)
        assert {(r["status"], r["attempts"]) for r in rows} == {("sent", 1)}

        # Running the day again sends nothing.
        again = await run_pass(client, WITHIN)
        assert mine(again["sent"] + again["retrying"] + again["failed"], domain) == []
    assert handler.slow_answers == len(agencies), "every answer took its time"
    check_delivered(handler.mails(domain), rows, book.work, WITHIN, book.settings)
    assert {m.message_id for m in handler.mails(domain)} == {d["message_id"] for d in sent}


async def test_slower_than_the_timeout_retried_until_delivered(infra: Infra) -> None:
    handler = SlowServer(data_delay=1.5)
    async with notifier_with_book(infra, "smtp-slow-late", date(2082, 3, 31), 2, timeout=0.5,
                                  handler=handler) as book:
        domain, agencies, client = book.domain, book.agencies, book.client
        retried_before = emails_total((await client.get("/metrics")).text, "retried")

        report = await run_pass(client, BEYOND)
        assert mine(report["sent"], domain) == []
        assert mine(report["failed"], domain) == []
        retrying = mine(report["retrying"], domain)
        assert {d["recipient"] for d in retrying} == {a.emails[0] for a in agencies}
        assert all("no answer to the message" in d["error"] for d in retrying), retrying

        async def retried() -> bool:
            rows = await ledger(client, agencies)
            assert {r["status"] for r in rows} == {"pending"}, rows
            assert all(r["last_error"] for r in rows)
            return len(rows) == len(agencies) and all(r["attempts"] >= 2 for r in rows)

        # Still slow: the digests wait and are tried again, every attempt counted.
        await eventually(retried, timeout=30, what="every digest retried")
        await check_backing_off(book.engine, domain)
        metrics = (await client.get("/metrics")).text
        assert emails_total(metrics, "retried") >= retried_before + 2 * len(agencies)

        handler.data_delay = 0.0  # fast again

        rows = await eventually(lambda: delivered(client, agencies), timeout=30,
                                what="every digest delivered")
        # The copies the server took after the notifier gave up are all in.
        await eventually(lambda: _idle(handler), timeout=30, what="the server idle")
    mails = handler.mails(domain)
    check_delivered(mails, rows, book.work, BEYOND, book.settings, copies_at_most=True)
    # Each slow attempt left a copy at the server: the duplicates happened, and carry the
    # first copy's Message-ID (checked above), so the receiving MTA can drop them.
    assert all(sum(m.to == a.emails[0] for m in mails) >= 2 for a in agencies), [
        m.to for m in mails]


async def _idle(handler: SlowServer) -> bool:
    return handler.in_flight == 0


async def check_backing_off(engine: AsyncEngine, domain: str) -> None:
    """A digest whose message the server may have taken keeps its backoff: it is not marked
    "server unreachable", whose digests a successful probe (the slow server answers EHLO
    in time) sends again at once, a copy per retry round."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT recipient, status, server_unreachable, next_attempt_at IS NOT NULL "
            "FROM notifier.digests WHERE recipient LIKE :domain"),
            {"domain": f"%@{domain}"})).all()
    assert rows and all(r[1] == "sent" or (not r[2] and r[3]) for r in rows), rows


async def test_a_stalled_server_holds_nothing_up(infra: Infra) -> None:
    async with notifier_with_book(infra, "smtp-stall", date(2083, 3, 31), 2,
                                  timeout=0.75) as book:
        domain, agencies, client, port = book.domain, book.agencies, book.client, book.port

        # No greeting: each attempt ends at its timeout, the pass ends, nothing is lost.
        async with silent_server(port):
            report = await run_pass(client, STALLED)
            assert mine(report["sent"], domain) == []
            assert mine(report["failed"], domain) == []
            assert {d["recipient"] for d in mine(report["retrying"], domain)} == {
                a.emails[0] for a in agencies}
            rows = await ledger(client, agencies)
            assert {r["status"] for r in rows} == {"pending"}
            attempts = {r["recipient"]: r["attempts"] for r in rows}
            assert min(attempts.values()) >= 1

        # Greets, then never answers MAIL: still waiting, still tried.
        stalling = SlowServer(stall_mail=True)
        with smtp_server(stalling, port):
            async def tried_again() -> bool:
                rows = await ledger(client, agencies)
                assert {r["status"] for r in rows} == {"pending"}, rows
                return all(r["attempts"] > attempts[r["recipient"]] for r in rows) \
                    and stalling.stalled_mails >= len(agencies)

            await eventually(tried_again, timeout=30, what="every digest tried again")
        assert stalling.accepted == []

        # A working server on the same port: all delivered.
        working = SlowServer()
        with smtp_server(working, port):
            rows = await eventually(lambda: delivered(client, agencies), timeout=30,
                                    what="every digest delivered")
    # No message ever reached the stalled servers: exactly one copy each.
    check_delivered(working.mails(domain), rows, book.work, STALLED, book.settings,
                    copies_at_most=True)
    assert sorted(m.to for m in working.mails(domain)) == sorted(a.emails[0] for a in agencies)
