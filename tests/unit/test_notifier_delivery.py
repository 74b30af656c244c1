"""Delivery rules that need no SMTP server: backoff, Message-IDs, error classification,
dot-stuffing of a message written in blocks."""

from __future__ import annotations

import uuid

import aiosmtplib
import pytest

from hrtrack.stack import free_port
from services.notifier import mailer
from services.notifier.delivery import backoff_seconds, message_id_for


def test_backoff_doubles_up_to_the_ceiling() -> None:
    assert [backoff_seconds(n, 5, 600) for n in range(1, 10)] == [
        5, 10, 20, 40, 80, 160, 320, 600, 600]
    assert backoff_seconds(10_000, 5, 600) == 600  # no overflow, no limit on attempts


def test_message_id_is_stable_per_digest() -> None:
    digest = uuid.uuid4()
    assert message_id_for(digest, "hrtrack.kz") == message_id_for(digest, "hrtrack.kz")
    assert message_id_for(digest, "hrtrack.kz") == f"<digest-{digest}@hrtrack.kz>"
    assert message_id_for(uuid.uuid4(), "") .endswith("@hrtrack.local>")


@pytest.mark.parametrize(
    ("exc", "permanent", "unreachable"),
    [
        (aiosmtplib.SMTPResponseException(451, "try later"), False, False),
        (aiosmtplib.SMTPDataError(452, "insufficient storage"), False, False),
        (aiosmtplib.SMTPResponseException(421, "closing"), False, True),
        (aiosmtplib.SMTPResponseException(550, "no such user"), True, False),
        (aiosmtplib.SMTPDataError(552, "message too large"), True, False),
        (aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(550, "no", "a@x.kz")]), True, False),
        (aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(452, "full", "a@x.kz")]), False, False),
        (aiosmtplib.SMTPConnectError("refused"), False, True),
        (aiosmtplib.SMTPServerDisconnected("gone"), False, True),
        (ConnectionRefusedError(111, "refused"), False, True),
        (TimeoutError(), False, True),
    ],
)
def test_failures_are_temporary_unless_5xx(exc: Exception, permanent: bool,
                                           unreachable: bool) -> None:
    error = mailer.classify(exc)
    assert error.permanent is permanent
    assert error.unreachable is unreachable


@pytest.mark.parametrize(
    ("blocks", "sent"),
    [
        ([b".top\r\nmid\r\n.dot\r\n"], b"..top\r\nmid\r\n..dot\r\n"),
        # A block boundary inside a line: its dot is not at a line start.
        ([b"a line ", b".not at a line start\r\n", b".at one\r\n"],
         b"a line .not at a line start\r\n..at one\r\n"),
        # A boundary right after a line break: the dot starts a line.
        ([b"end\r\n", b".next\r\n"], b"end\r\n..next\r\n"),
        ([b"no dots\r\n", b"at all\r\n"], b"no dots\r\nat all\r\n"),
    ],
)
def test_dot_stuffing_across_blocks(blocks: list[bytes], sent: bytes) -> None:
    out, at_line_start = b"", True
    for block in blocks:
        out += mailer.dot_stuff(block, at_line_start)
        at_line_start = block.endswith(b"\n")
    assert out == sent


async def test_probe_of_a_closed_port_says_no() -> None:
    assert await mailer.probe(mailer.SmtpConfig("127.0.0.1", free_port(), 1.0)) is False
