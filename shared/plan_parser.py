"""Parse a National Human Rights Action Plan (text extracted from PDF) into actions.

Two kinds of items come out, each with its chapter (the right concerned):

- every row of the chapters' action tables (`No. Action Deadline Executors`), with the
  deadline and executors as written and parsed;
- every item of the chapters' numbered recommendation lists whose text carries a year, with
  the deadline it states ("In 2012, ratify ...") and no executors; an item whose years only
  date past events or titles ("adopted in 1976") is kept with `needs_deadline`, never dropped.

A chapter may hold several recommendation lists, each numbered from 1 ("In the Field of
Educational Legislation:"); items of the second and later lists carry that list's heading as
`subsection`, so (chapter, section, subsection, number) names one item.

The text is as PDF extraction leaves it: line breaks mid-sentence, table cells wrapped over
many lines (deadline and executors on the line after the action, blank lines inside cells),
stray page numbers, a leading space on the first line of each page. The parser is a line
state machine: prose, table rows, recommendation items; chapter headings close both.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel

from shared.deadlines import Deadline, deadline_in_text, leading_deadline, parse_deadline
from shared.executors import Executor, is_body_name, is_page_debris, join_pdf_lines, parse_executors

__all__ = ["PlanAction", "parse_plan", "plan_actions_json"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


class PlanAction(BaseModel):
    plan: str
    plan_title: str
    plan_period: tuple[int, int]
    chapter: str
    section: Literal["actions", "recommendations"]
    subsection: str | None = None
    number: str
    text: str
    deadline: Deadline
    executors_text: str = ""
    executors: list[Executor]


# --- the plan itself ------------------------------------------------------------------------

_TITLE = re.compile(
    r"(?P<title>National\s+Human\s+Rights\s+Action\s+Plan(?:\s+of\s+[A-Z][a-z]+)?"
    r"(?:\s+for)?(?:\s+the\s+years?(?:\s+of)?)?\s+(?P<y1>(?:19|20)\d{2})\s*[-\u2013\u2014]\s*"
    r"(?P<y2>(?:19|20)\d{2}))"
)
_GENERIC_TITLE = re.compile(
    r"(?P<title>(?:[A-Z][a-z]+\s+){1,6}(?:Action\s+)?Plan\b[^\n.]{0,40}?"
    r"(?P<y1>(?:19|20)\d{2})\s*[-\u2013\u2014]\s*(?P<y2>(?:19|20)\d{2}))"
)


def _plan_identity(text: str) -> tuple[str, str, tuple[int, int]]:
    """(id, title, period): "NHRAP-2009-2012" from "National Human Rights Action Plan ..."."""
    m = _TITLE.search(text) or _GENERIC_TITLE.search(text)
    if m is None:
        years = re.search(r"\b((?:19|20)\d{2})\s*[-\u2013]\s*((?:19|20)\d{2})\b", text)
        period = (int(years[1]), int(years[2])) if years else (0, 0)
        return f"PLAN-{period[0]}-{period[1]}", "Action Plan", period
    title = re.sub(r"\s+", " ", m["title"]).strip()
    name = re.split(r"\bPlan\b", title)[0] + "Plan"
    initials = "".join(w[0] for w in name.split() if w[0].isupper())
    period = (int(m["y1"]), int(m["y2"]))
    return f"{initials}-{period[0]}-{period[1]}", title, period


# --- line classification --------------------------------------------------------------------

_TABLE_HEADER = re.compile(r"^\s*No\.?\s+Actions?\s+Deadlines?\s+Executors?\s*$", re.I)
_ROW_START = re.compile(r"^\s?(\d{1,3})\.\s+(\S.*)$")
# "1. ...", "6) ...", and "\ufffd. ..." where extraction lost the digit.
_ITEM_START = re.compile(r"^\s?(\d{1,2}|\ufffd{1,2})[.)]\s+(\S.*)$")
_RECOMMEND = re.compile(r"\brecommend\b", re.I)
_SMALL_WORDS = _words(
    "a an and the of to in for from on with or by at as under regarding into against "
    "between within during per"
)
_JOINING_END = re.compile(r"(?:\b(?:and|of|the|in|for|to|from|with|or)|[-\u2013\u2014/])\s*$")
_JOINING_START = re.compile(r"^(?:of|and|to|in|for|from|with|or)\b")
_CHAPTER_TITLE = re.compile(
    r"^(?:The\s+)?(?:Human\s+)?Rights?\s+(?:to|of|in)\s+(?:the\s+|a\s+)?[A-Z]"
)


def _is_title_line(line: str) -> bool:
    """Short, capitalized like a title, no sentence punctuation at its end."""
    text = line.strip()
    if not (2 <= len(text) <= 90) or not text[0].isupper() or text[-1] in ".,;:":
        return False
    if re.search(r"\d", text):  # headings here carry no numbers; "... of May 5, 2009" is prose
        return False
    words = re.findall(r"[A-Za-z][\w'\u2019-]*", text)
    return bool(words) and all(w[0].isupper() or w.casefold() in _SMALL_WORDS for w in words)


def _blank(lines: list[str], i: int) -> bool:
    return i < 0 or i >= len(lines) or not lines[i].strip()


# A list heading longer than this is a paragraph ("...we recommend ... the following:").
_MAX_HEADING = 150

# Table cells are narrow columns (at most ~45 characters a line here); a new paragraph of
# full-width lines is prose again.
_PROSE_WIDTH = 80


def _is_prose_paragraph(lines: list[str], i: int) -> bool:
    return len(lines[i].strip()) >= _PROSE_WIDTH and _blank(lines, i - 1)


def _chapter_heading(lines: list[str], i: int, *, in_table: bool) -> tuple[str, int] | None:
    """(title, lines used) when a chapter starts at line i: a title about a right ("The
    Right to Life", "Rights of the Child"), or a title on the first line of a page ("Legal
    Education of the Population"), possibly over two lines."""
    line = lines[i]
    if not _is_title_line(line):
        return None
    about_rights = bool(_CHAPTER_TITLE.match(line.strip()))
    page_top = line.startswith(" ") and not line.startswith("  ")
    if not (about_rights or page_top):
        return None
    if in_table and not about_rights and (is_body_name(line) or not _blank(lines, i + 1)):
        return None  # an executor cell at the top of a page
    title, used = line.strip(), 1
    nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
    if (
        nxt
        and _is_title_line(nxt[0].upper() + nxt[1:])
        and (_JOINING_END.search(title) or _JOINING_START.match(nxt))
    ):
        title, used = f"{title} {nxt}", 2
    return re.sub(r"\s+", " ", title).strip(), used


def _section_heading(lines: list[str], i: int) -> bool:
    """A stand-alone title line ("The Improvement of the Status of Lawyers", "Conclusion"):
    it ends a recommendation list but does not change the chapter."""
    return _is_title_line(lines[i]) and _blank(lines, i - 1) and _blank(lines, i + 1)


# --- collected raw items --------------------------------------------------------------------


@dataclass
class _RawItem:
    chapter: str
    section: Literal["actions", "recommendations"]
    number: str
    lines: list[str] = field(default_factory=list)
    subsection: str | None = None


@dataclass
class _State:
    chapter: str = ""
    mode: Literal["prose", "table", "recs"] = "prose"
    next_row: int = 1
    current: _RawItem | None = None
    # Index in current.lines where the running paragraph began; -1 while the paragraph is
    # the one the item started with.
    paragraph_start: int = -1
    last_item_number: int = 0
    paragraph: list[str] = field(default_factory=list)
    items: list[_RawItem] = field(default_factory=list)
    # Numbered recommendation lists seen in the current chapter; the heading of the list
    # being read (a stand-alone heading before it names it too); its items' subsection.
    lists_in_chapter: int = 0
    list_heading: str | None = None
    list_started: bool = False
    pending_heading: str | None = None
    subsection: str | None = None

    def open_list(self, heading: str | None) -> None:
        self.close()
        self.mode, self.last_item_number = "recs", 0
        self.list_heading, self.pending_heading = heading or self.pending_heading, None
        self.list_started = False

    def start_item(self) -> None:
        """A list counts once it has an item ("...the following primary measures:" followed
        by unnumbered paragraphs is no list): the first keeps no subsection, later ones are
        named by their heading, or by their place when the heading is a whole paragraph."""
        if self.list_started:
            return
        self.list_started = True
        self.lists_in_chapter += 1
        heading = self.list_heading
        if self.lists_in_chapter == 1:
            self.subsection = None
        elif heading and len(heading) <= _MAX_HEADING:
            self.subsection = heading
        else:
            self.subsection = f"List {self.lists_in_chapter}"

    def close(self) -> None:
        if self.current is not None:
            self.items.append(self.current)
        self.current = None

    def open(self, item: _RawItem) -> None:
        self.close()
        self.current = item
        self.paragraph_start = -1


def _item_number(token: str, state: _State) -> int:
    if token.isdigit():
        return int(token)
    return state.last_item_number + 1  # "\ufffd. Continue ...": the lost digit is the next one


def _scan(lines: list[str]) -> list[_RawItem]:
    state = _State()
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = _chapter_heading(lines, i, in_table=state.mode == "table")
        if heading is not None:
            state.close()
            state.chapter, state.mode = heading[0], "prose"
            state.paragraph = []
            state.lists_in_chapter, state.pending_heading = 0, None
            i += heading[1]
            continue
        if _TABLE_HEADER.match(line):
            if state.mode != "table":  # a header repeated after a page break is skipped
                state.close()
                state.mode, state.next_row = "table", 1
            i += 1
            continue
        if state.mode == "table" and _is_prose_paragraph(lines, i):
            state.close()  # the table ended without a heading after it
            state.mode = "prose"
        if state.mode == "table":
            _table_line(state, line)
        else:
            _prose_line(state, lines, i)
        i += 1
    state.close()
    return state.items


def _table_line(state: _State, line: str) -> None:
    m = _ROW_START.match(line)
    if m and int(m[1]) == state.next_row:
        state.open(_RawItem(state.chapter, "actions", m[1], [m[2]]))
        state.next_row += 1
    elif state.current is not None:
        state.current.lines.append(line)


def _prose_line(state: _State, lines: list[str], i: int) -> None:
    line = lines[i]
    text = line.strip()
    if not text:
        state.paragraph = []
        if state.current is not None:
            state.current.lines.append("")
            state.paragraph_start = len(state.current.lines)
        return
    if _section_heading(lines, i):
        if state.mode == "recs":
            state.close()
            state.mode = "prose"
        state.pending_heading = text
        return
    state.paragraph.append(text)
    if state.mode == "prose":
        # A paragraph that recommends and ends in ":" opens the recommendation lists,
        # which run to the end of the chapter.
        if text.endswith(":") and _RECOMMEND.search(" ".join(state.paragraph)):
            state.open_list(None)
        return
    m = _ITEM_START.match(line)
    if m:
        number = _item_number(m[1], state)
        state.last_item_number = number
        state.start_item()
        state.open(_RawItem(state.chapter, "recommendations", str(number), [m[2]],
                            subsection=state.subsection))
        return
    if text.endswith(":") and state.paragraph_start != -1:
        # A paragraph of its own ending in ":" ("In the Field of Educational Legislation:")
        # opens the next list; it is not part of the item before it.
        if state.current is not None and state.paragraph_start > 0:
            del state.current.lines[state.paragraph_start :]
        state.open_list(_heading_text(state.paragraph))
        return
    if text.endswith(":") and _is_title_line(text[:-1]) and _next_is_first_item(lines, i):
        # The same heading at the top of a page, with no blank line after the item before.
        state.open_list(_heading_text([text]))
        return
    if state.current is not None:
        state.current.lines.append(line)


def _heading_text(paragraph: list[str]) -> str:
    return re.sub(r"\s+", " ", " ".join(paragraph)).strip().rstrip(":").strip()


def _next_is_first_item(lines: list[str], i: int) -> bool:
    for line in lines[i + 1 :]:
        if line.strip():
            m = _ITEM_START.match(line)
            return m is not None and m[1] in ("1", "\ufffd")
    return False


# --- from raw items to actions --------------------------------------------------------------


def _row_parts(lines: list[str]) -> tuple[str, str, str]:
    """(action text, deadline as written, executors as written) of one table row."""
    cells = [ln for ln in lines if not is_page_debris(ln) and not _TABLE_HEADER.match(ln)]
    for need_blank_before in (True, False):
        for j in range(1, len(cells)):
            if not cells[j].strip() or (need_blank_before and cells[j - 1].strip()):
                continue
            rest = "\n".join(c.strip() for c in cells[j:] if c.strip())
            phrase = leading_deadline(rest)
            if phrase:
                return join_pdf_lines(cells[:j]), phrase, rest[len(phrase) :].strip()
    return join_pdf_lines(cells), "", ""


# A year, also one with a digit lost in extraction ("20\ufffd2").
_YEAR = re.compile(r"(?<!\d)(?:19|20)[\d\ufffd]{2}(?!\d)")


def _actions(
    raw: list[_RawItem], plan: str, title: str, period: tuple[int, int]
) -> Iterator[PlanAction]:
    for item in raw:
        common: dict[str, Any] = {
            "plan": plan,
            "plan_title": title,
            "plan_period": period,
            "chapter": item.chapter,
            "section": item.section,
            "subsection": item.subsection,
            "number": item.number,
        }
        if item.section == "actions":
            text, deadline_text, executors_text = _row_parts(item.lines)
            yield PlanAction(
                **common,
                text=text,
                deadline=parse_deadline(deadline_text, plan_period=period),
                executors_text=join_pdf_lines(executors_text),
                executors=parse_executors(executors_text),
            )
            continue
        text = join_pdf_lines(item.lines)
        if not _YEAR.search(text):
            continue
        # A year that only dates a past event or a title is no deadline: kept, flagged.
        deadline = deadline_in_text(text) or Deadline(
            text="", start=None, due=None, needs_deadline=True
        )
        yield PlanAction(**common, text=text, deadline=deadline, executors=[])


def parse_plan(text: str) -> list[PlanAction]:
    """Every action-table row and every recommendation-list item with a year of the plan."""
    plan, title, period = _plan_identity(text)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return list(_actions(_scan(lines), plan, title, period))


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def plan_actions_json(actions: list[PlanAction]) -> list[dict[str, Any]]:
    """JSON-ready dicts, as `hrtrack plan parse` prints them."""
    return [
        {
            "plan": a.plan,
            "plan_title": a.plan_title,
            "plan_period": list(a.plan_period),
            "chapter": a.chapter,
            "section": a.section,
            "subsection": a.subsection,
            "number": a.number,
            "text": a.text,
            "deadline": {
                "text": a.deadline.text,
                "start": _iso(a.deadline.start),
                "due": _iso(a.deadline.due),
                "recurrence": a.deadline.recurrence,
                "needs_deadline": a.deadline.needs_deadline,
            },
            "executors_text": a.executors_text,
            "executors": [{"name": e.name, "role": e.role.value} for e in a.executors],
        }
        for a in actions
    ]
