"""The SMTP server is away for a month of the replay, and again at its end: every reminder
of those days is delivered once it is back, none lost and none doubled, each in the digest
of its own day."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from hrtrack.stack import SmtpSink, free_port
from services.notifier.main import build_app
from tests.conftest import Infra, running, unique
from tests.helpers import eventually
from tests.integration.notifier.support import (
    TEST_POLICY,
    Agency,
    Assignment,
    Timeline,
    day_range,
    emails_total,
    expected_reminders,
    load_book,
    mail_keys,
    notifier_settings,
    read_mails,
)

START, END = date(2045, 1, 1), date(2045, 3, 31)
DOWN, UP = date(2045, 1, 20), date(2045, 2, 20)  # back in the middle of the replay
LAST_DOWN = date(2045, 3, 20)  # down again until after the replay


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpSink]:
    base = tmp_path_factory.mktemp("outage-smtp")
    sink = SmtpSink(free_port(), base / "mail", base / "smtp.log")
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


async def test_reminders_survive_an_smtp_outage(infra: Infra, sink: SmtpSink) -> None:
    tag = unique("outage")
    domain = f"{tag}.hrtrack.test"
    agencies = [Agency(f"Agency {n} {tag}", [f"a{n}@{domain}"], ("en", "ru", "kk")[n % 3],
                       f"esc{n}@{domain}") for n in range(3)]
    assignments = [Assignment(agencies[n % 3], date(2045, 1 + n % 3, 5 + 3 * n),
                              date(2045, 1, 1)) for n in range(9)]
    settings = notifier_settings(infra, tag, smtp_port=sink.port,
                                 coordinator_emails=[f"coordinators@{domain}"],
                                 delivery_retry_seconds=0.2, delivery_max_backoff_seconds=2.0)
    addresses = {f"coordinators@{domain}"} | {a.emails[0] for a in agencies} | {
        a.escalation_email or "" for a in agencies}
    engine = create_async_engine(infra.database_url)
    try:
        async with running(build_app(settings), infra.coordinator_token()) as client:
            await load_book(infra, settings, engine, agencies, assignments)
            retried_before = emails_total((await client.get("/metrics")).text, "retried")
            waiting_days = 0
            for day in day_range(START, END):
                if day in (DOWN, LAST_DOWN):
                    sink.stop()
                if day == UP:
                    sink.start()
                answer = await client.post("/v1/reminders/run", params={"as_of": str(day)})
                assert answer.status_code == 200, answer.text
                report = answer.json()
                if DOWN <= day < UP or day >= LAST_DOWN:
                    assert [d for d in report["sent"] if d["recipient"] in addresses] == []
                    waiting_days += bool(report["retrying"])
            assert waiting_days > 10, "the outages held digests back"

            # The replay is over and the digests of its last days back off for an hour: the
            # server coming back is found by the scheduler's probe, not by a new pass.
            async with engine.begin() as conn:
                await conn.execute(text(
                    "UPDATE notifier.digests SET next_attempt_at = now() + interval '1 hour' "
                    "WHERE status = 'pending' AND recipient LIKE :domain"),
                    {"domain": f"%@{domain}"})
            sink.start()

            async def delivered() -> bool:
                mine = []
                for address in addresses:
                    mine += (await client.get("/v1/reminders", params={
                        "recipient": address, "limit": 5000})).json()
                return bool(mine) and all(r["status"] == "sent" for r in mine)

            await eventually(delivered, timeout=30, what="every digest delivered")
            metrics = (await client.get("/metrics")).text
            assert emails_total(metrics, "retried") > retried_before
    finally:
        await engine.dispose()

    mails = read_mails(Path(sink.mail_dir), addresses)
    per_day = Counter((m.to, m.as_of) for m in mails)
    assert max(per_day.values()) == 1, "one mail per recipient per day"
    sent = Counter(mail_keys(mails, {str(a.id) for a in assignments}))
    assert [k for k, n in sent.items() if n > 1] == [], "a reminder was sent twice"
    expected = expected_reminders(Timeline(assignments), day_range(START, END), TEST_POLICY,
                                  list(settings.coordinator_emails))
    assert set(sent) == set(expected), sorted(set(expected) - set(sent))[:5]
    # The days of the outage are all there, each in the digest of its own day.
    assert {m.as_of for m in mails if DOWN <= m.as_of < UP or m.as_of >= LAST_DOWN} >= {
        k[1] for k in expected if DOWN <= k[1] < UP or k[1] >= LAST_DOWN}
