"""Deadlines as written in recommendations, normalized to a period (DESIGN.md section 2).

Every text is turned into a `Deadline` with a start date and a due date (the last day of
the period). Nothing here raises on odd input: text that says nothing parseable comes back
flagged `needs_deadline`, with the text kept, so a coordinator can set the date by hand.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Deadline",
    "deadline_in_text",
    "leading_deadline",
    "parse_deadline",
    "quarterly_report_periods",
    "recurring_due_dates",
    "upr_derived_deadlines",
]


class Deadline(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    start: date | None
    due: date | None
    recurrence: Literal["yearly"] | None = None
    needs_deadline: bool = False


# --- vocabulary -----------------------------------------------------------------------------

_MONTHS = {
    name: i
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
_ORDINALS = {
    "1st": 1,
    "first": 1,
    "i": 1,
    "2nd": 2,
    "second": 2,
    "ii": 2,
    "3rd": 3,
    "third": 3,
    "iii": 3,
    "4th": 4,
    "fourth": 4,
    "iv": 4,
}

_YEAR = r"(?<![\d\ufffd])(?:19|20)\d{2}(?![\d\ufffd])"
_DASH = r"\s*[-\u2010-\u2015\u2212]\s*"  # hyphen, en/em dashes, minus, with any spacing
_MONTH = r"(?:" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_ORD = r"(?:[1-4](?:st|nd|rd|th)|first|second|third|fourth|IV|I{1,3})"
_QWORD = r"quarters?|qtrs?\.?|q\.?"
_OF = r"(?:\s+of)?(?:\s+the)?(?:\s+year)?"

# Each pattern matches a whole deadline phrase; its builder in _PERIOD_PATTERNS makes dates.
_Q_SPAN = re.compile(
    rf"\b(?P<q1>{_ORD})(?:{_DASH}(?P<q2>{_ORD}))?\s+(?:{_QWORD}){_OF}\s+(?P<y>{_YEAR})"
    rf"(?:{_DASH}(?P<q3>{_ORD})\s+(?:{_QWORD}){_OF}\s+(?P<y3>{_YEAR}))?",
    re.I,
)
_Q_SHORT = re.compile(
    rf"\bQ(?P<q1>[1-4])(?:{_DASH}Q(?P<q2>[1-4]))?[\s/,]+(?P<y>{_YEAR})"
    rf"|\b(?P<y2>{_YEAR})[\s/-]+Q(?P<q3>[1-4])\b",
    re.I,
)
_HALF = re.compile(
    rf"(?:(?P<h>1st|first|2nd|second)\s+half|\bH(?P<hn>[12])){_OF}\s+(?P<y>{_YEAR})", re.I
)
_FULL_DATE = re.compile(
    rf"\b(?P<m>{_MONTH})\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y>{_YEAR})\b"
    rf"|\b(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m2>{_MONTH}),?\s+(?P<y2>{_YEAR})\b"
    rf"|\b(?P<iso>{_YEAR}-\d{{2}}-\d{{2}})\b",
    re.I,
)
_MONTH_YEAR = re.compile(
    rf"\b(?P<m>{_MONTH})(?:{_DASH}(?P<m2>{_MONTH}))?,?\s+(?:of\s+)?(?P<y>{_YEAR})\b", re.I
)
_YEAR_RANGE = re.compile(rf"\b(?P<y1>{_YEAR}){_DASH}(?P<y2>{_YEAR}|\d{{2}}(?![\d\ufffd]))")
_SINGLE_YEAR = re.compile(rf"\b(?P<y>{_YEAR})\b")
_YEARLY = re.compile(
    r"\b(?:yearly|annually|annual|every\s+year|each\s+year|once\s+a\s+year|per\s+year)\b", re.I
)
# "By the end of ...", "until ...", "before ...": only the due date is known.
_BY = re.compile(
    r"^\s*(?:(?:by|until|till|not\s+later\s+than|no\s+later\s+than)(?:\s+the\s+end\s+of)?"
    r"|(?:before|prior\s+to)(?:\s+the\s+end\s+of)?|(?:to\s+)?the\s+end\s+of)\b",
    re.I,
)
_BEFORE = re.compile(r"^\s*(?:before|prior\s+to)\b(?!\s+the\s+end)", re.I)


def _last_day(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def _quarter_start(year: int, quarter: int) -> date:
    return date(year, 3 * quarter - 2, 1)


def _quarter_end(year: int, quarter: int) -> date:
    return _last_day(year, 3 * quarter)


def _ordinal(token: str) -> int:
    return _ORDINALS[token.casefold()]


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --- period extraction ----------------------------------------------------------------------

Period = tuple[date, date]


def _quarter_span(m: re.Match[str]) -> Period:
    year = int(m["y"])
    first = _ordinal(m["q1"])
    last = _ordinal(m["q2"]) if m["q2"] else first
    start = _quarter_start(year, first)
    if m["q3"]:  # "4th quarter of 2009 - 2nd quarter of 2010"
        return start, _quarter_end(int(m["y3"]), _ordinal(m["q3"]))
    return start, _quarter_end(year, max(first, last))


def _quarter_short(m: re.Match[str]) -> Period:
    if m["y2"]:
        q = int(m["q3"])
        return _quarter_start(int(m["y2"]), q), _quarter_end(int(m["y2"]), q)
    first = int(m["q1"])
    last = int(m["q2"]) if m["q2"] else first
    return _quarter_start(int(m["y"]), first), _quarter_end(int(m["y"]), max(first, last))


def _half(m: re.Match[str]) -> Period:
    year = int(m["y"])
    second = (m["hn"] == "2") or (m["h"] or "").casefold() in ("2nd", "second")
    return (
        (date(year, 7, 1), date(year, 12, 31)) if second else (date(year, 1, 1), date(year, 6, 30))
    )


def _full_date(m: re.Match[str]) -> Period | None:
    try:
        if m["iso"]:
            day = date.fromisoformat(m["iso"])
        elif m["m"]:
            day = date(int(m["y"]), _MONTHS[m["m"].rstrip(".").casefold()], int(m["d"]))
        else:
            day = date(int(m["y2"]), _MONTHS[m["m2"].rstrip(".").casefold()], int(m["d2"]))
    except ValueError:  # "February 30, 2010": not a date, so no deadline
        return None
    return day, day


def _month_year(m: re.Match[str]) -> Period:
    year = int(m["y"])
    first = _MONTHS[m["m"].rstrip(".").casefold()]
    last = _MONTHS[m["m2"].rstrip(".").casefold()] if m["m2"] else first
    return date(year, first, 1), _last_day(year, max(first, last))


def _year_range(m: re.Match[str]) -> Period | None:
    first = int(m["y1"])
    last_text = m["y2"]
    last = int(last_text) if len(last_text) == 4 else first // 100 * 100 + int(last_text)
    if last < first:
        return None
    return date(first, 1, 1), date(last, 12, 31)


def _single_year(m: re.Match[str]) -> Period:
    year = int(m["y"])
    return date(year, 1, 1), date(year, 12, 31)


# Most specific first: "4th quarter of 2009" must not be read as the year 2009.
_PERIOD_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Period | None]]] = [
    (_Q_SPAN, _quarter_span),
    (_Q_SHORT, _quarter_short),
    (_HALF, _half),
    (_FULL_DATE, _full_date),
    (_MONTH_YEAR, _month_year),
    (_YEAR_RANGE, _year_range),
    (_SINGLE_YEAR, _single_year),
]


def _first_period(text: str) -> tuple[Period, re.Match[str]] | None:
    for pattern, build in _PERIOD_PATTERNS:
        for m in pattern.finditer(text):
            period = build(m)
            if period is not None:
                return period, m
    return None


def parse_deadline(text: str | None, *, plan_period: tuple[int, int] | None = None) -> Deadline:
    """Normalize a deadline as written; never raises (unparseable -> needs_deadline)."""
    written = _clean(text or "")
    if not written:
        return Deadline(text="", start=None, due=None, needs_deadline=True)
    if len(written.split()) > _MAX_DEADLINE_WORDS:
        # Prose such as "In 2012, ratify the Convention of June 28, 1952": only a phrase
        # that states when counts, not any year it mentions.
        inner = deadline_in_text(written)
        if inner is None:
            return Deadline(text=written, start=None, due=None, needs_deadline=True)
        return inner.model_copy(update={"text": written})
    if _BROKEN_DIGIT.search(written):  # "2009-20\ufffd2": a digit lost in PDF extraction
        return Deadline(text=written, start=None, due=None, needs_deadline=True)
    if _YEARLY.search(written):
        return _yearly(written, plan_period)
    found = _first_period(written)
    if found is None:
        return Deadline(text=written, start=None, due=None, needs_deadline=True)
    (start, due), m = found
    before = written[: m.start()]
    if _BEFORE.match(before):  # "before October 1, 2011": the day before is the last one
        return Deadline(text=written, start=None, due=start - timedelta(days=1))
    if _BY.match(before):
        return Deadline(text=written, start=None, due=due)
    return Deadline(text=written, start=start, due=due)


# A deadline cell is a short phrase ("2nd - 4th quarter of 2009", "By the end of August
# 2022"); anything longer is prose in which the deadline has to be found.
_MAX_DEADLINE_WORDS = 10
_BROKEN_DIGIT = re.compile(r"\d\ufffd|\ufffd\d")


def _yearly(written: str, plan_period: tuple[int, int] | None) -> Deadline:
    found = _first_period(written)
    if found is not None:  # "Yearly in 2010-2011": recurring within the stated years
        (start, due), _ = found
        return Deadline(
            text=written,
            start=date(start.year, 1, 1),
            due=date(due.year, 12, 31),
            recurrence="yearly",
        )
    if plan_period:
        return Deadline(
            text=written,
            start=date(plan_period[0], 1, 1),
            due=date(plan_period[1], 12, 31),
            recurrence="yearly",
        )
    # No period to recur over: no date can be computed, so a coordinator must set one.
    return Deadline(text=written, start=None, due=None, recurrence="yearly", needs_deadline=True)


_LEAD_IN = re.compile(
    r"\s*(?:(?:during|in|throughout|within|by|until|till|before|not\s+later\s+than"
    r"|no\s+later\s+than)(?:\s+the\s+end\s+of)?\s+(?:the\s+)?(?:years?\s+)?)?",
    re.I,
)
_YEARLY_AT = re.compile(r"\s*(?:yearly|annually|every\s+year|each\s+year)\b", re.I)
_PHRASE_END = re.compile(r"(?=\s|$|[,.;:)])")


def leading_deadline(text: str) -> str | None:
    """The deadline phrase that `text` starts with ("4th quarter\nof 2009 Ministry ..." ->
    "4th quarter\nof 2009"), or None: where a table's deadline cell ends and executors begin."""
    m = _YEARLY_AT.match(text)
    if m:
        return text[: m.end()].strip()
    lead = _LEAD_IN.match(text)
    pos = lead.end() if lead else 0
    best = 0
    for pattern, build in _PERIOD_PATTERNS:
        found = pattern.match(text, pos)
        if (
            found
            and found.end() > best
            and _PHRASE_END.match(text, found.end())
            and build(found) is not None
        ):
            best = found.end()
    return text[:best].strip() if best else None


def recurring_due_dates(deadline: Deadline, plan_period: tuple[int, int]) -> list[date]:
    """Yearly: Dec 31 of each year of the plan period; otherwise the one due date, if any."""
    if deadline.recurrence == "yearly":
        first, last = plan_period
        return [date(year, 12, 31) for year in range(first, last + 1)]
    return [deadline.due] if deadline.due else []


# --- deadlines inside prose -----------------------------------------------------------------

_QUOTED = re.compile(r"\u201c[^\u201d]*\u201d|\"[^\"]*\"|\u00ab[^\u00bb]*\u00bb")
_EXECUTION = re.compile(
    r"(?:time|term|date|deadline)\s+of\s+(?:execution|implementation|fulfil+ment)\s*"
    r"(?:[-\u2010-\u2015:]\s*)?(?P<when>[^);]+)",
    re.I,
)
_DATE_BEFORE = re.compile(
    r"\b(?P<kw>before|by|until|not\s+later\s+than|no\s+later\s+than)\s+"
    rf"(?P<when>(?:{_FULL_DATE.pattern}))",
    re.I,
)
_TEMPORAL = re.compile(
    rf"\b(?P<when>(?:(?:in|during|throughout|within)\s+(?:the\s+)?(?:{_ORD}\s+(?:{_QWORD})"
    rf"(?:{_DASH}{_ORD}\s+(?:{_QWORD}))?|(?:1st|first|2nd|second)\s+half){_OF}\s+{_YEAR})"
    rf"|(?:{_ORD}(?:{_DASH}{_ORD})?\s+(?:{_QWORD}){_OF}\s+{_YEAR})"
    rf"|(?:(?:by|until|till|before)\s+the\s+end\s+of\s+(?:{_MONTH}\s+)?{_YEAR})"
    rf"|(?:(?:in|during|throughout|within|by|until|till|before)\s+(?:the\s+)?"
    rf"(?:(?:years?|period)\s+(?:of\s+)?)?(?:{_MONTH}\s+)?{_YEAR}(?:{_DASH}{_YEAR})?)"
    rf")\b",
    re.I,
)
# "ratified ... in 2003", "adopted in 1976": a past event, not a deadline. A modal before
# the participle ("should be adopted in 2012") keeps it in the future.
_PAST_WORD = re.compile(
    r"\b(?:adopted|ratified|established|approved|signed|held|passed|created|introduced|"
    r"enacted|launched|conducted|considered|submitted|amended|published|entered|came|took|"
    r"founded|opened|started|began|begun|completed|implemented|endorsed|issued|was|were|had|"
    r"been|since|ago|last)\b",
    re.I,
)
_FUTURE_WORD = re.compile(r"\b(?:will|shall|should|must|to|would|can|may|be)\b", re.I)
_CLAUSE_BREAK = re.compile(r"[,.;:()\u2013\u2014]")


def _is_past_reference(text: str, start: int) -> bool:
    clause_start = 0
    for m in _CLAUSE_BREAK.finditer(text, 0, start):
        clause_start = m.end()
    clause = text[clause_start:start]
    past = _PAST_WORD.search(clause)
    return past is not None and not _FUTURE_WORD.search(clause, 0, past.start())


def deadline_in_text(text: str) -> Deadline | None:
    """A deadline stated inside prose ("In 2012, ratify ..." -> 2012), or None.

    Titles in quotes ("the Program ... for 2009-2011"), full dates of past documents
    ("of June 28, 1952") and past events ("adopted in 1976") are not deadlines.
    """
    prose = _clean(text)
    if not prose:
        return None
    unquoted = _QUOTED.sub(lambda m: " " * len(m.group()), prose)
    m = _EXECUTION.search(unquoted)
    if m:
        found = parse_deadline(m["when"])
        if not found.needs_deadline:
            return found.model_copy(update={"text": _clean(m["when"])})
    m = _DATE_BEFORE.search(unquoted)
    if m and not _is_past_reference(unquoted, m.start()):
        return parse_deadline(m.group())
    for m in _TEMPORAL.finditer(unquoted):
        if _is_past_reference(unquoted, m.start()):
            continue
        found = parse_deadline(m["when"])
        if not found.needs_deadline:
            return found
    return None


# --- derived dates --------------------------------------------------------------------------


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def upr_derived_deadlines(review_date: date) -> dict[str, date]:
    """UPR follow-up dates: mid-term report 2.5 years and next review 4.5 years after."""
    return {
        "mid_term": _add_months(review_date, 30),
        "next_review": _add_months(review_date, 54),
    }


def quarterly_report_periods(
    start: date, end: date, report_day: int = 10
) -> list[tuple[date, date, date]]:
    """(quarter_start, quarter_end, report_due) for every calendar quarter touching [start, end].

    The report is due on day `report_day` of the month after the quarter ends (clamped to
    the month's length, so 31 means the month's last day).
    """
    if end < start:
        return []
    day = max(1, report_day)
    periods: list[tuple[date, date, date]] = []
    year, quarter = start.year, (start.month - 1) // 3 + 1
    while _quarter_start(year, quarter) <= end:
        q_end = _quarter_end(year, quarter)
        after = _add_months(date(q_end.year, q_end.month, 1), 1)
        due = date(
            after.year, after.month, min(day, calendar.monthrange(after.year, after.month)[1])
        )
        periods.append((_quarter_start(year, quarter), q_end, due))
        year, quarter = (year + 1, 1) if quarter == 4 else (year, quarter + 1)
    return periods
