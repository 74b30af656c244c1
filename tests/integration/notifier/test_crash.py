"""SIGKILL a real notifier process in the middle of a pass, restart it, and count the mails.

The SMTP server of the test kills the process at a chosen moment of a delivery:
- before it has taken the message: after the restart every reminder is delivered, once;
- after it has stored the message but before the notifier heard "250" (the one window of
  docs/notifier.md): that digest is delivered again, with the same Message-ID, and nothing
  else is doubled.
The replay command then runs against the same process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import create_async_engine

from hrtrack.stack import ManagedProcess, free_port
from tests.conftest import Infra, unique
from tests.helpers import ServiceProcess, eventually
from tests.integration.notifier.support import (
    Agency,
    Assignment,
    Mail,
    parse_mail,
    publish,
    wait_stored,
)

FIRST, SECOND = date(2049, 3, 1), date(2049, 3, 17)  # 30 and 14 days before 31 March
AGENCIES = 6


@dataclass
class ScriptedServer:
    """Accepts every mail, except that the n-th delivery may kill the notifier process."""

    victim: ManagedProcess | None = None
    script: dict[int, str] = field(default_factory=dict)
    count: int = 0
    saved: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.count += 1
            action = self.script.pop(self.count, "accept")
        if action == "kill_before_save":
            assert self.victim is not None
            self.victim.kill()
            return "451 4.3.0 not taken"
        with self.lock:
            self.saved.append(envelope.original_content or envelope.content)
        if action == "save_then_kill":
            assert self.victim is not None
            self.victim.kill()  # stored, and the client never hears "250"
        return "250 Message accepted"

    def mails(self) -> list[Mail]:
        with self.lock:
            return [parse_mail(raw) for raw in self.saved]


@pytest.fixture(scope="module")
async def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[tuple[ServiceProcess, ScriptedServer, dict[str, Any]]]:
    tag = unique("crash")
    domain = f"{tag}.hrtrack.test"
    server = ScriptedServer()
    smtp_port = free_port()
    controller = Controller(server, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    env = {**os.environ,
           "HRTRACK_KAFKA_BOOTSTRAP": infra.bootstrap, "HRTRACK_DATABASE_URL": infra.database_url,
           "HRTRACK_TOKEN_SECRET": infra.secret, "HRTRACK_CONSUMER_GROUP": f"notifier-{tag}",
           "HRTRACK_ASSIGNMENTS_TOPIC": f"assignments-{tag}",
           "HRTRACK_AGENCIES_TOPIC": f"agencies-{tag}",
           "HRTRACK_SMTP_HOST": "127.0.0.1", "HRTRACK_SMTP_PORT": str(smtp_port),
           "HRTRACK_COORDINATOR_EMAILS": json.dumps([f"coordinators@{domain}"]),
           "HRTRACK_PASS_INTERVAL_SECONDS": "0", "HRTRACK_DELIVERY_RETRY_SECONDS": "0.2",
           "HRTRACK_DELIVERY_MAX_BACKOFF_SECONDS": "1", "HRTRACK_TRACKER_LOOKUP": "false",
           "HRTRACK_POLICY__OVERDUE_HORIZON_DAYS": "200",
           "HRTRACK_KAFKA_SESSION_TIMEOUT_MS": "2000", "HRTRACK_KAFKA_HEARTBEAT_INTERVAL_MS": "300"}
    notifier = ServiceProcess("notifier", env, free_port(),
                              tmp_path_factory.mktemp("crash") / "notifier.log")
    agencies = [Agency(f"Agency {n} {tag}", [f"a{n}@{domain}"]) for n in range(AGENCIES)]
    work = [Assignment(a, date(2049, 3, 31), date(2049, 1, 1)) for a in agencies]
    engine = create_async_engine(infra.database_url)
    try:
        server.victim = notifier.start()
        await notifier.wait_ready(60)
        await publish(infra, f"agencies-{tag}", [a.event() for a in agencies])
        await publish(infra, f"assignments-{tag}", [a.event() for a in work])
        await wait_stored(engine, work, agencies)
        yield notifier, server, {"domain": domain, "token": infra.coordinator_token(),
                                 "agencies": agencies}
    finally:
        await engine.dispose()
        if notifier.process is not None:
            notifier.process.stop()
        controller.stop()


async def run_pass_and_get_killed(notifier: ServiceProcess, token: str, day: date) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        with pytest.raises(httpx.TransportError):
            await http.post(f"{notifier.url}/v1/reminders/run", params={"as_of": str(day)},
                            headers={"Authorization": f"Bearer {token}"})
    process = notifier.process
    assert process is not None and process.proc is not None
    # The SMTP server's thread reaps it; wait for that rather than poll() meanwhile.
    await asyncio.to_thread(process.proc.wait, 10)


async def restart_and_finish(notifier: ServiceProcess, server: ScriptedServer, token: str,
                             day: date, expected_mails: int) -> None:
    server.victim = notifier.start()
    await notifier.wait_ready(60)
    async with httpx.AsyncClient(timeout=60) as http:
        again = await http.post(f"{notifier.url}/v1/reminders/run",
                                params={"as_of": str(day)},
                                headers={"Authorization": f"Bearer {token}"})
        assert again.status_code == 200, again.text

    async def all_there() -> bool:
        return len([m for m in server.mails() if m.as_of == day]) >= expected_mails

    await eventually(all_there, timeout=30, what=f"the digests of {day}")
    await asyncio.sleep(0.5)  # anything extra would arrive now


async def test_kill_during_delivery_loses_nothing_and_doubles_nothing(stack: Any) -> None:
    notifier, server, ctx = stack
    server.script = {server.count + 3: "kill_before_save"}
    await run_pass_and_get_killed(notifier, ctx["token"], FIRST)
    assert len(server.mails()) == 2

    await restart_and_finish(notifier, server, ctx["token"], FIRST, AGENCIES)
    mails = [m for m in server.mails() if m.as_of == FIRST]
    assert Counter(m.to for m in mails) == {a.emails[0]: 1 for a in ctx["agencies"]}


async def test_kill_after_the_server_took_the_mail_resends_it_with_the_same_id(
        stack: Any) -> None:
    notifier, server, ctx = stack
    server.script = {server.count + 2: "save_then_kill"}
    await run_pass_and_get_killed(notifier, ctx["token"], SECOND)

    await restart_and_finish(notifier, server, ctx["token"], SECOND, AGENCIES + 1)
    mails = [m for m in server.mails() if m.as_of == SECOND]
    per_recipient = Counter(m.to for m in mails)
    assert set(per_recipient) == {a.emails[0] for a in ctx["agencies"]}
    doubled = [to for to, n in per_recipient.items() if n > 1]
    assert len(doubled) == 1 and per_recipient[doubled[0]] == 2, per_recipient
    ids = {m.message_id for m in mails if m.to == doubled[0]}
    assert len(ids) == 1, "the re-sent digest carries the same Message-ID"
    assert len({m.message_id for m in mails}) == AGENCIES  # deduplicated: once each

    async with httpx.AsyncClient(timeout=30) as http:
        ledger = (await http.get(f"{notifier.url}/v1/reminders", params={"limit": 5000},
                                 headers={"Authorization": f"Bearer {ctx['token']}"})).json()
    mine = [e for e in ledger if e["recipient"].endswith(ctx["domain"])]
    assert len(mine) == 2 * AGENCIES and all(e["status"] == "sent" for e in mine)


async def test_replay_command_runs_a_pass_per_day(stack: Any) -> None:
    notifier, server, ctx = stack
    done = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "hrtrack.cli", "replay", "--from", "2049-03-24",
        "--to", "2049-03-30", "--url", notifier.url, "--token", ctx["token"]],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line[:10] for line in lines[:7]] == [f"2049-03-{d}" for d in range(24, 31)]
    assert lines[0].startswith(f"2049-03-24: {AGENCIES} digests sent ({AGENCIES} reminders)")
    assert lines[6].startswith(f"2049-03-30: {AGENCIES} digests sent")
    assert lines[1].startswith("2049-03-25: 0 digests sent")
    assert lines[-1].startswith("replayed 7 days:")
    for day in (date(2049, 3, 24), date(2049, 3, 30)):
        assert sorted(m.to for m in server.mails() if m.as_of == day) == sorted(
            a.emails[0] for a in ctx["agencies"])

    bad = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "hrtrack.cli", "replay", "--from", "2049-03-30",
        "--to", "2049-03-24", "--url", notifier.url, "--token", ctx["token"]],
        capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "before" in bad.stderr
