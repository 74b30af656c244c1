"""Reminder policy: which reminders are due on a given day. Pure functions, no I/O.

Offsets are day differences ``(due - as_of).days``: positive before the due date, zero on
it, negative once overdue. A reminder fires only on its exact offset day, so a pass that
runs every day (or re-runs the same day) selects each reminder on exactly one date.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

__all__ = [
    "Reminder",
    "ReminderKind",
    "ReminderPolicy",
    "Route",
    "kinds_for_offset",
    "offsets_for_day",
    "quarter_end",
    "quarter_report_due",
    "quarter_start",
    "first_due_seen",
    "last_due_seen",
    "owed_reports_within",
    "reminders_for",
    "report_dates_window",
    "report_due_dates",
    "report_periods",
    "reports_due_within",
    "route",
    "should_remind",
]


class ReminderKind(StrEnum):
    UPCOMING = "upcoming"  # before (or on) the due date
    OVERDUE = "overdue"  # to the agency, day 1 overdue then weekly
    ESCALATION_AGENCY = "escalation_agency"  # to the agency's escalation contact
    ESCALATION_COORDINATOR = "escalation_coordinator"  # to the coordinators


def _split_csv(value: Any) -> Any:
    """Accept "30,14,7,1" or "[30, 14]" (as environment variables give them) besides lists."""
    if isinstance(value, str):
        if value.strip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ReminderPolicy(BaseModel):
    """Reminder timing. A plain pydantic model so a settings module can fill it from env.

    ``NoDecode``: environment values such as ``30,14,7,1`` reach the validators as text
    instead of failing pydantic-settings' JSON decoding.
    """

    model_config = ConfigDict(frozen=True)

    before_days: Annotated[tuple[int, ...], NoDecode] = (30, 14, 7, 1)
    overdue_first_day: int = Field(default=1, ge=1)
    overdue_every_days: int = Field(default=7, ge=1)
    escalate_agency_after_days: int = Field(default=14, ge=1)
    escalate_coordinators_after_days: int = Field(default=30, ge=1)
    # The weekly overdue rhythm never ends by itself; past this many days a pass stops
    # selecting the item (it bounds the due-set query's list of dates).
    overdue_horizon_days: int = Field(default=5 * 366, ge=0)
    # quarterly progress report due on this day of the month after each quarter
    report_due_day: int = Field(default=10, ge=1, le=31)
    # Reports are owed from active_from up to the last own due date; without one, this long.
    report_horizon_days: int = Field(default=2 * 365, ge=0)
    # Report due rows are written only for the due dates a pass looks at and this many days
    # beyond (report_dates_window); each pass first adds the ones it needs. The margin lets
    # most passes find nothing to add.
    report_dates_ahead_days: int = Field(default=92, ge=0)
    remind_partners: bool = False
    closed_statuses: Annotated[frozenset[str], NoDecode] = frozenset(
        {"implemented", "cancelled", "closed"})

    @field_validator("before_days", mode="before")
    @classmethod
    def _parse_before_days(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("before_days")
    @classmethod
    def _check_before_days(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 0 for d in value):
            raise ValueError("before_days must be >= 0 (0 means on the due date)")
        return tuple(sorted(set(value), reverse=True))

    @field_validator("closed_statuses", mode="before")
    @classmethod
    def _parse_closed(cls, value: Any) -> Any:
        value = _split_csv(value)
        if isinstance(value, list | tuple | set | frozenset):
            return frozenset(str(s).strip().lower() for s in value)
        return value

    @model_validator(mode="after")
    def _check_escalation_order(self) -> ReminderPolicy:
        if self.escalate_coordinators_after_days < self.escalate_agency_after_days:
            raise ValueError(
                "escalate_coordinators_after_days must be >= escalate_agency_after_days"
            )
        return self


@dataclass(frozen=True)
class Reminder:
    kind: ReminderKind
    offset_days: int  # days before due (positive), 0 on the due date, overdue (negative)


def _on_rhythm(days_overdue: int, first: int, every: int) -> bool:
    return days_overdue >= first and (days_overdue - first) % every == 0


def kinds_for_offset(offset: int, policy: ReminderPolicy) -> list[ReminderKind]:
    """Kinds due when ``due - as_of == offset`` days, in ReminderKind order."""
    kinds: list[ReminderKind] = []
    if offset >= 0:
        if offset in policy.before_days:
            kinds.append(ReminderKind.UPCOMING)
        return kinds
    overdue, every = -offset, policy.overdue_every_days
    if _on_rhythm(overdue, policy.overdue_first_day, every):
        kinds.append(ReminderKind.OVERDUE)
    if _on_rhythm(overdue, policy.escalate_agency_after_days, every):
        kinds.append(ReminderKind.ESCALATION_AGENCY)
    if _on_rhythm(overdue, policy.escalate_coordinators_after_days, every):
        kinds.append(ReminderKind.ESCALATION_COORDINATOR)
    return kinds


def reminders_for(due: date, as_of: date, policy: ReminderPolicy) -> list[Reminder]:
    """Reminders due on ``as_of`` for an obligation due on ``due`` (empty on other days)."""
    offset = (due - as_of).days
    return [Reminder(kind, offset) for kind in kinds_for_offset(offset, policy)]


def offsets_for_day(
    policy: ReminderPolicy, horizon_days: int = 366
) -> dict[int, list[ReminderKind]]:
    """Map ``due - as_of`` differences to the kinds due, for ``due_date - :as_of IN (...)``.

    Covers every upcoming offset and overdue differences down to ``-horizon_days``; the
    overdue rhythm is unbounded, so rows further overdue than the horizon are not selected
    (pass a larger horizon to keep reminding about very old deadlines). Keys run from the
    furthest ahead to the most overdue.
    """
    if horizon_days < 0:
        raise ValueError("horizon_days must be >= 0")
    result: dict[int, list[ReminderKind]] = {d: [ReminderKind.UPCOMING] for d in policy.before_days}
    for offset in range(-1, -horizon_days - 1, -1):
        kinds = kinds_for_offset(offset, policy)
        if kinds:
            result[offset] = kinds
    return result


def should_remind(status: str, role: str, report_in: bool, policy: ReminderPolicy) -> bool:
    """False for closed assignments, when the period's report is in, and for partners
    (unless ``policy.remind_partners``)."""
    if status.strip().lower() in policy.closed_statuses or report_in:
        return False
    return not (role.strip().lower() == "partner" and not policy.remind_partners)


# --- quarterly progress reports -------------------------------------------------------


def quarter_end(day: date) -> date:
    """Last day of the calendar quarter containing ``day``."""
    month = ((day.month - 1) // 3 + 1) * 3
    return date(day.year, month, calendar.monthrange(day.year, month)[1])


def quarter_report_due(day: date, policy: ReminderPolicy) -> date:
    """Due date of the progress report for the quarter containing ``day``: the
    ``report_due_day`` of the following month (clamped to that month's length)."""
    end = quarter_end(day)
    year, month = (end.year + 1, 1) if end.month == 12 else (end.year, end.month + 1)
    return date(year, month, min(policy.report_due_day, calendar.monthrange(year, month)[1]))


def report_due_dates(start: date, end: date, policy: ReminderPolicy) -> list[date]:
    """Report due dates for every quarter from the one containing ``start`` to the one
    containing ``end`` (inclusive)."""
    if end < start:
        return []
    dues: list[date] = []
    day = start
    while True:
        dues.append(quarter_report_due(day, policy))
        q_end = quarter_end(day)
        if q_end >= end:
            return dues
        day = q_end + timedelta(days=1)


def quarter_start(day: date) -> date:
    """First day of the calendar quarter containing ``day``."""
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def report_periods(
    active_from: date | None,
    own_dues: list[date],
    reported: list[date] | set[date] | frozenset[date],
    policy: ReminderPolicy,
) -> list[tuple[date, date]]:
    """``(quarter start, report due date)`` of every quarterly progress report still owed.

    Reports are owed for each quarter from the one containing ``active_from`` up to the one
    containing the last own due date (or ``report_horizon_days`` after ``active_from`` when
    there is none); quarters whose start is in ``reported`` are in already.
    """
    if active_from is None:
        return []
    end = max(own_dues) if own_dues else active_from + timedelta(days=policy.report_horizon_days)
    done = {quarter_start(d) for d in reported}
    periods: list[tuple[date, date]] = []
    day = quarter_start(active_from)
    while day <= end:
        if day not in done:
            periods.append((day, quarter_report_due(day, policy)))
        day = quarter_end(day) + timedelta(days=1)
    return periods


def first_due_seen(as_of: date, policy: ReminderPolicy) -> date:
    """The earliest due date a pass as of ``as_of`` looks at (``overdue_horizon_days``)."""
    return as_of - timedelta(days=policy.overdue_horizon_days)


def last_due_seen(as_of: date, policy: ReminderPolicy) -> date:
    """The latest due date a pass as of ``as_of`` looks at (its furthest upcoming offset)."""
    return as_of + timedelta(days=max(policy.before_days, default=0))


def report_dates_window(day: date, policy: ReminderPolicy) -> tuple[date, date]:
    """The due dates (first, last) report rows are written for on ``day`` (by the consumer,
    on the clock's today; by a pass, as of its date): what a pass on that day looks at, and
    ``report_dates_ahead_days`` more ahead. Passes on later days then find the rows there
    for most of a quarter; a pass runs forward in time, so none is needed behind."""
    return (first_due_seen(day, policy),
            last_due_seen(day, policy) + timedelta(days=policy.report_dates_ahead_days))


# (quarter start, report due date)
Period = tuple[date, date]


def reports_due_within(owed: Sequence[Period], since: date | None, until: date | None,
                       written: tuple[date, date] | None = None
                       ) -> tuple[list[Period], date | None, date | None]:
    """Which owed reports (``report_periods``, in quarter order) to write for the due dates
    from ``since`` to ``until`` (None: no bound), and the ``reports_from`` and
    ``reports_until`` to record with them.

    ``written``: the first and last quarter whose row is written already (None: none);
    those and the ones between are not written again. Returned: the periods to write; the
    day after the last owed report due before ``since`` and the day before the first one
    due after ``until`` (None: there is none), so that every owed report due from
    reports_from to reports_until has its row. Due dates grow with the quarter, so the rows
    written are always consecutive owed quarters, and quarters identify them whatever
    ``report_due_day`` was when they were written.
    """
    write: list[Period] = []
    reports_from: date | None = None
    for period in owed:
        start, due = period
        if since is not None and due < since:
            reports_from = due + timedelta(days=1)
        elif until is not None and due > until:
            return write, reports_from, due - timedelta(days=1)
        elif written is None or not written[0] <= start <= written[1]:
            write.append(period)
    return write, reports_from, None


def owed_reports_within(active_from: date | None, last_deadline: date | None,
                        reported: Sequence[date], policy: ReminderPolicy,
                        since: date | None, until: date | None,
                        written: tuple[date, date] | None = None
                        ) -> tuple[list[Period], date | None, date | None]:
    """``reports_due_within`` the ``report_periods`` of an assignment whose last own
    deadline is ``last_deadline`` (what the consumer writes and a pass adds)."""
    own = [last_deadline] if last_deadline is not None else []
    return reports_due_within(report_periods(active_from, own, list(reported), policy),
                              since, until, written)


# --- who hears of a reminder ----------------------------------------------------------


@dataclass(frozen=True)
class Route:
    recipient: str
    recipient_kind: str  # agency | escalation | coordinator
    flags: tuple[str, ...] = ()


def route(
    kind: ReminderKind,
    emails: list[str] | None,
    escalation_email: str | None,
    coordinators: list[str],
) -> list[Route]:
    """Recipients of one reminder. Nobody is ever skipped silently: an agency without a
    contact (or without an escalation contact, for escalations) makes its reminder go to the
    coordinators, flagged. An empty result means there is nobody at all to tell (no
    coordinators configured); the caller reports it."""
    if kind is ReminderKind.ESCALATION_COORDINATOR:
        return [Route(c, "coordinator") for c in coordinators]
    if kind is ReminderKind.ESCALATION_AGENCY:
        if escalation_email and escalation_email.strip():
            return [Route(escalation_email.strip(), "escalation")]
        return [Route(c, "coordinator", ("no_escalation_contact",)) for c in coordinators]
    addresses = [e.strip() for e in (emails or []) if e and e.strip()]
    if addresses:
        return [Route(a, "agency") for a in dict.fromkeys(addresses)]
    return [Route(c, "coordinator", ("no_contact",)) for c in coordinators]
