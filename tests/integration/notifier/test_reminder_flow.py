"""Reminders end to end on the real broker, PostgreSQL and SMTP sink: tracker events in,
one pass per day over four months of 2041, digests out.

The expected reminders are computed from the policy (pure functions) over the same days,
so the test checks the due-set SQL, the routing, the ledger and the mails against it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.notifier.main import build_app
from services.notifier.policy import ReminderKind, kinds_for_offset
from shared.events import AssignmentStatus
from tests.conftest import Infra, running, unique
from tests.integration.notifier.support import (
    TEST_POLICY,
    Agency,
    Assignment,
    Key,
    Mail,
    Timeline,
    day_range,
    expected_reminders,
    load_book,
    mail_keys,
    notifier_settings,
    publish,
    publish_raw,
    read_mails,
    wait_stored,
)

START, END = date(2041, 1, 10), date(2041, 4, 30)
IMPLEMENTED_ON = date(2041, 3, 1)
REPORTED_ON = date(2041, 3, 25)
Q1 = date(2041, 1, 1)


@dataclass
class Flow:
    tag: str
    client: httpx.AsyncClient
    infra: Infra
    engine: AsyncEngine
    settings: Any
    agencies: dict[str, Agency]
    assignments: dict[str, Assignment]
    timeline: Timeline
    expected: dict[Key, set[ReminderKind]]
    reports: dict[date, dict[str, Any]]

    @property
    def coordinators(self) -> list[str]:
        return list(self.settings.coordinator_emails)

    @property
    def addresses(self) -> set[str]:
        found = set(self.coordinators)
        for agency in self.agencies.values():
            found.update(agency.emails)
            if agency.escalation_email:
                found.add(agency.escalation_email)
        return found

    @property
    def ids(self) -> set[str]:
        return {str(a.id) for a in self.assignments.values()}

    def mails(self) -> list[Mail]:
        return read_mails(self.infra.mail_dir, self.addresses)


@pytest.fixture(scope="module")
async def engine(infra: Infra) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(infra.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def flow(infra: Infra, engine: AsyncEngine) -> AsyncIterator[Flow]:
    tag = unique("flow")
    mail = f"{tag}.hrtrack.test"
    agencies = {
        "en": Agency(f"Ministry of Justice {tag}", [f"en@{mail}"], "en", f"esc-en@{mail}"),
        "ru": Agency(f"Министерство юстиции {tag}", [f"ru@{mail}"], "ru", f"esc-ru@{mail}"),
        "kk": Agency(f"Әділет министрлігі {tag}", [f"kk@{mail}"], "kk", None),
        "none": Agency(f"Akimat of Almaty {tag}", [], "en", None),
    }
    a = {
        "a1": Assignment(agencies["en"], date(2041, 3, 31), Q1),
        "a2": Assignment(agencies["ru"], date(2041, 2, 28), Q1,
                         text="Обеспечить доступ к адвокату с момента задержания."),
        "a3": Assignment(agencies["kk"], date(2041, 3, 15), Q1, role="co",
                         text="Ұсталған сәттен бастап адвокатқа қол жеткізуді қамтамасыз ету."),
        "a4": Assignment(agencies["none"], date(2041, 2, 15), Q1),
        "a5": Assignment(agencies["en"], date(2041, 3, 31), Q1, role="partner"),
        "a6": Assignment(agencies["en"], date(2041, 3, 20), Q1),
        "a7": Assignment(agencies["ru"], date(2041, 6, 30), Q1),
    }
    timeline = Timeline(list(a.values()), {
        IMPLEMENTED_ON: [a["a6"].changed(status=AssignmentStatus.IMPLEMENTED)],
        REPORTED_ON: [a["a7"].changed(reported=[Q1])],
    })
    settings = notifier_settings(infra, tag, coordinator_emails=[f"coordinators@{mail}"])
    app = build_app(settings)
    async with running(app, infra.coordinator_token()) as client:
        await load_book(infra, settings, engine, agencies.values(), a.values())
        reports = {}
        for day in day_range(START, END):
            if day in timeline.changes:
                await publish(infra, settings.assignments_topic,
                              [x.event() for x in timeline.changes[day]])
                await wait_stored(engine, timeline.changes[day])
            response = await client.post("/v1/reminders/run", params={"as_of": str(day)})
            assert response.status_code == 200, response.text
            reports[day] = response.json()
        expected = expected_reminders(timeline, day_range(START, END), TEST_POLICY,
                                      list(settings.coordinator_emails))
        yield Flow(tag, client, infra, engine, settings, agencies, a, timeline, expected,
                   reports)


async def test_every_reminder_sent_once_on_its_day(flow: Flow) -> None:
    sent = Counter(mail_keys(flow.mails(), flow.ids))
    assert [k for k, n in sent.items() if n > 1] == [], "a reminder was sent twice"
    assert set(sent) == set(flow.expected), (
        f"missing: {sorted(set(flow.expected) - set(sent))[:5]}, "
        f"unexpected: {sorted(set(sent) - set(flow.expected))[:5]}")
    assert len(flow.expected) > 40  # the scenario is not trivial


async def test_each_ledger_entry_is_on_a_configured_offset(flow: Flow) -> None:
    entries = []
    for address in flow.addresses:
        got = await flow.client.get("/v1/reminders", params={"recipient": address,
                                                             "limit": 5000})
        assert got.status_code == 200, got.text
        entries += [e for e in got.json() if e["assignment_id"] in flow.ids]
    assert entries
    for e in entries:
        offset = (date.fromisoformat(e["due_date"]) - date.fromisoformat(e["as_of"])).days
        assert e["offset_days"] == offset
        assert ReminderKind(e["kind"]) in kinds_for_offset(offset, TEST_POLICY)
        assert e["status"] == "sent" and e["message_id"] and e["attempts"] == 1
        assert e["digest_as_of"] == e["as_of"]
    keys = Counter((e["recipient"], e["assignment_id"], e["due_kind"], e["due_date"],
                    e["kind"], e["offset_days"]) for e in entries)
    assert max(keys.values()) == 1
    # Every reminder kind of the expectation is in the ledger.
    assert len(entries) == sum(len(kinds) for kinds in flow.expected.values())


async def test_at_most_one_mail_per_recipient_per_day(flow: Flow) -> None:
    mails = flow.mails()
    per_day = Counter((m.to, m.as_of) for m in mails)
    assert max(per_day.values()) == 1
    assert {m.to for m in mails} == flow.addresses  # everyone heard something


async def test_running_a_day_again_sends_nothing(flow: Flow) -> None:
    before = len(flow.mails())
    for day in (date(2041, 2, 16), date(2041, 3, 17)):
        again = await flow.client.post("/v1/reminders/run", params={"as_of": str(day)})
        assert again.status_code == 200, again.text
        assert [d for d in again.json()["sent"] if d["recipient"] in flow.addresses] == []
    assert len(flow.mails()) == before


async def test_reminders_stop_once_implemented(flow: Flow) -> None:
    a6 = str(flow.assignments["a6"].id)
    days = [k[1] for k in mail_keys(flow.mails(), {a6})]
    assert days and max(days) < IMPLEMENTED_ON
    assert any(d >= IMPLEMENTED_ON for _r, d, aid, _k, _due in flow.expected if aid != a6)


async def test_report_reminders_stop_once_the_quarter_is_reported(flow: Flow) -> None:
    a7 = str(flow.assignments["a7"].id)
    report_days = [k[1] for k in mail_keys(flow.mails(), {a7}) if k[3] == "report"]
    assert date(2041, 3, 11) in report_days  # 30 days before 10 April: still owed then
    assert all(d < REPORTED_ON for d in report_days)


async def test_quarterly_reports_are_reminded_and_partners_are_not(flow: Flow) -> None:
    keys = mail_keys(flow.mails(), flow.ids)
    a1 = str(flow.assignments["a1"].id)
    assert {(k[1], k[4]) for k in keys if k[2] == a1 and k[3] == "report"} >= {
        (date(2041, 3, 11), date(2041, 4, 10)), (date(2041, 4, 9), date(2041, 4, 10))}
    assert [k for k in keys if k[2] == str(flow.assignments["a5"].id)] == []


async def test_mails_render_in_the_agencys_language_with_a_calendar(flow: Flow) -> None:
    mails = flow.mails()
    by_to: dict[str, list[Mail]] = {}
    for m in mails:
        by_to.setdefault(m.to, []).append(m)
    ru, kk, en = (by_to[flow.agencies[x].emails[0]] for x in ("ru", "kk", "en"))
    assert all(m.message["Content-Language"] == "ru" for m in ru)
    assert all(m.message["Content-Language"] == "kk" for m in kk)
    assert "Уважаемые коллеги" in ru[0].text and "Уважаемые коллеги" in ru[0].html
    assert "доступ к адвокату" in ru[0].text
    assert "Құрметті әріптестер" in kk[0].text and "Құрметті әріптестер" in kk[0].html
    assert "Dear colleagues" in en[0].text
    for m in (ru[0], kk[0], en[0]):
        assert flow.tag in str(m.message["Subject"])
        assert m.message["X-Hrtrack-As-Of"] == m.as_of.isoformat()
        for event, key in zip(m.events, m.reminder_keys(), strict=True):
            assert event.decoded("DTSTART") == key[4]  # an all-day event on the due date
    # The UID of one deadline is the same in every digest that mentions it.
    a1 = str(flow.assignments["a1"].id)
    uids = {str(e["UID"]) for m in en for e in m.events if str(e["UID"]).startswith(a1)}
    assert uids == {f"{a1}-deadline-20410331@hrtrack", f"{a1}-report-20410410@hrtrack"}


async def test_no_contact_and_missing_escalation_go_to_coordinators_flagged(flow: Flow) -> None:
    coordinator_mails = [m for m in flow.mails() if m.to == flow.coordinators[0]]
    a4, a3 = str(flow.assignments["a4"].id), str(flow.assignments["a3"].id)
    first_a4 = min((m for m in coordinator_mails if any(k[2] == a4 for k in m.reminder_keys())),
                   key=lambda m: m.as_of)
    assert first_a4.as_of == date(2041, 1, 16)  # 30 days before 15 February
    assert "has no contact address on file" in first_a4.text
    # The KK agency has no escalation contact: 14 days after 15 March its escalation
    # reaches the coordinators, flagged.
    escalated = [m for m in coordinator_mails if m.as_of == date(2041, 3, 29)]
    assert len(escalated) == 1 and any(k[2] == a3 for k in escalated[0].reminder_keys())
    assert "no escalation contact" in escalated[0].text
    # Escalation to the coordinators after 30 days overdue (a4: 17 March).
    assert any(k[2] == a4 for m in coordinator_mails if m.as_of == date(2041, 3, 17)
               for k in m.reminder_keys())


async def test_escalation_contact_hears_after_14_days(flow: Flow) -> None:
    esc = flow.agencies["ru"].escalation_email
    a2 = str(flow.assignments["a2"].id)
    days = sorted(m.as_of for m in flow.mails() if m.to == esc
                  and any(k[2] == a2 for k in m.reminder_keys()))
    assert days[:3] == [date(2041, 3, 14), date(2041, 3, 21), date(2041, 3, 28)]


async def test_pass_answers_what_it_sent(flow: Flow) -> None:
    report = flow.reports[date(2041, 1, 16)]
    mine = [d for d in report["sent"] if d["recipient"] in flow.addresses]
    assert {d["recipient"] for d in mine} == {flow.coordinators[0]}
    assert mine[0]["items"] >= 1 and mine[0]["message_id"].startswith("<digest-")
    assert mine[0]["kinds"] == {"upcoming": mine[0]["items"]}
    assert report["as_of"] == "2041-01-16" and report["due_set_ms"] >= 0


async def test_ledger_is_scoped_to_the_agency(flow: Flow, infra: Infra) -> None:
    en, ru = flow.agencies["en"], flow.agencies["ru"]
    headers = {"Authorization": f"Bearer {infra.agency_token(en.id)}"}
    own = await flow.client.get("/v1/reminders", headers=headers)
    assert own.status_code == 200
    assert own.json() and {e["agency_id"] for e in own.json()} == {str(en.id)}
    other = await flow.client.get("/v1/reminders", params={"agency_id": str(ru.id)},
                                  headers=headers)
    assert other.status_code == 404
    as_coordinator = await flow.client.get("/v1/reminders", params={"agency_id": str(ru.id)})
    assert {e["agency_id"] for e in as_coordinator.json()} == {str(ru.id)}
    run = await flow.client.post("/v1/reminders/run", params={"as_of": "2041-02-01"},
                                 headers=headers)
    assert run.status_code == 403
    anonymous = await flow.client.get("/v1/reminders", headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_bad_input_is_a_clear_422(flow: Flow) -> None:
    for day in ("2041-13-01", "0", "20410101", "0004-03-13"):
        bad_day = await flow.client.post("/v1/reminders/run", params={"as_of": day})
        assert bad_day.status_code == 422, day
        assert "as_of" in bad_day.json()["detail"]
    bad_status = await flow.client.get("/v1/reminders", params={"status": "lost"})
    assert bad_status.status_code == 422 and "status" in bad_status.json()["detail"]


async def test_metrics_follow_the_contract(flow: Flow) -> None:
    text = (await flow.client.get("/metrics")).text
    for kind in ReminderKind:
        assert f'hrtrack_reminders_sent_total{{kind="{kind.value}"}}' in text
    for outcome in ("sent", "retried", "failed"):
        assert f'hrtrack_reminder_emails_total{{outcome="{outcome}"}}' in text
    for name in ("hrtrack_reminders_pending", "hrtrack_smtp_send_duration_seconds_count",
                 "hrtrack_reminder_pass_duration_seconds_count",
                 "hrtrack_reminder_due_set_seconds_count",
                 "hrtrack_reminder_report_dates_extended_total"):
        assert name in text


async def test_a_late_reminder_goes_with_the_next_digest(flow: Flow, infra: Infra) -> None:
    """A reminder due today that arrives after today's digest went out is not sent as a
    second mail today, and not lost: it goes with the recipient's next digest."""
    late = Agency(f"Ministry of Health {flow.tag}", [f"late@{flow.tag}.hrtrack.test"])
    b1 = Assignment(late, date(2041, 7, 1), date(2041, 7, 1))  # 30 days before: 1 June
    b2 = Assignment(late, date(2041, 7, 1), date(2041, 7, 1))
    await load_book(infra, flow.settings, flow.engine, [late], [b1])
    first = await flow.client.post("/v1/reminders/run", params={"as_of": "2041-06-01"})
    assert [d["items"] for d in first.json()["sent"] if d["recipient"] == late.emails[0]] == [1]

    await publish(infra, flow.settings.assignments_topic, [b2.event()])
    await wait_stored(flow.engine, [b2])
    again = (await flow.client.post("/v1/reminders/run", params={"as_of": "2041-06-01"})).json()
    assert [d for d in again["sent"] if d["recipient"] == late.emails[0]] == []
    assert again["late"] == 1
    waiting = (await flow.client.get("/v1/reminders", params={
        "status": "late", "recipient": late.emails[0]})).json()
    assert [(e["assignment_id"], e["as_of"]) for e in waiting] == [(str(b2.id), "2041-06-01")]

    await flow.client.post("/v1/reminders/run", params={"as_of": "2041-06-02"})
    mails = read_mails(infra.mail_dir, late.emails)
    assert sorted((m.as_of, sorted(k[2] for k in m.reminder_keys())) for m in mails) == [
        (date(2041, 6, 1), [str(b1.id)]), (date(2041, 6, 2), [str(b2.id)])]
    late_mail = next(m for m in mails if m.as_of == date(2041, 6, 2))
    assert "after the previous digest had been sent" in late_mail.text
    entry = (await flow.client.get("/v1/reminders", params={"recipient": late.emails[0]})).json()
    b2_entry = next(e for e in entry if e["assignment_id"] == str(b2.id))
    assert (b2_entry["as_of"], b2_entry["offset_days"], b2_entry["digest_as_of"],
            b2_entry["status"]) == ("2041-06-01", 30, "2041-06-02", "sent")


async def test_poison_events_go_to_dead_letters_and_consumption_goes_on(
        flow: Flow, infra: Infra) -> None:
    topic = flow.settings.assignments_topic
    key = uuid.uuid4().hex.encode()
    await publish_raw(infra, topic, b'{"not": "an assignment event"}', key)
    after = Assignment(flow.agencies["en"], date(2041, 12, 31), date(2041, 10, 1))
    await publish(infra, topic, [after.event()])
    await wait_stored(flow.engine, [after])

    consumer = AIOKafkaConsumer(f"{topic}.dlq", bootstrap_servers=infra.bootstrap,
                                group_id=unique("dlq-reader"), auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        found = None
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found = found or next((r for r in records if r.key == key), None)
            if found:
                break
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
    assert found is not None, "the poison event is in the dead-letter topic"
    headers = dict(found.headers)
    assert headers["x-source-topic"] == topic.encode()
    assert b"ValidationError" in headers["x-error-type"]
