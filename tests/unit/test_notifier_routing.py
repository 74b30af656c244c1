"""From due rows to reminders by recipient (ReminderService.route_rows: no database)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from services.notifier.policy import ReminderKind, ReminderPolicy
from services.notifier.reminders import Contact, ReminderService
from services.notifier.settings import NotifierSettings

K = ReminderKind
AS_OF = date(2010, 6, 30)
MOJ, AKIMAT, UNKNOWN = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
CONTACTS: dict[uuid.UUID, Contact] = {
    MOJ: (["moj@gov.kz", "moj2@gov.kz"], "ru", "head@gov.kz"),
    AKIMAT: ([], "kk", None),
}


def service(**policy: object) -> ReminderService:
    settings = NotifierSettings(coordinator_emails=["hrc@gov.kz"], coordinator_language="en",
                                policy=ReminderPolicy.model_validate(policy))
    return ReminderService(None, settings)  # type: ignore[arg-type]


def row(days: int, agency: uuid.UUID, kind: str = "deadline") -> tuple[object, ...]:
    return (AS_OF + timedelta(days=days), kind, uuid.uuid4(), agency)


def test_upcoming_goes_to_every_contact_in_the_agency_language() -> None:
    due = service().route_rows(AS_OF, [row(30, MOJ)], CONTACTS)
    assert due.count == 2 and due.unaddressed == 0
    assert sorted(due.by_recipient) == ["moj2@gov.kz", "moj@gov.kz"]
    (kind, language, agency, _a, due_kind, due_date, rkind, offset, flags), = \
        due.by_recipient["moj@gov.kz"]
    assert (kind, language, agency, due_kind, rkind, offset, flags) == (
        "agency", "ru", MOJ, "deadline", K.UPCOMING, 30, ())
    assert due_date == date(2010, 7, 30)


def test_no_contact_and_unknown_agency_go_to_the_coordinators_flagged() -> None:
    due = service().route_rows(AS_OF, [row(7, AKIMAT), row(-1, UNKNOWN, "report")], CONTACTS)
    assert list(due.by_recipient) == ["hrc@gov.kz"]
    entries = due.by_recipient["hrc@gov.kz"]
    assert [(e[0], e[1], e[6], e[8]) for e in entries] == [
        ("coordinator", "en", K.UPCOMING, ("no_contact",)),
        ("coordinator", "en", K.OVERDUE, ("no_contact",))]


def test_escalations() -> None:
    due = service().route_rows(AS_OF, [row(-14, MOJ), row(-30, MOJ), row(-14, AKIMAT)],
                               CONTACTS)
    assert [(e[6], e[7]) for e in due.by_recipient["head@gov.kz"]] == [
        (K.ESCALATION_AGENCY, -14)]
    assert [(e[2], e[6], e[8]) for e in due.by_recipient["hrc@gov.kz"]] == [
        (MOJ, K.ESCALATION_COORDINATOR, ()),
        (AKIMAT, K.ESCALATION_AGENCY, ("no_escalation_contact",))]


def test_several_kinds_on_one_day() -> None:
    due = service(escalate_agency_after_days=8, escalate_coordinators_after_days=15).route_rows(
        AS_OF, [row(-15, MOJ)], CONTACTS)
    assert due.count == 2 + 1 + 1
    assert [e[6] for e in due.by_recipient["moj@gov.kz"]] == [K.OVERDUE]
    assert [e[6] for e in due.by_recipient["hrc@gov.kz"]] == [K.ESCALATION_COORDINATOR]


def test_nobody_to_tell_is_counted() -> None:
    lonely = ReminderService(None, NotifierSettings(coordinator_emails=[]))  # type: ignore[arg-type]
    due = lonely.route_rows(AS_OF, [row(30, AKIMAT), row(-30, MOJ)], CONTACTS)
    assert due.unaddressed == 2 and due.count == 0 and not due.by_recipient


def test_reminders_view_names_the_fields() -> None:
    due = service().route_rows(AS_OF, [row(1, MOJ)], CONTACTS)
    first = sorted(due.reminders)[0]
    assert (first.recipient, first.kind, first.offset_days) == ("moj2@gov.kz", K.UPCOMING, 1)
