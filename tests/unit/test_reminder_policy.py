"""Unit tests for services.notifier.policy (pure reminder policy)."""

from __future__ import annotations

from datetime import date, timedelta

import pydantic
import pytest

from services.notifier.policy import (
    Reminder,
    ReminderKind,
    ReminderPolicy,
    Route,
    first_due_seen,
    kinds_for_offset,
    last_due_seen,
    offsets_for_day,
    quarter_end,
    quarter_report_due,
    quarter_start,
    reminders_for,
    report_dates_window,
    report_due_dates,
    report_periods,
    reports_due_within,
    route,
    should_remind,
)

K = ReminderKind
DEFAULT = ReminderPolicy()
DUE = date(2009, 12, 31)  # "4th quarter of 2009"


def kinds_on(as_of: date, due: date = DUE, policy: ReminderPolicy = DEFAULT) -> list[K]:
    return [r.kind for r in reminders_for(due, as_of, policy)]


# --- before the due date --------------------------------------------------------------


@pytest.mark.parametrize("days", [30, 14, 7, 1])
def test_upcoming_on_each_offset_day(days: int) -> None:
    as_of = DUE - timedelta(days=days)
    assert reminders_for(DUE, as_of, DEFAULT) == [Reminder(K.UPCOMING, days)]


@pytest.mark.parametrize("days", [d for d in range(0, 61) if d not in (30, 14, 7, 1)])
def test_nothing_on_other_days_before_due(days: int) -> None:
    assert reminders_for(DUE, DUE - timedelta(days=days), DEFAULT) == []


def test_due_day_reminder_when_configured() -> None:
    policy = ReminderPolicy(before_days=(7, 0))
    assert reminders_for(DUE, DUE, policy) == [Reminder(K.UPCOMING, 0)]


def test_real_calendar_dates_across_month_and_year() -> None:
    assert kinds_on(date(2009, 12, 1)) == [K.UPCOMING]  # 30 days before 31 Dec
    assert kinds_on(date(2009, 12, 30)) == [K.UPCOMING]  # 1 day before
    assert kinds_on(date(2010, 1, 1)) == [K.OVERDUE]  # day 1 overdue, next year
    assert kinds_on(date(2010, 1, 2)) == []


# --- overdue and escalation -----------------------------------------------------------


def test_overdue_day_one_then_weekly() -> None:
    overdue_days = [d for d in range(1, 120) if K.OVERDUE in kinds_on(DUE + timedelta(days=d))]
    assert overdue_days == list(range(1, 120, 7))  # 1, 8, 15, 22, ...


def test_overdue_offsets_are_negative() -> None:
    assert reminders_for(DUE, DUE + timedelta(days=8), DEFAULT) == [Reminder(K.OVERDUE, -8)]


def test_escalation_to_agency_from_day_14_weekly() -> None:
    days = [d for d in range(1, 120) if K.ESCALATION_AGENCY in kinds_on(DUE + timedelta(days=d))]
    assert days == list(range(14, 120, 7))


def test_escalation_to_coordinators_from_day_30_weekly() -> None:
    days = [
        d for d in range(1, 120) if K.ESCALATION_COORDINATOR in kinds_on(DUE + timedelta(days=d))
    ]
    assert days == list(range(30, 120, 7))


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (13, []),
        (14, [K.ESCALATION_AGENCY]),
        (15, [K.OVERDUE]),
        (21, [K.ESCALATION_AGENCY]),
        (29, [K.OVERDUE]),
        (30, [K.ESCALATION_COORDINATOR]),
        (35, [K.ESCALATION_AGENCY]),
        (36, [K.OVERDUE]),
        (37, [K.ESCALATION_COORDINATOR]),
    ],
)
def test_default_escalation_days(days: int, expected: list[K]) -> None:
    assert kinds_on(DUE + timedelta(days=days)) == expected


def test_several_kinds_on_one_day() -> None:
    policy = ReminderPolicy(escalate_agency_after_days=8, escalate_coordinators_after_days=15)
    as_of = DUE + timedelta(days=15)
    assert reminders_for(DUE, as_of, policy) == [
        Reminder(K.OVERDUE, -15),
        Reminder(K.ESCALATION_AGENCY, -15),
        Reminder(K.ESCALATION_COORDINATOR, -15),
    ]
    assert kinds_on(DUE + timedelta(days=8), policy=policy) == [K.OVERDUE, K.ESCALATION_AGENCY]


def test_custom_rhythm() -> None:
    policy = ReminderPolicy(overdue_first_day=2, overdue_every_days=3)
    days = [d for d in range(1, 20) if K.OVERDUE in kinds_on(DUE + timedelta(days=d), DUE, policy)]
    assert days == [2, 5, 8, 11, 14, 17]


def test_daily_runs_send_each_reminder_exactly_once() -> None:
    sent: list[tuple[K, int]] = []
    for day in range(-60, 61):
        as_of = DUE + timedelta(days=day)
        sent += [(r.kind, r.offset_days) for r in reminders_for(DUE, as_of, DEFAULT)]
    assert len(sent) == len(set(sent))
    assert [o for k, o in sent if k is K.UPCOMING] == [30, 14, 7, 1]


# --- offsets_for_day ------------------------------------------------------------------


POLICIES = [
    DEFAULT,
    ReminderPolicy(before_days=(60, 3, 0), overdue_first_day=2, overdue_every_days=5),
    ReminderPolicy(escalate_agency_after_days=8, escalate_coordinators_after_days=15),
    ReminderPolicy(overdue_every_days=1, escalate_agency_after_days=3),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_offsets_for_day_agrees_with_reminders_for(policy: ReminderPolicy) -> None:
    horizon = 366
    offsets = offsets_for_day(policy, horizon)
    as_of = date(2011, 3, 15)
    for diff in range(-horizon, 500):
        expected = [r.kind for r in reminders_for(as_of + timedelta(days=diff), as_of, policy)]
        assert offsets.get(diff, []) == expected, diff
    assert all(kinds for kinds in offsets.values())
    assert min(offsets) >= -horizon


def test_offsets_for_day_defaults() -> None:
    offsets = offsets_for_day(DEFAULT)
    assert [d for d in offsets if d >= 0] == [30, 14, 7, 1]
    assert offsets[-1] == [K.OVERDUE]
    assert offsets[-14] == [K.ESCALATION_AGENCY]
    assert offsets[-30] == [K.ESCALATION_COORDINATOR]
    assert -2 not in offsets
    assert list(offsets) == sorted(offsets, reverse=True)
    assert all(isinstance(d, int) for d in offsets)


def test_offsets_for_day_horizon() -> None:
    assert min(offsets_for_day(DEFAULT, horizon_days=10)) == -8
    assert list(offsets_for_day(DEFAULT, horizon_days=0)) == [30, 14, 7, 1]
    far = offsets_for_day(DEFAULT, horizon_days=800)
    assert -736 in far  # 1 + 105 * 7: the weekly rhythm does not stop by itself
    with pytest.raises(ValueError):
        offsets_for_day(DEFAULT, horizon_days=-1)


def test_kinds_for_offset_matches_reminders() -> None:
    assert kinds_for_offset(7, DEFAULT) == [K.UPCOMING]
    assert kinds_for_offset(0, DEFAULT) == []
    assert kinds_for_offset(-1, DEFAULT) == [K.OVERDUE]


# --- should_remind --------------------------------------------------------------------


@pytest.mark.parametrize("status", ["implemented", "cancelled", "closed", "Implemented "])
def test_closed_statuses_stop_reminders(status: str) -> None:
    assert not should_remind(status, "lead", False, DEFAULT)


@pytest.mark.parametrize(
    "status", ["not_started", "in_progress", "partially_implemented", "not_implemented"]
)
@pytest.mark.parametrize("role", ["lead", "co"])
def test_open_statuses_remind(status: str, role: str) -> None:
    assert should_remind(status, role, False, DEFAULT)


def test_report_in_stops_reminders() -> None:
    assert not should_remind("in_progress", "lead", True, DEFAULT)


def test_partners_only_when_asked() -> None:
    assert not should_remind("in_progress", "partner", False, DEFAULT)
    assert should_remind("in_progress", "partner", False, ReminderPolicy(remind_partners=True))
    assert not should_remind("implemented", "partner", False, ReminderPolicy(remind_partners=True))


def test_custom_closed_statuses() -> None:
    policy = ReminderPolicy(closed_statuses="Implemented, not_implemented")
    assert policy.closed_statuses == frozenset({"implemented", "not_implemented"})
    assert not should_remind("not_implemented", "lead", False, policy)
    assert should_remind("cancelled", "lead", False, policy)


# --- the model itself -----------------------------------------------------------------


def test_policy_defaults() -> None:
    assert DEFAULT.before_days == (30, 14, 7, 1)
    assert (DEFAULT.overdue_first_day, DEFAULT.overdue_every_days) == (1, 7)
    assert DEFAULT.escalate_agency_after_days == 14
    assert DEFAULT.escalate_coordinators_after_days == 30
    assert DEFAULT.report_due_day == 10
    assert DEFAULT.remind_partners is False
    assert DEFAULT.closed_statuses == frozenset({"implemented", "cancelled", "closed"})


def test_policy_parses_env_style_values() -> None:
    policy = ReminderPolicy.model_validate(
        {"before_days": "7, 30,14", "remind_partners": "true", "overdue_every_days": "3"}
    )
    assert policy.before_days == (30, 14, 7)
    assert policy.remind_partners is True
    assert policy.overdue_every_days == 3
    assert ReminderPolicy.model_validate({"before_days": "[1, 2]"}).before_days == (2, 1)
    assert ReminderPolicy.model_validate_json('{"before_days": [5, 5, 1]}').before_days == (5, 1)


@pytest.mark.parametrize(
    "values",
    [
        {"before_days": (30, -1)},
        {"overdue_every_days": 0},
        {"overdue_first_day": 0},
        {"escalate_agency_after_days": 40, "escalate_coordinators_after_days": 30},
        {"report_due_day": 0},
        {"report_due_day": 32},
    ],
)
def test_policy_rejects_bad_values(values: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ReminderPolicy.model_validate(values)


def test_policy_is_frozen_and_hashable() -> None:
    with pytest.raises(pydantic.ValidationError):
        DEFAULT.overdue_every_days = 3  # type: ignore[misc]
    assert hash(ReminderPolicy()) == hash(DEFAULT)


# --- quarterly progress reports -------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "end", "report_due"),
    [
        (date(2009, 1, 1), date(2009, 3, 31), date(2009, 4, 10)),
        (date(2009, 5, 17), date(2009, 6, 30), date(2009, 7, 10)),
        (date(2009, 9, 30), date(2009, 9, 30), date(2009, 10, 10)),
        (date(2009, 10, 1), date(2009, 12, 31), date(2010, 1, 10)),
    ],
)
def test_quarter_report_due(day: date, end: date, report_due: date) -> None:
    assert quarter_end(day) == end
    assert quarter_report_due(day, DEFAULT) == report_due


def test_quarter_report_due_clamps_to_month_length() -> None:
    assert quarter_report_due(date(2010, 2, 1), ReminderPolicy(report_due_day=31)) == date(
        2010, 4, 30
    )


def test_report_due_dates_over_a_period() -> None:
    assert report_due_dates(date(2009, 11, 5), date(2010, 6, 30), DEFAULT) == [
        date(2010, 1, 10),
        date(2010, 4, 10),
        date(2010, 7, 10),
    ]
    assert report_due_dates(date(2010, 2, 1), date(2010, 2, 1), DEFAULT) == [date(2010, 4, 10)]
    assert report_due_dates(date(2010, 2, 1), date(2009, 2, 1), DEFAULT) == []


# --- quarterly reports owed -----------------------------------------------------------


def test_quarter_start() -> None:
    assert quarter_start(date(2009, 12, 31)) == date(2009, 10, 1)
    assert quarter_start(date(2010, 1, 1)) == date(2010, 1, 1)
    assert quarter_start(date(2010, 6, 15)) == date(2010, 4, 1)


def test_report_periods_up_to_the_last_own_due_date() -> None:
    periods = report_periods(date(2009, 11, 5), [date(2010, 6, 30), date(2009, 12, 31)], [],
                             DEFAULT)
    assert periods == [
        (date(2009, 10, 1), date(2010, 1, 10)),
        (date(2010, 1, 1), date(2010, 4, 10)),
        (date(2010, 4, 1), date(2010, 7, 10)),
    ]


def test_report_periods_skip_quarters_reported() -> None:
    periods = report_periods(date(2009, 10, 1), [date(2010, 6, 30)],
                             [date(2010, 1, 1), date(2010, 2, 17)], DEFAULT)
    # a report dated inside a quarter counts for that quarter too
    assert [start for start, _ in periods] == [date(2009, 10, 1), date(2010, 4, 1)]


def test_report_periods_without_own_due_date_use_the_horizon() -> None:
    policy = ReminderPolicy(report_horizon_days=365)
    periods = report_periods(date(2010, 1, 1), [], [], policy)
    assert [start for start, _ in periods] == [
        date(2010, 1, 1), date(2010, 4, 1), date(2010, 7, 1), date(2010, 10, 1),
        date(2011, 1, 1)]
    assert len(report_periods(date(2010, 1, 1), [], [], DEFAULT)) == 9


def test_report_periods_need_active_from_and_follow_report_due_day() -> None:
    assert report_periods(None, [date(2010, 6, 30)], [], DEFAULT) == []
    policy = ReminderPolicy(report_due_day=25)
    assert report_periods(date(2010, 1, 1), [date(2010, 3, 31)], [], policy) == [
        (date(2010, 1, 1), date(2010, 4, 25))]


def test_report_periods_when_deadline_precedes_active_from() -> None:
    assert report_periods(date(2010, 5, 1), [date(2010, 3, 31)], [], DEFAULT) == []


# --- report due rows for a window of due dates ----------------------------------------


def test_the_report_dates_window_is_what_a_pass_reads_and_some_months_ahead() -> None:
    day = date(2010, 1, 1)
    assert first_due_seen(day, DEFAULT) == day - timedelta(days=1830)  # overdue horizon
    assert last_due_seen(day, DEFAULT) == date(2010, 1, 31)  # 30 days before: the furthest
    assert report_dates_window(day, DEFAULT) == (
        day - timedelta(days=1830), date(2010, 1, 31) + timedelta(days=92))
    policy = ReminderPolicy(before_days=(), report_dates_ahead_days=0, overdue_horizon_days=0)
    assert first_due_seen(day, policy) == last_due_seen(day, policy) == day
    assert report_dates_window(day, policy) == (day, day)
    with pytest.raises(pydantic.ValidationError):
        ReminderPolicy(report_dates_ahead_days=-1)


OWED = report_periods(date(2009, 11, 5), [date(2010, 12, 31)], [date(2010, 4, 1)], DEFAULT)
# (2009-10-01, 2010-01-10), (2010-01-01, 2010-04-10), (2010-07-01, 2010-10-10),
# (2010-10-01, 2011-01-10)


def test_reports_due_within_a_window() -> None:
    assert reports_due_within(OWED, None, date(2010, 4, 10)) == (
        OWED[:2], None, date(2010, 10, 9))
    assert reports_due_within(OWED, date(2009, 1, 1), date(2010, 10, 9)) == (
        OWED[:2], None, date(2010, 10, 9))
    assert reports_due_within(OWED, date(2010, 1, 11), date(2010, 10, 10)) == (
        OWED[1:3], date(2010, 1, 11), date(2011, 1, 9))
    assert reports_due_within(OWED, date(2010, 4, 10), None) == (
        OWED[1:], date(2010, 1, 11), None)
    assert reports_due_within(OWED, date(2008, 1, 1), date(2009, 6, 1)) == (
        [], None, date(2010, 1, 9))
    assert reports_due_within(OWED, date(2012, 1, 1), date(2012, 6, 1)) == (
        [], date(2011, 1, 11), None)
    assert reports_due_within(OWED, None, None) == (OWED, None, None)
    assert reports_due_within([], date(2009, 6, 1), date(2009, 6, 1)) == ([], None, None)


def test_reports_due_within_a_wider_window_leave_out_the_quarters_written() -> None:
    # Written: the second and third; widened both ways: the first and the fourth.
    written = (date(2010, 1, 1), date(2010, 7, 1))
    assert reports_due_within(OWED, None, None, written) == (
        [OWED[0], OWED[3]], None, None)
    assert reports_due_within(OWED, date(2010, 1, 1), date(2010, 12, 31), written) == (
        [OWED[0]], None, date(2011, 1, 9))
    # Quarters, not due dates, say what was written: with another report_due_day since,
    # the quarters beyond the ones written are added, none twice.
    later = report_periods(date(2009, 11, 5), [date(2010, 12, 31)], [date(2010, 4, 1)],
                           ReminderPolicy(report_due_day=5))
    assert reports_due_within(later, date(2010, 1, 6), date(2010, 12, 31),
                              (date(2010, 1, 1), date(2010, 1, 1))) == (
        [(date(2010, 7, 1), date(2010, 10, 5))], date(2010, 1, 6), date(2011, 1, 4))


# --- routing --------------------------------------------------------------------------

COORDS = ["c1@hr.kz", "c2@hr.kz"]


def test_route_to_the_agency() -> None:
    assert route(K.UPCOMING, ["a@x.kz", " a@x.kz", "b@x.kz"], "esc@x.kz", COORDS) == [
        Route("a@x.kz", "agency"), Route("b@x.kz", "agency")]
    assert route(K.OVERDUE, ["a@x.kz"], None, COORDS) == [Route("a@x.kz", "agency")]


@pytest.mark.parametrize("emails", [[], None, ["", "  "]])
def test_route_without_contact_goes_to_coordinators_flagged(emails: list[str] | None) -> None:
    for kind in (K.UPCOMING, K.OVERDUE):
        assert route(kind, emails, "esc@x.kz", COORDS) == [
            Route(c, "coordinator", ("no_contact",)) for c in COORDS]


def test_route_escalations() -> None:
    assert route(K.ESCALATION_AGENCY, ["a@x.kz"], "esc@x.kz", COORDS) == [
        Route("esc@x.kz", "escalation")]
    assert route(K.ESCALATION_AGENCY, ["a@x.kz"], None, COORDS) == [
        Route(c, "coordinator", ("no_escalation_contact",)) for c in COORDS]
    assert route(K.ESCALATION_COORDINATOR, ["a@x.kz"], "esc@x.kz", COORDS) == [
        Route(c, "coordinator") for c in COORDS]


def test_route_with_nobody_at_all_is_empty() -> None:
    assert route(K.UPCOMING, [], None, []) == []
    assert route(K.ESCALATION_COORDINATOR, ["a@x.kz"], None, []) == []


def test_overdue_horizon_is_part_of_the_policy() -> None:
    assert DEFAULT.overdue_horizon_days == 1830
    short = ReminderPolicy(overdue_horizon_days=20)
    assert min(offsets_for_day(short, short.overdue_horizon_days)) == -15
