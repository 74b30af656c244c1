"""Deadline normalization (DESIGN.md section 2): every form the plan and the design use."""

from __future__ import annotations

from datetime import date

import pytest

from shared.deadlines import (
    Deadline,
    deadline_in_text,
    leading_deadline,
    parse_deadline,
    quarterly_report_periods,
    recurring_due_dates,
    upr_derived_deadlines,
)

PLAN = (2009, 2012)


@pytest.mark.parametrize(
    ("text", "start", "due"),
    [
        ("2011", date(2011, 1, 1), date(2011, 12, 31)),
        ("During 2009", date(2009, 1, 1), date(2009, 12, 31)),
        ("In 2012, ratify ...", date(2012, 1, 1), date(2012, 12, 31)),
        ("4th quarter of 2009", date(2009, 10, 1), date(2009, 12, 31)),
        ("4th quarter 2009", date(2009, 10, 1), date(2009, 12, 31)),
        ("IV quarter 2009", date(2009, 10, 1), date(2009, 12, 31)),
        ("fourth quarter of 2009", date(2009, 10, 1), date(2009, 12, 31)),
        ("4th quarter\nof 2009", date(2009, 10, 1), date(2009, 12, 31)),
        ("4th\n\nquarter of\n2009", date(2009, 10, 1), date(2009, 12, 31)),
        ("1st quarter of 2011", date(2011, 1, 1), date(2011, 3, 31)),
        ("2nd quarter of 2010", date(2010, 4, 1), date(2010, 6, 30)),
        ("3rd quarter 2010", date(2010, 7, 1), date(2010, 9, 30)),
        ("2nd-3rd quarter 2009", date(2009, 4, 1), date(2009, 9, 30)),
        ("2nd-3rd \nquarter \n2009", date(2009, 4, 1), date(2009, 9, 30)),
        ("2nd \u2013 4th quarter of 2009", date(2009, 4, 1), date(2009, 12, 31)),
        ("2nd\u20144th quarter of 2009", date(2009, 4, 1), date(2009, 12, 31)),
        ("2nd - 4th quarter of 2009", date(2009, 4, 1), date(2009, 12, 31)),
        ("3rd-4th\nquarter of\n2010", date(2010, 7, 1), date(2010, 12, 31)),
        ("1st-2nd quarter of 2011", date(2011, 1, 1), date(2011, 6, 30)),
        ("4th quarter of 2009 - 1st quarter of 2010", date(2009, 10, 1), date(2010, 3, 31)),
        ("Q3 2010", date(2010, 7, 1), date(2010, 9, 30)),
        ("2009-2010", date(2009, 1, 1), date(2010, 12, 31)),
        ("2010-2012", date(2010, 1, 1), date(2012, 12, 31)),
        ("2009 \u2013 2012", date(2009, 1, 1), date(2012, 12, 31)),
        ("By the end of 2022", None, date(2022, 12, 31)),
        ("by 2011", None, date(2011, 12, 31)),
        ("August 2022", date(2022, 8, 1), date(2022, 8, 31)),
        ("By the end of August 2022", None, date(2022, 8, 31)),
        ("first half of 2010", date(2010, 1, 1), date(2010, 6, 30)),
        ("1st half of 2010", date(2010, 1, 1), date(2010, 6, 30)),
        ("second half of 2011", date(2011, 7, 1), date(2011, 12, 31)),
        ("before October 1, 2011", None, date(2011, 9, 30)),
        ("the year 2009", date(2009, 1, 1), date(2009, 12, 31)),
    ],
)
def test_parse_deadline_forms(text: str, start: date | None, due: date) -> None:
    deadline = parse_deadline(text, plan_period=PLAN)
    assert (deadline.start, deadline.due) == (start, due)
    assert deadline.recurrence is None
    assert not deadline.needs_deadline
    assert deadline.text == " ".join(text.split())


def test_yearly_spans_the_plan_period() -> None:
    deadline = parse_deadline("Yearly", plan_period=PLAN)
    assert deadline == Deadline(
        text="Yearly", start=date(2009, 1, 1), due=date(2012, 12, 31), recurrence="yearly"
    )
    assert recurring_due_dates(deadline, PLAN) == [
        date(2009, 12, 31),
        date(2010, 12, 31),
        date(2011, 12, 31),
        date(2012, 12, 31),
    ]


def test_yearly_without_plan_period_has_no_dates_and_is_flagged() -> None:
    deadline = parse_deadline("Yearly")
    assert (deadline.start, deadline.due, deadline.recurrence) == (None, None, "yearly")
    # No period to recur over: no due date at all, so a coordinator must see it.
    assert deadline.needs_deadline


def test_recurring_due_dates_of_a_one_off_deadline() -> None:
    assert recurring_due_dates(parse_deadline("2nd quarter 2010"), PLAN) == [date(2010, 6, 30)]
    assert recurring_due_dates(parse_deadline("whenever"), PLAN) == []


@pytest.mark.parametrize("text", ["Permanently", "as soon as possible", "", None, "2009-20\ufffd2"])
def test_unparseable_is_flagged_and_kept(text: str | None) -> None:
    deadline = parse_deadline(text, plan_period=PLAN)
    assert deadline.needs_deadline
    assert (deadline.start, deadline.due) == (None, None)
    assert deadline.text == (text or "")


def test_long_prose_takes_only_the_stated_deadline() -> None:
    text = "In 2012, ratify the Convention \u201cOn Maternity Protection\u201d of June 28, 1952."
    deadline = parse_deadline(text)
    assert (deadline.start, deadline.due) == (date(2012, 1, 1), date(2012, 12, 31))
    assert deadline.text == text


@pytest.mark.parametrize(
    ("text", "written", "start", "due"),
    [
        (
            "In 2012, ratify the UN International Convention on the protection of the rights of "
            "all migrant workers",
            "In 2012",
            date(2012, 1, 1),
            date(2012, 12, 31),
        ),
        (
            "For the effective coordination of work with migrants, in 2012 create a single "
            "governmental agency",
            "in 2012",
            date(2012, 1, 1),
            date(2012, 12, 31),
        ),
        (
            "In 2011, to ratify the ILO Convention No. 128 (Geneva, June 29, 1967).",
            "In 2011",
            date(2011, 1, 1),
            date(2011, 12, 31),
        ),
        (
            "\u201cOn Amendments ... \u201d (directed at the Message of the Head of State of 2008, "
            "time of execution \u2013 the year 2009);",
            "the year 2009",
            date(2009, 1, 1),
            date(2009, 12, 31),
        ),
        (
            "\u201cOn Amendments ... Migration\u201d (time of execution \u2013 fourth quarter of "
            "2009);",
            "fourth quarter of 2009",
            date(2009, 10, 1),
            date(2009, 12, 31),
        ),
        (
            "Develop and adopt the Law before October 1, 2011; the developer should be ...",
            "before October 1, 2011",
            None,
            date(2011, 9, 30),
        ),
        (
            "Carry out the study in the 2nd quarter of 2010 with NGOs",
            "in the 2nd quarter of 2010",
            date(2010, 4, 1),
            date(2010, 6, 30),
        ),
        ("Adopt the law by the end of 2022.", "by the end of 2022", None, date(2022, 12, 31)),
        (
            "Train the staff during the years 2010-2011.",
            "during the years 2010-2011",
            date(2010, 1, 1),
            date(2011, 12, 31),
        ),
    ],
)
def test_deadline_in_text(text: str, written: str, start: date | None, due: date) -> None:
    deadline = deadline_in_text(text)
    assert deadline is not None
    assert (deadline.text, deadline.start, deadline.due) == (written, start, due)


@pytest.mark.parametrize(
    "text",
    [
        "Ratify the CIS Convention concerning the Rights of Persons of October 21, 1994.",
        "Implement the OSCE Action Plan, which was ratified at the meeting of the Council of "
        "Ministers in 2003 in Maastricht.",
        "adopt a Code of Conduct of their employees. In Europe, there exists such a Code, "
        "adopted in 1976.",
        "Ensure control of the Program \u201cFor Counteraction of the AIDS Epidemic During "
        "2006-2010\u201d.",
        "Establish shelters for women suffering from domestic violence.",
        "",
    ],
)
def test_no_deadline_in_text(text: str) -> None:
    assert deadline_in_text(text) is None


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("2011 Ministry of Justice,", "2011"),
        ("During 2009 Ministry of Justice", "During 2009"),
        ("Yearly Ministry of Justice, Prosecutor", "Yearly"),
        ("4th\nquarter of\n2009\nThe Ministry of Justice", "4th\nquarter of\n2009"),
        ("2009-2012 Ministry of the Interior,", "2009-2012"),
        ("Ministry of Justice 2009", None),
        ("44/128 of December", None),
    ],
)
def test_leading_deadline(text: str, phrase: str | None) -> None:
    assert leading_deadline(text) == phrase


@pytest.mark.parametrize(
    ("review", "mid_term", "next_review"),
    [
        (date(2010, 2, 12), date(2012, 8, 12), date(2014, 8, 12)),
        (date(2010, 8, 31), date(2013, 2, 28), date(2015, 2, 28)),  # clamped to month end
        (date(2009, 8, 29), date(2012, 2, 29), date(2014, 2, 28)),  # leap day, then not
    ],
)
def test_upr_derived_deadlines(review: date, mid_term: date, next_review: date) -> None:
    assert upr_derived_deadlines(review) == {"mid_term": mid_term, "next_review": next_review}


def test_quarterly_report_periods_cover_every_overlapping_quarter() -> None:
    assert quarterly_report_periods(date(2009, 5, 5), date(2010, 1, 1)) == [
        (date(2009, 4, 1), date(2009, 6, 30), date(2009, 7, 10)),
        (date(2009, 7, 1), date(2009, 9, 30), date(2009, 10, 10)),
        (date(2009, 10, 1), date(2009, 12, 31), date(2010, 1, 10)),
        (date(2010, 1, 1), date(2010, 3, 31), date(2010, 4, 10)),
    ]


def test_quarterly_report_day_is_configurable_and_clamped() -> None:
    assert quarterly_report_periods(date(2010, 1, 1), date(2010, 3, 31), report_day=31) == [
        (date(2010, 1, 1), date(2010, 3, 31), date(2010, 4, 30)),
    ]
    assert quarterly_report_periods(date(2010, 1, 1), date(2009, 1, 1)) == []
