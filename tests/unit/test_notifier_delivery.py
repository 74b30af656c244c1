"""Delivery rules that need no SMTP server: backoff, Message-IDs, error classification."""

from __future__ import annotations

import uuid
from email.message import EmailMessage

import aiosmtplib
import pytest

from hrtrack.stack import free_port
from services.notifier import mailer
from services.notifier.reminders import backoff_seconds, message_id_for


def test_backoff_doubles_up_to_the_ceiling() -> None:
    assert [backoff_seconds(n, 5, 600) for n in range(1, 10)] == [
        5, 10, 20, 40, 80, 160, 320, 600, 600]
    assert backoff_seconds(10_000, 5, 600) == 600  # no overflow, no limit on attempts


def test_message_id_is_stable_per_digest() -> None:
    digest = uuid.uuid4()
    assert message_id_for(digest, "hrtrack.kz") == message_id_for(digest, "hrtrack.kz")
    assert message_id_for(digest, "hrtrack.kz") == f"<digest-{digest}@hrtrack.kz>"
    assert message_id_for(uuid.uuid4(), "") .endswith("@hrtrack.local>")


class Refusing:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def __call__(self, *args: object, **kwargs: object) -> None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "permanent", "unreachable"),
    [
        (aiosmtplib.SMTPResponseException(451, "try later"), False, False),
        (aiosmtplib.SMTPResponseException(421, "closing"), False, True),
        (aiosmtplib.SMTPResponseException(550, "no such user"), True, False),
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
async def test_failures_are_temporary_unless_5xx(monkeypatch: pytest.MonkeyPatch,
                                                 exc: Exception, permanent: bool,
                                                 unreachable: bool) -> None:
    monkeypatch.setattr(aiosmtplib, "send", Refusing(exc))
    config = mailer.SmtpConfig("127.0.0.1", 1, 1.0)
    with pytest.raises(mailer.DeliveryError) as raised:
        await mailer.send(EmailMessage(), config)
    assert raised.value.permanent is permanent
    assert raised.value.unreachable is unreachable


async def test_probe_of_a_closed_port_says_no() -> None:
    assert await mailer.probe(mailer.SmtpConfig("127.0.0.1", free_port(), 1.0)) is False
