"""Rendering of one reminder digest email: subject, plain text, HTML and an iCalendar file.

Pure: no I/O besides reading the packaged templates and message catalogues
(``templates/digest.{txt,html}.j2`` and ``templates/messages.{en,ru,kk}.json``).
Same inputs give byte-identical parts, so a digest can be re-rendered on retry.

Streaming: ``prepare_digest`` computes what a digest shows once, and ``digest_message``
produces the whole email (RFC 5322, CRLF line endings, as sent in SMTP DATA) piece by piece,
so a digest of tens of thousands of items (the coordinators' escalations over a large book)
never has to be held in memory as text, HTML, calendar and message at once.
``PreparedDigest.render`` and ``build_email`` give the same parts and message whole.

Capped: with ``max_items`` a digest lists only that many items in full (the most urgent)
and counts the others in a summary (by agency, by due date and reminder kind) that says
where they all are (the notifier's ledger), so its size no longer grows with the number of
reminders.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hashlib
import itertools
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from functools import cache, lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import jinja2

from services.notifier.policy import ReminderKind

__all__ = [
    "LANGUAGES",
    "DigestItem",
    "Envelope",
    "PreparedDigest",
    "RenderedDigest",
    "build_email",
    "digest_message",
    "excerpt",
    "ledger_url",
    "normalize_language",
    "plural_category",
    "prepare_digest",
]

LANGUAGES = ("en", "ru", "kk")
EXCERPT_CHARS = 240
REPORT_STATUSES = ("in_progress", "partially_implemented", "implemented", "not_implemented")
_TEMPLATE_DIR = Path(__file__).parent / "templates"
_LANGUAGE_ALIASES = {"kz": "kk", "eng": "en", "rus": "ru", "kaz": "kk"}
_KIND_ORDER = {kind: i for i, kind in enumerate(ReminderKind)}


@dataclass(frozen=True, slots=True)  # slots: a coordinators' digest may hold 10^4-10^5
class DigestItem:
    assignment_id: str
    recommendation_id: str
    source: str  # "upr" | "treaty_body" | "plan"
    reference: str  # human label, e.g. "CAT/C/KAZ/CO/3 para 15"
    text: str  # full text; the mail shows an excerpt
    due_kind: str  # "deadline" | "report" | "follow_up" | "mid_term" | "next_review"
    due_date: date
    status: str
    kind: ReminderKind
    agency_name: str
    role: str  # lead | co | partner
    flags: tuple[str, ...] = ()  # e.g. ("no_contact",)
    agency_id: str = ""  # shown with the agency in a capped digest's summary (ledger filter)


@dataclass(frozen=True)
class RenderedDigest:
    subject: str
    text: str
    html: str
    ics: bytes
    language: str = "en"  # the language actually used (after fallback)

    # The parts as PreparedDigest gives them, so digest_message takes either.
    def text_chunks(self) -> Iterable[str]:
        return (self.text,)

    def html_chunks(self) -> Iterable[str]:
        return (self.html,)

    def ics_chunks(self) -> Iterable[bytes]:
        return (self.ics,)


# --- language helpers -----------------------------------------------------------------


def normalize_language(language: str | None) -> str:
    """Map "ru-RU" -> "ru", "KZ" -> "kk"; anything unsupported -> "en"."""
    primary = re.split(r"[-_]", (language or "").strip().lower(), maxsplit=1)[0]
    primary = _LANGUAGE_ALIASES.get(primary, primary)
    return primary if primary in LANGUAGES else "en"


def plural_category(n: int, language: str) -> str:
    """CLDR plural category for cardinal ``n`` (en: one/other, ru: one/few/many, kk: other;
    Kazakh nouns stay singular after numerals)."""
    n = abs(n)
    if language == "ru":
        if n % 10 == 1 and n % 100 != 11:
            return "one"
        if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
            return "few"
        return "many"
    if language == "kk":
        return "other"
    return "one" if n == 1 else "other"


@cache
def _catalogue(language: str) -> Mapping[str, Any]:
    path = _TEMPLATE_DIR / f"messages.{language}.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


class _Messages:
    """Lookups in one language's catalogue; falls back to English for missing keys."""

    def __init__(self, language: str) -> None:
        self.language = language
        self._cat = _catalogue(language)
        self._en = _catalogue("en")
        # A digest asks for the same few labels and dates once per item.
        self._labels: dict[tuple[str, str], str] = {}
        self._dates: dict[tuple[date, str], str] = {}
        self._days: dict[tuple[date, date], str] = {}

    def raw(self, key: str) -> Any:
        return self._cat[key] if key in self._cat else self._en[key]

    def __call__(self, key: str, **values: object) -> str:
        return str(self.raw(key)).format(**values)

    def plural(self, key: str, n: int, **values: object) -> str:
        forms: Mapping[str, str] = self.raw(key)
        form = forms.get(plural_category(n, self.language)) or forms.get("other") or forms["many"]
        return form.format(n=n, **values)

    def label(self, table: str, code: str) -> str:
        """Translated label of a code (status, role, ...); the code itself if unknown."""
        found = self._labels.get((table, code))
        if found is None:
            found = self._labels[(table, code)] = str(
                self.raw(table).get(code, code.replace("_", " ")))
        return found

    def fmt_date(self, day: date, key: str = "date_long") -> str:
        found = self._dates.get((day, key))
        if found is None:
            found = self._dates[(day, key)] = self(
                key,
                d=day.day,
                m=f"{day.month:02d}",
                y=day.year,
                month=self.raw("months")[day.month - 1],
                month_short=self.raw("months_short")[day.month - 1],
            )
        return found

    def days(self, due: date, as_of: date) -> str:
        found = self._days.get((due, as_of))
        if found is None:
            delta = (due - as_of).days
            found = self._days[(due, as_of)] = (
                self("due_today") if delta == 0
                else self.plural("days_left", delta) if delta > 0
                else self.plural("days_overdue", -delta))
        return found


# --- text helpers ---------------------------------------------------------------------


def one_line(value: str) -> str:
    """Collapse all whitespace and control characters (CR, LF, U+2028, ...) to single
    spaces, so the value can never span or split a header line."""
    if value.isprintable():  # the usual case: no control or format characters at all
        return " ".join(value.split())
    cleaned = "".join(
        " " if cat in ("Cc", "Zl", "Zp") else "" if cat == "Cf" else ch
        for ch, cat in ((ch, unicodedata.category(ch)) for ch in value)
    )
    return " ".join(cleaned.split())


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """Whitespace-normalised text, cut at a word boundary to at most ``limit`` characters
    plus an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    head = flat[: limit + 1]  # one more char tells whether the cut falls on a space
    space = head.rfind(" ")
    head = head[:space] if space > limit // 2 else flat[:limit]  # no sane boundary: hard cut
    return head.rstrip(" ,;:.-–—") + "…"


@lru_cache(maxsize=4096)  # agency names recur item after item
def _natural_key(value: str) -> tuple[tuple[int, int | str], ...]:
    """Sort "No. 3" before "No. 10"."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.casefold())
        for part in re.split(r"(\d+)", value)
        if part
    )


def _report_url(base: str, assignment_id: str) -> str:
    return f"{base.rstrip('/')}/v1/assignments/{quote(assignment_id, safe='')}/reports"


# --- view model -----------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    item: DigestItem
    kinds: list[ReminderKind] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    short: str = ""  # the text's excerpt, made once for the text, HTML and calendar parts


_ESCALATIONS = frozenset({ReminderKind.ESCALATION_AGENCY, ReminderKind.ESCALATION_COORDINATOR})


def urgency(kinds: Iterable[ReminderKind], due_date: date, as_of: date) -> int:
    """0: escalated, 1: overdue, 2: coming up. A digest lists the most urgent first, and a
    capped one lists only the most urgent."""
    if not _ESCALATIONS.isdisjoint(kinds):
        return 0
    return 1 if due_date < as_of else 2


def _merge(items: Iterable[DigestItem], as_of: date) -> list[_Entry]:
    """One entry per (assignment, due kind, due date), collecting reminder kinds and flags
    (the same obligation can reach one recipient as, e.g., overdue and escalation), most
    urgent first: escalations, then overdue, then upcoming, each by due date."""
    entries: dict[tuple[str, str, date], _Entry] = {}
    for item in items:
        key = (item.assignment_id, item.due_kind, item.due_date)
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = _Entry(item)
        if item.kind not in entry.kinds:
            entry.kinds.append(item.kind)
        entry.flags.extend(f for f in item.flags if f not in entry.flags)
    for entry in entries.values():
        entry.kinds.sort(key=lambda k: _KIND_ORDER.get(k, len(_KIND_ORDER)))
    return sorted(
        entries.values(),
        key=lambda e: (
            urgency(e.kinds, e.item.due_date, as_of),
            e.item.due_date,
            _natural_key(e.item.agency_name),
            e.item.source,
            _natural_key(e.item.reference),
            e.item.due_kind,
            e.item.assignment_id,
        ),
    )


# What the templates see. Plain attributes (slots): Jinja looks an attribute up before an
# item, and a failed attribute look-up per field was a good part of the rendering time.


@dataclass(slots=True)
class _EntryView:
    number: int
    assignment_id: str
    recommendation_id: str
    reference: str
    excerpt: str
    source: str
    due_kind: str
    due_date: str
    days: str
    overdue: bool
    status: str
    agency: str
    role: str
    reminder: str
    report_url: str
    report_id: str
    notes: list[str]


@dataclass(slots=True)
class _GroupView:
    heading: str
    overdue: bool
    entries: Iterable[_EntryView]


def _entry_view(entry: _Entry, m: _Messages, as_of: date, report_base: str,
                number: int) -> _EntryView:
    item = entry.item
    return _EntryView(
        number=number,
        assignment_id=item.assignment_id,
        recommendation_id=item.recommendation_id,
        reference=one_line(item.reference),
        excerpt=entry.short,
        source=m.label("sources", item.source),
        due_kind=m.label("due_kinds", item.due_kind),
        due_date=m.fmt_date(item.due_date),
        days=m.days(item.due_date, as_of),
        overdue=item.due_date < as_of,
        status=m.label("statuses", item.status),
        agency=one_line(item.agency_name),
        role=m.label("roles", item.role),
        reminder="; ".join(m.label("kinds", str(k)) for k in entry.kinds),
        report_url=_report_url(report_base, item.assignment_id),
        report_id=m("report_id", id=item.assignment_id),
        notes=[m.label("flags", f) for f in entry.flags],
    )


class _Groups:
    """The digest's items grouped by due date, as the templates iterate them. The text and
    the HTML part each iterate once: the views are made once and kept for both, except in
    a very large digest, where they are made while a template renders, one at a time."""

    KEEP_VIEWS = 5000  # entries

    def __init__(self, entries: list[_Entry], m: _Messages, as_of: date,
                 report_base: str) -> None:
        self.entries, self.m, self.as_of, self.report_base = entries, m, as_of, report_base
        self._kept: list[_GroupView] | None = None
        if len(entries) <= self.KEEP_VIEWS:
            self._kept = [_GroupView(g.heading, g.overdue, list(g.entries))
                          for g in self._views()]

    def __iter__(self) -> Iterator[_GroupView]:
        return iter(self._kept) if self._kept is not None else self._views()

    def _views(self) -> Iterator[_GroupView]:
        numbers = itertools.count(1)
        m, as_of = self.m, self.as_of
        for day, group in itertools.groupby(self.entries, key=lambda e: e.item.due_date):
            yield _GroupView(
                heading=f"{m.fmt_date(day)} — {m.days(day, as_of)}",
                overdue=day < as_of,
                entries=(_entry_view(entry, m, as_of, self.report_base, next(numbers))
                         for entry in group),
            )


# --- the summary of what a capped digest does not list -----------------------------------

SUMMARY_ROWS = 100  # rows per summary table at most; the rest add up in one last row
LEDGER_LIMIT = 5000  # the most entries GET /v1/reminders gives per request


@dataclass(slots=True)
class _CountRow:
    label: str  # the agency, or the due date with the days left/overdue
    detail: str  # the agency's id, or the reminder kind
    items: int = 0
    overdue: int = 0


@dataclass(slots=True)
class _Summary:
    """The items a capped digest does not list, as counts: per agency and per due date
    and reminder kind (the most severe of an item's), most urgent first. Each table's
    counts add up to ``total``."""

    note: str  # under the digest's first summary line: how many are listed, how many not
    title: str
    overdue_line: str
    where: str
    ledger: str  # GET {ledger URL}: a line of its own, never wrapped
    where_note: str
    agencies: list[_CountRow]
    dates: list[_CountRow]
    width_items: int  # of the plain-text tables' count columns
    width_overdue: int


def _capped(rows: list[_CountRow], other: Callable[[int], str]) -> list[_CountRow]:
    """At most SUMMARY_ROWS rows: beyond, the last row adds up all the others."""
    if len(rows) <= SUMMARY_ROWS:
        return rows
    kept, rest = rows[:SUMMARY_ROWS - 1], rows[SUMMARY_ROWS - 1:]
    return [*kept, _CountRow(other(len(rest)), "", sum(r.items for r in rest),
                             sum(r.overdue for r in rest))]


def _summary(entries: list[_Entry], m: _Messages, as_of: date, ledger_url: str, *,
             listed: int) -> _Summary:
    agencies: dict[tuple[str, str], _CountRow] = {}
    dates: dict[tuple[int, date, int], _CountRow] = {}
    overdue = 0
    for entry in entries:
        item = entry.item
        is_overdue = item.due_date < as_of
        overdue += is_overdue
        name = one_line(item.agency_name)
        row = agencies.get((item.agency_id, name))
        if row is None:
            row = agencies[(item.agency_id, name)] = _CountRow(name, one_line(item.agency_id))
        row.items += 1
        row.overdue += is_overdue
        kind = entry.kinds[-1]  # the most severe (kinds are in ReminderKind's order)
        order = _KIND_ORDER.get(kind, len(_KIND_ORDER))
        key = (urgency(entry.kinds, item.due_date, as_of), item.due_date, -order)
        row = dates.get(key)
        if row is None:
            row = dates[key] = _CountRow(
                f"{m.fmt_date(item.due_date)} ({m.days(item.due_date, as_of)})",
                m.label("kinds", str(kind)))
        row.items += 1
        row.overdue += is_overdue
    by_agency = sorted(agencies.values(), key=lambda r: (-r.items, _natural_key(r.label),
                                                         r.detail))
    by_date = [dates[key] for key in sorted(dates)]
    total = len(entries)
    return _Summary(
        note=m("rest_note", listed=listed, rest=total) + ".",
        title=m.plural("rest_title", total),
        overdue_line=m.plural("summary_overdue", overdue) if overdue else "",
        where=m("rest_where"),
        ledger=f"GET {ledger_url}",
        where_note=m("rest_where_note", limit=LEDGER_LIMIT),
        agencies=_capped(by_agency, lambda n: m("rest_other_agencies", n=n)),
        dates=_capped(by_date, lambda n: m("rest_other_dates", n=n)),
        width_items=max(len(m("col_items")), len(str(total))),
        width_overdue=max(len(m("col_overdue")), len(str(total))))


def ledger_url(base: str | None, recipient: str, as_of: date) -> str:
    """Where a digest's reminders are, every one of them: this notifier's ledger filtered
    to the recipient and the day (``base``: the notifier's public address; none gives the
    path alone)."""
    query = f"recipient={quote(one_line(recipient), safe='@')}&as_of={as_of.isoformat()}"
    return f"{(base or '').strip().rstrip('/')}/v1/reminders?{query}&limit={LEDGER_LIMIT}"


# --- templates ------------------------------------------------------------------------


@cache
def _template(name: str) -> jinja2.Template:
    """Compiled once per process."""
    return _env(name.endswith(".html.j2")).get_template(name)


@cache
def _env(html: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATE_DIR),
        autoescape=html,  # the HTML part escapes every value; the text part is plain
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["wordwrap"] = wordwrap
    return env


@jinja2.pass_environment
def wordwrap(environment: jinja2.Environment, s: str, width: int = 79,
             break_long_words: bool = True, wrapstring: str | None = None,
             break_on_hyphens: bool = True) -> str:
    """Jinja's ``wordwrap``, the same output, faster for what a digest wraps (an excerpt:
    words and single spaces): without hyphens, other whitespace or a word longer than
    the line, textwrap's fill is the greedy one below. Anything else goes to Jinja's."""
    words = s.split(" ")
    if ("-" in s or not s.isprintable() or "" in words
            or max(map(len, words)) > width):
        return jinja2.filters.do_wordwrap(environment, s, width, break_long_words,
                                          wrapstring, break_on_hyphens)
    lines, current = [], words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return (environment.newline_sequence if wrapstring is None else wrapstring).join(lines)


# --- public API -----------------------------------------------------------------------


class PreparedDigest:
    """What one digest shows, computed once (items merged and ordered, subject, the
    template context); its parts come piece by piece from ``text_chunks``, ``html_chunks``
    and ``ics_chunks``."""

    def __init__(self, *, recipient_name: str, language: str, as_of: date,
                 items: Iterable[DigestItem], report_url: str,
                 sender_name: str = "hrtrack", max_items: int | None = None,
                 ledger_url: str | None = None) -> None:
        entries = _merge(items, as_of)
        if not entries:
            raise ValueError("a digest needs at least one item")
        if max_items is not None and max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.language = lang = normalize_language(language)
        self.as_of, self.report_url = as_of, report_url
        # Listed in full (and in the calendar): the most urgent, up to max_items; the rest
        # only as counts, so a digest stays a size any mail server takes.
        cut = len(entries) if max_items is None else max_items
        self.entries, rest = entries[:cut], entries[cut:]
        for entry in self.entries:
            entry.short = excerpt(entry.item.text)
        self.m = m = _Messages(lang)
        recipient, sender = one_line(recipient_name), one_line(sender_name) or "hrtrack"
        self.sender = sender
        overdue = sum(1 for e in entries if e.item.due_date < as_of)
        upcoming = [e.item.due_date for e in entries if e.item.due_date >= as_of]

        parts = [m("subject_overdue", n=overdue)] if overdue else []
        if upcoming:
            parts.append(m("subject_next", date=m.fmt_date(min(upcoming), "date_subject")))
        subject = m.plural("subject_head", len(entries), sender=sender, recipient=recipient)
        self.subject = one_line(subject + (m("subject_sep") + ", ".join(parts) if parts
                                           else ""))

        summary = m.plural("summary", len(entries))
        if overdue:
            summary += "; " + m.plural("summary_overdue", overdue)
        example_url = _report_url(report_url, entries[0].item.assignment_id)
        example_body = json.dumps(
            {"status": "in_progress", "text": m("example_text")}, ensure_ascii=False
        )
        statuses = ", ".join(f"{s} ({m.label('statuses', s)})" for s in REPORT_STATUSES)
        self.summary: _Summary | None = None
        if rest:
            where = ledger_url or f"/v1/reminders?as_of={as_of}&limit={LEDGER_LIMIT}"
            self.summary = _summary(rest, m, as_of, where,
                                    listed=len(self.entries))
        del rest
        self.context = {
            "lang": lang,
            "subject": self.subject,
            "greeting": m("greeting", recipient=recipient),
            "recipient_line": m("recipient_line", recipient=recipient),
            "intro": m("intro", sender=sender, date=m.fmt_date(as_of)),
            "summary": summary + ".",
            "groups": _Groups(self.entries, m, as_of, report_url),
            "rest": self.summary,
            "labels": SimpleNamespace(**{
                k: m(k)
                for k in (
                    "label_source",
                    "label_due_kind",
                    "label_due",
                    "label_status",
                    "label_agency",
                    "label_reminder",
                    "label_report",
                    "label_note",
                    "rest_by_agency",
                    "rest_by_date",
                    "col_items",
                    "col_overdue",
                    "col_agency",
                    "col_due",
                    "col_reminder",
                )
            }),
            "how_to_title": m("how_to_title"),
            "how_to_body": m(
                "how_to_body",
                url_pattern=f"{report_url.rstrip('/')}/v1/assignments/{{id}}/reports",
            ),
            "how_to_statuses": m("how_to_statuses", statuses=statuses),
            "how_to_stop": m("how_to_stop"),
            "example_title": m("example_title"),
            "example_command": (
                f"curl -X POST {example_url} \\\n"
                '  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\\n'
                f"  -d '{example_body}'"
            ),
            "calendar_note": m("calendar_note_capped" if self.summary else "calendar_note"),
            "footer": m("footer", sender=sender),
        }

    def text_chunks(self) -> Iterator[str]:
        return _template("digest.txt.j2").generate(self.context)

    def html_chunks(self) -> Iterator[str]:
        return _template("digest.html.j2").generate(self.context)

    def ics_chunks(self) -> Iterator[bytes]:
        return _calendar(self.entries, self.m, self.as_of, self.report_url, self.sender)

    def render(self) -> RenderedDigest:
        """The parts whole (``digest_message`` streams them instead)."""
        return RenderedDigest(subject=self.subject, text="".join(self.text_chunks()),
                              html="".join(self.html_chunks()),
                              ics=b"".join(self.ics_chunks()), language=self.language)


def prepare_digest(
    *,
    recipient_name: str,
    language: str,
    as_of: date,
    items: Iterable[DigestItem],
    report_url: str,
    sender_name: str = "hrtrack",
    max_items: int | None = None,
    ledger_url: str | None = None,
) -> PreparedDigest:
    """The digest of ``items`` for one recipient as of ``as_of``, ready to be streamed.

    ``report_url`` is the tracker's base URL; each item links to
    ``{report_url}/v1/assignments/{assignment_id}/reports``. Unknown languages fall back
    to English. Raises ValueError when there is nothing to send.

    ``max_items``: at most this many items are listed in full (and in the calendar), the
    most urgent first; the others are summarised as counts by agency and by due date and
    reminder kind, with ``ledger_url`` (see ``ledger_url()``) saying where they all are.
    """
    return PreparedDigest(recipient_name=recipient_name, language=language, as_of=as_of,
                          items=items, report_url=report_url, sender_name=sender_name,
                          max_items=max_items, ledger_url=ledger_url)


# --- the calendar (RFC 5545, written directly: a library's object model per event cost
# more than all the rest of a digest) -------------------------------------------------

_ICS_ESCAPES = str.maketrans({"\\": "\\\\", ";": "\\;", ",": "\\,"})


def _ics_text(value: str) -> str:
    """A TEXT value: one line (no CR/LF or other line breaks can end the property), with
    backslash, semicolon and comma escaped."""
    return one_line(value).translate(_ICS_ESCAPES)


def _ics_line(name: str, value: str) -> bytes:
    """One content line, folded at 75 octets without splitting a UTF-8 sequence."""
    line = f"{name}:{value}".encode()
    if len(line) <= 75:
        return line + b"\r\n"
    pieces = []
    start, limit = 0, 75
    while len(line) - start > limit:
        cut = start + limit
        while line[cut] & 0xC0 == 0x80:  # a continuation byte: cut before its sequence
            cut -= 1
        pieces.append(line[start:cut])
        start, limit = cut, 74  # continuation lines start with a space
    pieces.append(line[start:])
    return b"\r\n ".join(pieces) + b"\r\n"


def event_uid(assignment_id: str, due_kind: str, due_date: date) -> str:
    """iCalendar UID, stable per assignment, due kind and due date across digests."""
    return f"{one_line(assignment_id)}-{one_line(due_kind)}-{due_date:%Y%m%d}@hrtrack"


def _calendar(
    entries: list[_Entry], m: _Messages, as_of: date, report_base: str, sender: str
) -> Iterator[bytes]:
    yield (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hrtrack//notifier//EN\r\n"
           b"METHOD:PUBLISH\r\n" + _ics_line("X-WR-CALNAME",
                                              _ics_text(m("calendar_name", sender=sender))))
    # DTSTAMP from as_of keeps the file deterministic and increasing from digest to digest
    stamp = f"DTSTAMP:{as_of:%Y%m%d}T000000Z\r\n".encode()
    source, agency, status, report = (_ics_text(m(k)) for k in (
        "label_source", "label_agency", "label_status", "label_report"))
    # The same few sources, roles, statuses, agencies and days recur item after item.
    texts: dict[str, str] = {}
    days: dict[date, bytes] = {}

    def text(value: str) -> str:
        found = texts.get(value)
        if found is None:
            found = texts[value] = _ics_text(value)
        return found

    for entry in entries:  # already one entry per (assignment, due kind, due date)
        item = entry.item
        dates = days.get(item.due_date)
        if dates is None:
            end = date.fromordinal(item.due_date.toordinal() + 1)
            dates = days[item.due_date] = (f"DTSTART;VALUE=DATE:{item.due_date:%Y%m%d}\r\n"
                                           f"DTEND;VALUE=DATE:{end:%Y%m%d}\r\n").encode()
        description = "\\n".join(
            [
                _ics_text(entry.short),
                "",
                f"{source}: {text(m.label('sources', item.source))}",
                f"{agency}: {text(item.agency_name)} — {text(m.label('roles', item.role))}",
                f"{status}: {text(m.label('statuses', item.status))}",
                f"{report}: POST "
                f"{_ics_text(_report_url(report_base, item.assignment_id))}",
            ]
        )
        yield b"".join((
            b"BEGIN:VEVENT\r\n",
            _ics_line("UID", _ics_text(event_uid(item.assignment_id, item.due_kind,
                                                 item.due_date))),
            stamp,
            dates,
            _ics_line("SUMMARY", _ics_text(
                f"{m.label('due_kinds', item.due_kind)}: {item.reference}")),
            _ics_line("DESCRIPTION", description),
            _ics_line("CATEGORIES", f"hrtrack,{text(item.source)}"),
            b"TRANSP:TRANSPARENT\r\nEND:VEVENT\r\n",
        ))
    yield b"END:VCALENDAR\r\n"


# --- the email message ----------------------------------------------------------------

_SMTP = email.policy.SMTP  # CRLF line endings, RFC 2047 for anything not ASCII
_B64_BLOCK = 57 * 1024  # bytes encoded at a time: whole 76-character lines


@dataclass(frozen=True)
class Envelope:
    """Who a message goes from and to (SMTP MAIL FROM / RCPT TO), and its Message-ID."""

    sender: str
    recipients: tuple[str, ...]
    message_id: str


def _address(value: str, what: str) -> Address:
    name, addr = parseaddr(one_line(value))
    if not addr or "@" not in addr:
        raise ValueError(f"invalid {what} address: {value!r}")
    return Address(display_name=one_line(name), addr_spec=addr)


def _header(name: str, value: str) -> bytes:
    """One header field; ``value`` is one line already. Short ASCII values as they are;
    long ones folded by the email package; anything not ASCII as RFC 2047 encoded words
    over the whole value (the email package's folder drops the space between two encoded
    words it makes, e.g. "3 срока, просрочено" came back as "3 срока,просрочено")."""
    line = f"{name}: {value}"
    if line.isascii():
        if len(line) <= 78:
            return line.encode("ascii") + b"\r\n"
        return _SMTP.header_factory(name, value).fold(policy=_SMTP).encode("ascii")
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n".encode("ascii")


def _address_header(name: str, address: Address) -> bytes:
    value = str(address)
    if value.isascii():
        return _header(name, value)
    if not address.addr_spec.isascii():  # SMTPUTF8 addresses: the email package's way
        return _SMTP.header_factory(name, value).fold(policy=_SMTP).encode("ascii")
    # A display name as one encoded word on its own line: split over several, Python's
    # address parser (unlike RFC 2047 readers) puts a space where they were split.
    word = f"=?utf-8?b?{base64.b64encode(address.display_name.encode()).decode()}?="
    if len(word) > 900:  # a line may hold 998
        word = Header(address.display_name, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {word}\r\n <{address.addr_spec}>\r\n".encode("ascii")


def _base64(chunks: Iterable[str | bytes]) -> Iterator[bytes]:
    """UTF-8 then base64 in 76-character lines ending in CRLF, a block at a time. A template
    yields hundreds of small strings per item: they are taken and joined in batches."""
    pieces = iter(chunks)
    buffer = bytearray()
    while batch := list(itertools.islice(pieces, 512)):
        buffer += _joined(batch)
        if len(buffer) >= _B64_BLOCK:
            whole = len(buffer) - len(buffer) % 57
            yield _base64_lines(buffer[:whole])
            del buffer[:whole]
    if buffer:
        yield _base64_lines(buffer)


def _base64_lines(data: bytes | bytearray) -> bytes:
    encoded = binascii.b2a_base64(data, newline=False)
    return b"\r\n".join([encoded[i:i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


def _joined(pieces: list[Any]) -> bytes:
    if not pieces:
        return b""
    return "".join(pieces).encode() if isinstance(pieces[0], str) else b"".join(pieces)


def _part(boundary: bytes, headers: bytes, chunks: Iterable[str | bytes]) -> Iterator[bytes]:
    yield b"--" + boundary + b"\r\n" + headers + b"Content-Transfer-Encoding: base64\r\n\r\n"
    yield from _base64(chunks)


def digest_message(
    *,
    digest: PreparedDigest | RenderedDigest,
    sender: str,
    recipient: str,
    as_of: date,
    message_id_domain: str = "hrtrack.local",
    now: datetime | None = None,
    message_id: str | None = None,
) -> tuple[Envelope, Iterator[bytes]]:
    """The digest as an email: its envelope, and the message itself as a stream of bytes
    (CRLF line endings, every part base64, so no line starts with a dot or runs long).

    multipart/mixed: multipart/alternative (text, html) + the .ics attachment.
    ``sender`` and ``recipient`` are addresses, optionally with a display name
    ("Ministry of Justice <moj@example.kz>"); a malformed one raises ValueError here,
    before anything is produced. ``message_id`` when given (a stable id lets a re-sent
    digest be recognised as the same message), otherwise a fresh one.
    """
    from_, to = _address(sender, "sender"), _address(recipient, "recipient")
    mid = one_line(message_id) if message_id else make_msgid(
        domain=one_line(message_id_domain).replace(" ", ""))
    # Boundaries from the Message-ID: the same digest gives the same bytes. Base64 lines
    # (the only content) never contain "-" or "_", so they cannot collide.
    token = hashlib.blake2b(mid.encode(), digest_size=12).hexdigest()
    mixed, alternative = f"=_hrtrack_{token}_m".encode(), f"=_hrtrack_{token}_a".encode()
    headers = b"".join((
        _address_header("From", from_),
        _address_header("To", to),
        _header("Subject", one_line(digest.subject)),  # CR/LF can never start a header
        _header("Date", format_datetime(now or datetime.now(UTC))),
        _header("Message-ID", mid),
        _header("X-Hrtrack-As-Of", as_of.isoformat()),
        _header("Auto-Submitted", "auto-generated"),  # RFC 3834: no auto-replies
        b"MIME-Version: 1.0\r\n",
        b'Content-Type: multipart/mixed;\r\n boundary="' + mixed + b'"\r\n',
        _header("Content-Language", normalize_language(digest.language)),
        b"\r\n",
    ))
    filename = f"hrtrack-{as_of:%Y-%m-%d}.ics"

    def stream() -> Iterator[bytes]:
        yield headers
        yield (b"--" + mixed + b'\r\nContent-Type: multipart/alternative;\r\n boundary="'
               + alternative + b'"\r\n\r\n')
        text_type = b'Content-Type: text/plain; charset="utf-8"\r\n'
        yield from _part(alternative, text_type, digest.text_chunks())
        html_type = b'Content-Type: text/html; charset="utf-8"\r\n'
        yield from _part(alternative, html_type, digest.html_chunks())
        yield b"--" + alternative + b"--\r\n\r\n"
        calendar_type = (b'Content-Type: text/calendar; method="PUBLISH"; charset="utf-8"\r\n'
                         b'Content-Disposition: attachment; filename="'
                         + filename.encode() + b'"\r\n')
        yield from _part(mixed, calendar_type, digest.ics_chunks())
        yield b"--" + mixed + b"--\r\n"

    return Envelope(from_.addr_spec, (to.addr_spec,), mid), stream()


def build_email(
    *,
    digest: RenderedDigest,
    sender: str,
    recipient: str,
    as_of: date,
    message_id_domain: str = "hrtrack.local",
    now: datetime | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """The message of ``digest_message`` whole, as an EmailMessage (its Message-ID in
    ``msg["Message-ID"]``)."""
    _envelope, chunks = digest_message(digest=digest, sender=sender, recipient=recipient,
                                       as_of=as_of, message_id_domain=message_id_domain,
                                       now=now, message_id=message_id)
    msg = email.message_from_bytes(b"".join(chunks), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg
