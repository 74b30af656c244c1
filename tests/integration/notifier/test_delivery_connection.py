"""One SMTP connection carries many digests: an answer about one message (4xx, 5xx) leaves
the others sent and only that one retried or failed; a connection the server closed between
messages is opened again without losing or doubling anything; a large message is streamed
to the server intact."""

from __future__ import annotations

import asyncio
import io
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import create_async_engine

from hrtrack.stack import free_port
from services.notifier import mailer
from services.notifier.main import build_app
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.notifier.support import (
    Agency,
    Assignment,
    RefusesRejectAddresses,
    load_book,
    notifier_settings,
    parse_mail,
)

DAY = date(2055, 3, 1)  # 30 days before 31 March; no other module's reminders are due then


@dataclass
class Scripted(RefusesRejectAddresses):
    """Accepts every message, except: ``script[(connection, n)]`` answers the n-th DATA of
    that connection (both counted from 1); each connection is closed (421) at its MAIL
    number ``close_before``; RCPT to reject@... is refused (550)."""

    script: dict[tuple[int, int], str] = field(default_factory=dict)
    close_before: int | None = None
    sessions: dict[int, int] = field(default_factory=dict)  # id(session) -> connection no.
    mails: Counter[int] = field(default_factory=Counter)  # MAIL commands per connection
    data: Counter[int] = field(default_factory=Counter)  # DATA commands per connection
    accepted: list[tuple[int, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connection(self, session: Any) -> int:
        with self.lock:
            return self.sessions.setdefault(id(session), len(self.sessions) + 1)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any,  # noqa: N802
                          address: str, mail_options: list[str]) -> str:
        number = self.connection(session)
        with self.lock:
            self.mails[number] += 1
            closing = self.mails[number] == self.close_before
        if closing:
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.4.2 idle too long, closing"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        number = self.connection(session)
        with self.lock:
            self.data[number] += 1
            answer = self.script.get((number, self.data[number]), "250 Message accepted")
            if answer.startswith("250"):
                self.accepted.append((number, envelope.original_content or envelope.content))
        return answer


@pytest.fixture
def server() -> Iterator[tuple[Scripted, mailer.SmtpConfig]]:
    handler = Scripted()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, mailer.SmtpConfig("127.0.0.1", port, 5.0)
    finally:
        controller.stop()


def message(n: int, size: int = 0) -> bytes:
    body = b"".join(b".line %d starts with a dot\r\nand this one does not\r\n" % i
                    for i in range(max(size // 48, 1)))
    return (b"From: a@hrtrack.test\r\nTo: b@hrtrack.test\r\nSubject: message %d\r\n\r\n" % n
            + body)


async def send(connection: mailer.Connection, n: int, to: str = "b@hrtrack.test",
               size: int = 0) -> None:
    raw = message(n, size)
    await connection.send(io.BytesIO(raw), len(raw), "a@hrtrack.test", [to])


async def test_answers_about_one_message_leave_the_connection_to_the_others(
        server: tuple[Scripted, mailer.SmtpConfig]) -> None:
    handler, config = server
    handler.script = {(1, 2): "451 4.3.0 try again later"}  # the 2nd DATA (3rd message)
    outcomes: list[str] = []
    async with mailer.Connection(config) as connection:
        for n in range(1, 7):
            try:
                await send(connection, n, "reject@hrtrack.test" if n == 2 else "b@hrtrack.test")
                outcomes.append("sent")
            except mailer.DeliveryError as exc:
                outcomes.append("failed" if exc.permanent else "unreachable" if exc.unreachable
                                else "retry")
    assert outcomes == ["sent", "failed", "retry", "sent", "sent", "sent"]
    assert connection.connections == 1 and len(handler.sessions) == 1
    assert [raw for _c, raw in handler.accepted] == [message(n) for n in (1, 4, 5, 6)]


async def test_a_connection_the_server_closed_is_opened_again(
        server: tuple[Scripted, mailer.SmtpConfig]) -> None:
    handler, config = server
    handler.close_before = 3  # every connection: 421 and closed at its 3rd MAIL
    async with mailer.Connection(config) as connection:
        for n in range(1, 6):
            await send(connection, n)  # no error: nothing of the message had been sent
    assert connection.connections == 3
    assert [raw for _c, raw in handler.accepted] == [message(n) for n in range(1, 6)]
    assert [c for c, _raw in handler.accepted] == [1, 1, 2, 2, 3]


async def test_a_large_message_arrives_intact(server: tuple[Scripted, mailer.SmtpConfig]
                                              ) -> None:
    handler, config = server
    async with mailer.Connection(config) as connection:
        await send(connection, 1, size=6 * 1024 * 1024)  # many blocks, dots at line starts
        await send(connection, 2)
    assert [raw for _c, raw in handler.accepted] == [message(1, 6 * 1024 * 1024), message(2)]


async def test_no_server_is_unreachable() -> None:
    async with mailer.Connection(mailer.SmtpConfig("127.0.0.1", free_port(), 2.0)) as connection:
        with pytest.raises(mailer.DeliveryError) as raised:
            await send(connection, 1)
    assert raised.value.unreachable and not raised.value.permanent


async def test_a_4xx_in_the_middle_of_a_pass_retries_only_that_digest(
        infra: Infra, server: tuple[Scripted, mailer.SmtpConfig]) -> None:
    handler, config = server
    handler.script = {(1, 3): "451 4.3.0 try again later"}
    tag = unique("connection")
    domain = f"{tag}.hrtrack.test"
    agencies = [Agency(f"Agency {n} {tag}", [f"a{n}@{domain}"]) for n in range(5)]
    work = [Assignment(a, date(2055, 3, 31), date(2055, 1, 1)) for a in agencies]
    settings = notifier_settings(infra, tag, smtp_port=config.port,
                                 coordinator_emails=[f"coordinators@{domain}"])
    engine = create_async_engine(infra.database_url)
    try:
        async with running(build_app(settings), infra.coordinator_token()) as client:
            await load_book(infra, settings, engine, agencies, work)
            report = (await client.post("/v1/reminders/run", params={"as_of": str(DAY)})).json()
            # Recipients go in order: a2's digest was the 3rd message of the connection.
            assert sorted(d["recipient"] for d in report["sent"]) == [
                f"a{n}@{domain}" for n in (0, 1, 3, 4)]
            assert [d["recipient"] for d in report["retrying"]] == [f"a2@{domain}"]
            assert [c for c, _raw in handler.accepted] == [1, 1, 1, 1], "one connection"

            async def retried() -> dict[str, Any] | None:
                rows = (await client.get("/v1/reminders",
                                         params={"recipient": f"a2@{domain}"})).json()
                return rows[0] if rows and rows[0]["status"] == "sent" else None

            entry = await eventually(retried, timeout=30, what="the 451 digest delivered")
            assert entry["attempts"] == 2
    finally:
        await engine.dispose()
    mails = [parse_mail(raw) for _c, raw in handler.accepted]
    assert Counter(m.to for m in mails) == {a.emails[0]: 1 for a in agencies}
    assert {m.as_of for m in mails} == {DAY}
