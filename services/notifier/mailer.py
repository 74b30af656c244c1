"""SMTP delivery with aiosmtplib: temporary failures are retried, permanent ones reported.

One ``Connection`` carries many messages (a pass sends thousands of digests; a connection,
greeting and EHLO per message cost more than the message itself). Each message is its own
mail transaction, so the server's answer about one message (4xx, 5xx) is about that one
only: the envelope is reset and the connection goes on with the next. A message is read
from a file and written to the server a block at a time, so its size does not matter.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import IO

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol
from prometheus_client import Histogram

SMTP_DURATION = Histogram("hrtrack_smtp_send_duration_seconds", "SMTP send duration",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

BLOCK = 256 * 1024  # bytes read from the message and written to the server at a time
_LINE_START_DOT = re.compile(rb"(?m)^\.")


class DeliveryError(Exception):
    """permanent: a 5xx answer, never retried. unreachable: the server itself could not be
    reached or refused service (connection, timeout, 421), as opposed to a 4xx about this
    message, so a successful probe of the server is reason to retry at once."""

    def __init__(self, message: str, *, permanent: bool, unreachable: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.unreachable = unreachable


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    timeout: float
    username: str | None = None
    password: str | None = None
    starttls: bool = False


def classify(exc: BaseException) -> DeliveryError:
    """What an aiosmtplib (or socket) failure means for the message: 5xx permanent,
    everything else temporary; connection trouble and 421 mean the server is unreachable."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        return DeliveryError(f"recipients refused: {exc}",
                             permanent=all(500 <= c < 600 for c in codes))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(f"SMTP {exc.code}: {exc.message}",
                             permanent=500 <= exc.code < 600, unreachable=exc.code == 421)
    return DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False, unreachable=True)


class _Stale(Exception):
    """A reused connection turned out closed before the server got any of the message."""


def dot_stuff(block: bytes, at_line_start: bool) -> bytes:
    """RFC 5321 4.5.2 for one block of a message: a line starting with "." gets another.
    ``at_line_start``: the previous block ended with a line break (or this is the first)."""
    if b"\n." not in block and not block.startswith(b"."):
        return block  # the usual case (a digest never has a line starting with a dot)
    stuffed = _LINE_START_DOT.sub(b"..", block)
    if not at_line_start and block.startswith(b"."):
        stuffed = stuffed[1:]  # the block starts mid-line: that dot is not at a line start
    return stuffed


class Connection:
    """One SMTP connection, opened on the first message and reused for the next ones;
    closed (QUIT) by ``close()`` or at the end of ``async with``. Not for concurrent use."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: aiosmtplib.SMTP | None = None
        self.connections = 0  # connections opened (a test and the logs look at it)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def send(self, message: IO[bytes], size: int, sender: str,
                   recipients: list[str] | tuple[str, ...]) -> None:
        """Send ``size`` bytes of ``message`` (CRLF line endings, from its current position)
        to ``recipients``. Raises DeliveryError; the connection stays usable after an answer
        about this message, and is dropped (and opened again for the next one) otherwise."""
        started = time.perf_counter()
        start = message.tell()
        try:
            while True:
                reused = self._client is not None and self._client.is_connected
                if not reused:
                    await self._connect()
                try:
                    await self._transaction(message, size, sender, list(recipients),
                                            reused=reused)
                    return
                except _Stale:
                    # The server closed the idle connection (or said 421) before this
                    # message's MAIL: nothing of it was sent, so a new connection is tried.
                    self._drop()
                    message.seek(start)
        finally:
            SMTP_DURATION.observe(time.perf_counter() - started)

    async def _connect(self) -> None:
        self._drop()
        config = self.config
        client = aiosmtplib.SMTP(hostname=config.host, port=config.port,
                                 timeout=config.timeout, username=config.username,
                                 password=config.password, start_tls=config.starttls)
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise classify(exc) from exc
        self._client = client
        self.connections += 1

    async def _transaction(self, message: IO[bytes], size: int, sender: str,
                           recipients: list[str], *, reused: bool) -> None:
        client = self._client
        assert client is not None
        data_started = False
        try:
            if not (sender + "".join(recipients)).isascii():
                if not client.supports_extension("smtputf8"):
                    raise DeliveryError("the SMTP server does not take non-ASCII addresses "
                                        "(no SMTPUTF8)", permanent=True)
                options, encoding = ["SMTPUTF8"], "utf-8"
            else:
                options, encoding = [], "ascii"
            if client.supports_extension("size"):
                options.insert(0, f"SIZE={size}")  # a message too large is refused up front
            try:
                await client.mail(sender, options=options, encoding=encoding)
            except aiosmtplib.SMTPServerDisconnected as exc:
                if reused:
                    raise _Stale from exc
                raise
            except aiosmtplib.SMTPResponseException as exc:
                if reused and exc.code == 421:
                    raise _Stale from exc
                raise
            refused = []
            for recipient in recipients:
                try:
                    await client.rcpt(recipient, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused.append(exc)
            if len(refused) == len(recipients):
                raise aiosmtplib.SMTPRecipientsRefused(refused)
            data_started = True
            await self._data(client, message, size)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused,
                DeliveryError) as exc:
            # An answer about this message: reset the envelope and keep the connection
            # (unless the server is closing it).
            error = classify(exc)
            if error.unreachable or data_started and not client.is_connected:
                self._drop()
            else:
                try:
                    await client.rset()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    self._drop()
            raise error from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop()
            raise classify(exc) from exc

    async def _data(self, client: aiosmtplib.SMTP, message: IO[bytes], size: int) -> None:
        """DATA, the message in blocks (waiting whenever the socket's buffer is full, so at
        most a block or two is in memory), then the final dot and the server's answer."""
        timeout = self.config.timeout
        start = await client.execute_command(b"DATA")
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = client.protocol
        assert protocol is not None
        at_line_start, remaining, last = True, size, b""
        while remaining > 0:
            block = message.read(min(BLOCK, remaining))
            if not block:
                break
            remaining -= len(block)
            protocol.write(dot_stuff(block, at_line_start))
            at_line_start, last = block.endswith(b"\n"), block[-2:]
            await asyncio.wait_for(_drained(protocol), timeout)
        # The answer is read right after the final dot is written, with no await between:
        # read_response() starts listening before any reply can be processed.
        protocol.write(b".\r\n" if last.endswith(b"\r\n") else b"\r\n.\r\n")
        try:
            answer = await protocol.read_response(timeout=timeout)
        except aiosmtplib.SMTPTimeoutError as exc:
            client.close()
            # The whole message is with the server, which may take it and be slow to say so.
            # Temporary, but not "unreachable": that slow server still answers the probe, which
            # would cut the backoff short and leave it another copy every retry round.
            raise DeliveryError(f"no answer to the message within {timeout:g} s ({exc})",
                                permanent=False) from exc
        except aiosmtplib.SMTPServerDisconnected:
            client.close()
            raise
        if answer.code != 250:
            raise aiosmtplib.SMTPDataError(answer.code, answer.message)


async def _drained(protocol: SMTPProtocol) -> None:
    """Until the transport's write buffer is below its high-water mark: aiosmtplib's
    protocol has asyncio's flow control (pause_writing / resume_writing) and this wait."""
    drain = getattr(protocol, "_drain_helper", None)
    if drain is not None:
        await drain()
    else:  # a version without it: at least let the loop write in between
        await asyncio.sleep(0)


async def probe(config: SmtpConfig) -> bool:
    """True when the server answers (connect, EHLO, QUIT): mail may be retried now."""
    client = aiosmtplib.SMTP(hostname=config.host, port=config.port, timeout=config.timeout,
                             start_tls=config.starttls)
    try:
        await client.connect()
        await client.ehlo()
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        return False
    return True
