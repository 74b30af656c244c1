"""SMTP delivery with aiosmtplib: temporary failures are retried, permanent ones reported."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib
from prometheus_client import Histogram

SMTP_DURATION = Histogram("hrtrack_smtp_send_duration_seconds", "SMTP send duration",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


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


async def send(message: EmailMessage, config: SmtpConfig) -> None:
    """Raises DeliveryError(permanent=True) on a 5xx answer, permanent=False otherwise."""
    started = time.perf_counter()
    try:
        await aiosmtplib.send(
            message, hostname=config.host, port=config.port, timeout=config.timeout,
            username=config.username, password=config.password, start_tls=config.starttls,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        raise DeliveryError(f"recipients refused: {exc}",
                            permanent=all(500 <= c < 600 for c in codes)) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise DeliveryError(f"SMTP {exc.code}: {exc.message}",
                            permanent=500 <= exc.code < 600, unreachable=exc.code == 421) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False,
                            unreachable=True) from exc
    finally:
        SMTP_DURATION.observe(time.perf_counter() - started)


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
