"""Two notifier replicas run every pass at the same moment: each reminder goes out once and
every recipient gets at most one mail a day."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date

from sqlalchemy.ext.asyncio import create_async_engine

from services.notifier.main import build_app
from tests.conftest import Infra, running, unique
from tests.integration.notifier.support import (
    TEST_POLICY,
    Agency,
    Assignment,
    Timeline,
    day_range,
    expected_reminders,
    load_book,
    mail_keys,
    notifier_settings,
    read_mails,
)

START, END = date(2043, 1, 1), date(2043, 3, 31)


async def test_two_replicas_send_each_reminder_once(infra: Infra) -> None:
    tag = unique("replicas")
    domain = f"{tag}.hrtrack.test"
    # Shared address: one recipient for two agencies, so both replicas fight over its digest.
    shared = f"shared@{domain}"
    agencies = [Agency(f"Agency {n} {tag}", [f"a{n}@{domain}", shared], "ru" if n % 2 else "en",
                       f"esc{n}@{domain}") for n in range(4)]
    assignments = [Assignment(agencies[n % 4], date(2043, 1 + n % 3, 10 + n), date(2043, 1, 1))
                   for n in range(12)]
    settings = notifier_settings(infra, tag, coordinator_emails=[f"coordinators@{domain}"])
    engine = create_async_engine(infra.database_url)
    token = infra.coordinator_token()
    try:
        # Own consumer groups: both replicas store every event (idempotently), and the test
        # does not wait for a group rebalance; what is under test is the passes.
        second = settings.model_copy(update={"consumer_group": f"{settings.consumer_group}-2"})
        async with running(build_app(settings), token) as one, \
                running(build_app(second), token) as two:
            await load_book(infra, settings, engine, agencies, assignments)
            claimed = 0
            for day in day_range(START, END):
                answers = await asyncio.gather(
                    one.post("/v1/reminders/run", params={"as_of": str(day)}),
                    two.post("/v1/reminders/run", params={"as_of": str(day)}))
                assert [a.status_code for a in answers] == [200, 200], answers[0].text
                claimed += sum(a.json()["claimed"] for a in answers)
            # Running the same day again on both sends nothing new.
            again = await asyncio.gather(
                one.post("/v1/reminders/run", params={"as_of": "2043-02-10"}),
                two.post("/v1/reminders/run", params={"as_of": "2043-02-10"}))
            assert [a.json()["claimed"] for a in again] == [0, 0]
    finally:
        await engine.dispose()

    addresses = {shared, f"coordinators@{domain}"}
    for agency in agencies:
        addresses.update(agency.emails)
        addresses.add(agency.escalation_email or "")
    mails = read_mails(infra.mail_dir, addresses)
    per_day = Counter((m.to, m.as_of) for m in mails)
    assert max(per_day.values()) == 1, "one mail per recipient per day"
    sent = Counter(mail_keys(mails, {str(a.id) for a in assignments}))
    assert [k for k, n in sent.items() if n > 1] == [], "a reminder was sent twice"
    expected = expected_reminders(Timeline(assignments), day_range(START, END), TEST_POLICY,
                                  list(settings.coordinator_emails))
    assert set(sent) == set(expected)
    assert claimed == sum(len(kinds) for kinds in expected.values()), "each claimed once"
    assert len([k for k in sent if k[0] == shared]) > 20
