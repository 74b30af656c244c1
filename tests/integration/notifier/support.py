"""What the notifier's integration tests share: events, publishing, the store driven
directly, the expected reminders and owed reports (computed from the policy, independently
of the service's SQL), and reading the mails."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from email.message import EmailMessage
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import icalendar
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.notifier.consumer import TrackerEventsConsumer, latest_tracked
from services.notifier.policy import (
    ReminderKind,
    ReminderPolicy,
    kinds_for_offset,
    report_dates_window,
    report_periods,
)
from services.notifier.reminders import ReminderService
from services.notifier.settings import NotifierSettings
from shared.clock import Clock
from shared.db import make_sessionmaker
from shared.deadlines import Deadline
from shared.events import (
    AgencyEvent,
    AssignmentEvent,
    AssignmentEventType,
    AssignmentsChanged,
    AssignmentStatus,
    DueDate,
    DueKind,
    Source,
)
from shared.kafka import make_broker
from tests.conftest import Infra, unique

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureFunctionDefinition

# Short overdue horizon: each test module replays its own year, and no module's passes
# reach another module's overdue items.
TEST_POLICY = ReminderPolicy(overdue_horizon_days=200)
K = ReminderKind


def notifier_settings(infra: Infra, tag: str, **overrides: Any) -> NotifierSettings:
    """Settings of a test notifier: own topics and consumer group, scheduled passes off,
    fast delivery retries."""
    values: dict[str, Any] = {
        **infra.env(),
        "consumer_group": f"notifier-{tag}",
        "assignments_topic": f"assignments-{tag}",
        "agencies_topic": f"agencies-{tag}",
        "smtp_host": "127.0.0.1",
        "smtp_port": infra.smtp.port,
        "smtp_timeout_seconds": 5,
        "coordinator_emails": [f"coordinators-{tag}@hrtrack.test"],
        "pass_interval_seconds": 0,
        "delivery_retry_seconds": 0.2,
        "delivery_max_backoff_seconds": 1.0,
        "tracker_lookup": False,
        "tracker_url": "http://tracker.test",
        "policy": TEST_POLICY,
    }
    values.update(overrides)
    return NotifierSettings(**values)


# --- test data ------------------------------------------------------------------------


@dataclass
class Agency:
    name: str
    emails: list[str]
    language: str = "en"
    escalation_email: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def event(self) -> AgencyEvent:
        return AgencyEvent(agency_id=self.id, name=self.name, emails=self.emails,
                           language=self.language, escalation_email=self.escalation_email)


@dataclass
class Assignment:
    agency: Agency
    due: date | None
    start: date | None = None
    role: str = "lead"
    status: AssignmentStatus = AssignmentStatus.IN_PROGRESS
    reported: list[date] = field(default_factory=list)
    version: int = 1
    text: str = "Adopt a law on the protection of personal data and set up its supervisor."
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    reference: str = field(default_factory=lambda: f"NHRAP / test / {unique('No')}")

    @property
    def active_from(self) -> date | None:
        return self.start

    def due_dates(self) -> list[DueDate]:
        return [DueDate(kind=DueKind.DEADLINE, due=self.due, start=self.start)] if self.due \
            else []

    def event(self) -> AssignmentEvent:
        return AssignmentEvent(
            type=AssignmentEventType.CREATED if self.version == 1
            else AssignmentEventType.UPDATED,
            assignment_id=self.id, recommendation_id=uuid.uuid5(self.id, "rec"),
            agency_id=self.agency.id, agency_name=self.agency.name, role=self.role,
            status=self.status, source=Source.PLAN, reference=self.reference, text=self.text,
            deadline=Deadline(text="test", start=self.start, due=self.due),
            due_dates=self.due_dates(), active_from=self.active_from,
            reported_periods=self.reported, version=self.version)

    def changed(self, **changes: Any) -> Assignment:
        return replace(self, version=self.version + 1, **changes)


def assignment_event(active_from: date | None, deadlines: Sequence[date] = (), **changes: Any
                     ) -> AssignmentEvent:
    """A new assignment (of a new recommendation and agency) owing reports from
    ``active_from`` up to its own ``deadlines``, in progress; ``changes``: other fields."""
    values: dict[str, Any] = {
        "type": AssignmentEventType.CREATED, "assignment_id": uuid.uuid4(),
        "recommendation_id": uuid.uuid4(), "agency_id": uuid.uuid4(),
        "agency_name": "Ministry of Justice", "role": "lead",
        "status": AssignmentStatus.IN_PROGRESS, "source": Source.PLAN,
        "reference": f"NHRAP / test / {unique('No')}", "text": "Adopt a law on legal aid.",
        "deadline": Deadline(text="test", start=active_from,
                             due=max(deadlines) if deadlines else None),
        "due_dates": [DueDate(kind=DueKind.DEADLINE, due=d) for d in deadlines],
        "active_from": active_from, "version": 1,
    }
    values.update(changes)
    return AssignmentEvent.model_validate(values)


async def publish(infra: Infra, topic: str, events: Iterable[AgencyEvent | AssignmentEvent]
                  ) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all",
                                enable_idempotence=False)
    await producer.start()
    try:
        for event in events:
            key = getattr(event, "assignment_id", None) or event.agency_id
            await producer.send_and_wait(topic, event.model_dump_json().encode(),
                                         key=str(key).encode())
    finally:
        await producer.stop()


async def publish_raw(infra: Infra, topic: str, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all",
                                enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def wait_stored(engine: AsyncEngine, assignments: Iterable[Assignment],
                      agencies: Iterable[Agency] = (), timeout: float = 60.0) -> None:
    """Until the notifier holds these versions of the assignments and these agencies."""
    wanted = {a.id: a.version for a in assignments}
    agency_ids = [a.id for a in agencies]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with engine.connect() as conn:
            rows: dict[uuid.UUID, int] = dict((await conn.execute(text(
                "SELECT id, version FROM notifier.assignments WHERE id = ANY(:ids)"),
                {"ids": list(wanted)})).all())
            known = (await conn.execute(text(
                "SELECT count(*) FROM notifier.agency_contacts WHERE id = ANY(:ids)"),
                {"ids": agency_ids})).scalar_one()
        if all(rows.get(i, 0) >= v for i, v in wanted.items()) and known == len(agency_ids):
            return
        if loop.time() > deadline:
            raise AssertionError(f"notifier did not store the events: {rows}, {known} agencies")
        await asyncio.sleep(0.1)


def metric_value(text: str, series: str) -> float:
    """The value of one series (name and labels, as exported) in a /metrics text."""
    for line in text.splitlines():
        if line.startswith(f"{series} "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} is not exported")


def emails_total(metrics: str, outcome: str) -> float:
    """hrtrack_reminder_emails_total{outcome} in a /metrics text."""
    return metric_value(metrics, f'hrtrack_reminder_emails_total{{outcome="{outcome}"}}')


def changed_event(event: AssignmentEvent, **changes: Any) -> AssignmentEvent:
    """The event's next version (a new event id) with these fields changed."""
    return event.model_copy(update={"version": event.version + 1, "event_id": uuid.uuid4(),
                                    "type": AssignmentEventType.UPDATED, **changes})


class RefusesRejectAddresses:
    """aiosmtpd handler part: recipients starting with "reject" are refused for good (550)."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any,  # noqa: N802
                          address: str, rcpt_options: list[str]) -> str:
        if address.startswith("reject"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def load_book(infra: Infra, settings: NotifierSettings, engine: AsyncEngine,
                    agencies: Iterable[Agency], assignments: Iterable[Assignment]) -> None:
    """Publish the agencies and assignments on the notifier's topics; wait until stored."""
    agencies, assignments = list(agencies), list(assignments)
    await publish(infra, settings.agencies_topic, [a.event() for a in agencies])
    await publish(infra, settings.assignments_topic, [a.event() for a in assignments])
    await wait_stored(engine, assignments, agencies)


# --- the store, driven directly -------------------------------------------------------


@dataclass
class Store:
    """The notifier's tables on the test database, written and read by its consumer and
    passes called directly (no app; the broker only for the consumer's dead letters, which
    direct calls never send)."""

    infra: Infra
    engine: AsyncEngine
    settings: NotifierSettings
    today: date  # the clock of ``consumer``

    @property
    def policy(self) -> ReminderPolicy:
        return self.settings.policy

    @property
    def window(self) -> tuple[date, date]:
        """The due dates ``consumer`` writes report rows for."""
        return report_dates_window(self.today, self.policy)

    @cached_property
    def consumer(self) -> TrackerEventsConsumer:
        """One consumer for the module, its clock on ``today``."""
        return self.consumer_on(self.today)

    def consumer_on(self, today: date, policy: ReminderPolicy | None = None
                    ) -> TrackerEventsConsumer:
        """A new consumer whose clock says ``today`` (with another policy, if given)."""
        return TrackerEventsConsumer(make_broker(self.infra.bootstrap, "notifier-test"),
                                     make_sessionmaker(self.engine), self._settings(policy),
                                     Clock(today))

    def reminders(self, policy: ReminderPolicy | None = None) -> ReminderService:
        """A new reminder service (the passes), with another policy if given."""
        return ReminderService(make_sessionmaker(self.engine), self._settings(policy))

    def _settings(self, policy: ReminderPolicy | None) -> NotifierSettings:
        if policy is None:
            return self.settings
        return self.settings.model_copy(update={"policy": policy})


async def store_events(consumer: TrackerEventsConsumer,
                       events: Sequence[AssignmentEvent | AssignmentsChanged]) -> None:
    """Store the assignments these events carry, each as the last of them left it: what the
    consumer's handler stores of a batch, without the broker."""
    await consumer.store_tracked(latest_tracked(events))


def store_fixture(tag: str, today: date, **overrides: Any) -> FixtureFunctionDefinition:
    """A module-scoped ``store`` fixture (assign it to ``store``): a Store with the settings
    ``notifier_settings(infra, unique(tag), **overrides)``, its consumer on ``today``."""

    @pytest.fixture(scope="module")
    async def store(infra: Infra) -> AsyncIterator[Store]:
        engine = create_async_engine(infra.database_url)
        yield Store(infra, engine, notifier_settings(infra, unique(tag), **overrides), today)
        await engine.dispose()

    return store


def owed_reports(event: AssignmentEvent, policy: ReminderPolicy, since: date = date.min,
                 until: date = date.max) -> list[tuple[date, date]]:
    """(quarter start, due date) of the reports an assignment event owes, those due from
    ``since`` to ``until``: policy.report_periods from its own deadlines, none once it is
    closed (written from the event and the policy, not with the consumer's code)."""
    if event.status.value in policy.closed_statuses:
        return []
    own = [d.due for d in event.due_dates if d.kind is DueKind.DEADLINE]
    return [(start, due) for start, due in
            report_periods(event.active_from, own, event.reported_periods, policy)
            if since <= due <= until]


# --- what should be sent --------------------------------------------------------------


Key = tuple[str, date, str, str, date]  # recipient, as_of, assignment id, due kind, due date


@dataclass
class Timeline:
    """The test's assignments, with the versions that take effect on given days."""

    assignments: list[Assignment]
    changes: dict[date, list[Assignment]] = field(default_factory=dict)

    def state_on(self, day: date) -> list[Assignment]:
        current = {a.id: a for a in self.assignments}
        for when in sorted(self.changes):
            if when <= day:
                for a in self.changes[when]:
                    current[a.id] = a
        return list(current.values())


def recipients(kind: ReminderKind, agency: Agency, coordinators: list[str]) -> list[str]:
    """Written out by hand (not policy.route) so the test checks the routing too."""
    if kind is K.ESCALATION_COORDINATOR:
        return coordinators
    if kind is K.ESCALATION_AGENCY:
        return [agency.escalation_email] if agency.escalation_email else coordinators
    return agency.emails or coordinators


def expected_reminders(timeline: Timeline, days: Iterable[date], policy: ReminderPolicy,
                       coordinators: list[str]) -> dict[Key, set[ReminderKind]]:
    expected: dict[Key, set[ReminderKind]] = defaultdict(set)
    for day in days:
        for a in timeline.state_on(day):
            if a.status.value in policy.closed_statuses:
                continue
            if a.role == "partner" and not policy.remind_partners:
                continue
            dues = [("deadline", a.due)] if a.due else []
            dues += [("report", due) for _start, due in report_periods(
                a.active_from, [a.due] if a.due else [], a.reported, policy)]
            for due_kind, due in dues:
                offset = (due - day).days
                if offset < -policy.overdue_horizon_days:
                    continue
                for kind in kinds_for_offset(offset, policy):
                    for recipient in recipients(kind, a.agency, coordinators):
                        expected[(recipient, day, str(a.id), due_kind, due)].add(kind)
    return dict(expected)


def day_range(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


# --- mails ----------------------------------------------------------------------------


@dataclass
class Mail:
    message: EmailMessage
    to: str
    as_of: date
    message_id: str
    events: list[icalendar.Event]

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None
        return str(part.get_content())

    def reminder_keys(self) -> list[Key]:
        """(recipient, as_of, assignment, due kind, due date) of each calendar event."""
        keys = []
        for event in self.events:
            uid = str(event["UID"])
            assignment, rest = uid[:36], uid[37:]
            due_kind, stamp = rest.split("@")[0].rsplit("-", 1)
            due = date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]))
            keys.append((self.to, self.as_of, assignment, due_kind, due))
        return keys


def parse_mail(raw: bytes) -> Mail:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    calendars = [part for part in message.iter_attachments()
                 if part.get_content_type() == "text/calendar"]
    assert len(calendars) == 1, "one .ics attachment"
    ics = calendars[0].get_payload(decode=True)
    assert isinstance(ics, bytes)
    calendar = icalendar.Calendar.from_ical(ics)
    return Mail(message=message, to=message["To"].addresses[0].addr_spec,
                as_of=date.fromisoformat(str(message["X-Hrtrack-As-Of"])),
                message_id=str(message["Message-ID"]), events=calendar.events)


def read_mails(mail_dir: Path, recipients: Iterable[str]) -> list[Mail]:
    wanted = set(recipients)
    mails = []
    for path in sorted(mail_dir.glob("*.eml")):
        mail = parse_mail(path.read_bytes())
        if mail.to in wanted:
            mails.append(mail)
    return mails


def mail_keys(mails: Iterable[Mail], assignment_ids: set[str]) -> list[Key]:
    return [k for m in mails for k in m.reminder_keys() if k[2] in assignment_ids]
