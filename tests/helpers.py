"""Small helpers the tests share: waiting for a condition, reading a topic, reading the
SMTP sink."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer

from hrtrack.stack import ManagedProcess, service_process
from tests.conftest import unique

T = TypeVar("T")


async def read_records(bootstrap: str, topic: str, count: int, timeout: float = 60.0
                       ) -> list[Any]:
    """The first `count` records of a topic (all partitions), read by a new group."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                group_id=unique("read"),
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                session_timeout_ms=2000, heartbeat_interval_ms=300)
    await consumer.start()
    try:
        records: list[Any] = []
        async with asyncio.timeout(timeout):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0,
                     interval: float = 0.2, what: str = "condition") -> T:
    """Poll `check` until it returns a truthy value (or stops raising AssertionError), and
    return that value: a check may answer None for "not yet", the result is never None."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s" + (f": {last}" if last else ""))


def read_mails(mail_dir: Path) -> list[EmailMessage]:
    mails = []
    for path in sorted(mail_dir.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mails.append(message)
    return mails


def mails_to(mail_dir: Path, address: str) -> list[EmailMessage]:
    return [m for m in read_mails(mail_dir) if address in str(m.get("To", ""))]


def plain_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "mail has no text/plain part"
    return str(part.get_content())


@dataclass
class ServiceProcess:
    """One service run as a real process (to kill it with SIGKILL and start it again)."""

    service: str
    env: dict[str, str]
    port: int
    log: Path
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ManagedProcess:
        self.process = service_process(self.service, self.port, self.log, self.env)
        self.process.start()
        return self.process

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    async def wait_ready(self, timeout: float = 90) -> None:
        async def ready() -> bool:
            assert self.process is not None and self.process.running, self.log_tail()
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(self.url + "/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, timeout=timeout, interval=0.2,
                         what=f"{self.service} process ready")
