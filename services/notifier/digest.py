"""Rendering of one reminder digest email: subject, plain text, HTML and an iCalendar file.

Pure: no I/O besides reading the packaged templates and message catalogues
(``templates/digest.{txt,html}.j2`` and ``templates/messages.{en,ru,kk}.json``).
Same inputs give byte-identical output, so a digest can be re-rendered on retry.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import icalendar
import jinja2

from services.notifier.policy import ReminderKind

__all__ = [
    "LANGUAGES",
    "DigestItem",
    "RenderedDigest",
    "build_email",
    "excerpt",
    "normalize_language",
    "plural_category",
    "render_digest",
]

LANGUAGES = ("en", "ru", "kk")
EXCERPT_CHARS = 240
REPORT_STATUSES = ("in_progress", "partially_implemented", "implemented", "not_implemented")
_TEMPLATE_DIR = Path(__file__).parent / "templates"
_LANGUAGE_ALIASES = {"kz": "kk", "eng": "en", "rus": "ru", "kaz": "kk"}
_KIND_ORDER = {kind: i for i, kind in enumerate(ReminderKind)}


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class RenderedDigest:
    subject: str
    text: str
    html: str
    ics: bytes
    language: str = "en"  # the language actually used (after fallback)


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
        return str(self.raw(table).get(code, code.replace("_", " ")))

    def fmt_date(self, day: date, key: str = "date_long") -> str:
        return self(
            key,
            d=day.day,
            m=f"{day.month:02d}",
            y=day.year,
            month=self.raw("months")[day.month - 1],
            month_short=self.raw("months_short")[day.month - 1],
        )

    def days(self, due: date, as_of: date) -> str:
        delta = (due - as_of).days
        if delta == 0:
            return self("due_today")
        if delta > 0:
            return self.plural("days_left", delta)
        return self.plural("days_overdue", -delta)


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


@dataclass
class _Entry:
    item: DigestItem
    kinds: list[ReminderKind] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, date]:
        return (self.item.assignment_id, self.item.due_kind, self.item.due_date)


def _merge(items: Iterable[DigestItem]) -> list[_Entry]:
    """One entry per (assignment, due kind, due date), collecting reminder kinds and flags
    (the same obligation can reach one recipient as, e.g., overdue and escalation)."""
    entries: dict[tuple[str, str, date], _Entry] = {}
    for item in items:
        key = (item.assignment_id, item.due_kind, item.due_date)
        entry = entries.setdefault(key, _Entry(item))
        if item.kind not in entry.kinds:
            entry.kinds.append(item.kind)
        entry.flags.extend(f for f in item.flags if f not in entry.flags)
    for entry in entries.values():
        entry.kinds.sort(key=lambda k: _KIND_ORDER.get(k, len(_KIND_ORDER)))
    return sorted(
        entries.values(),
        key=lambda e: (
            e.item.due_date,
            _natural_key(e.item.agency_name),
            e.item.source,
            _natural_key(e.item.reference),
            e.item.due_kind,
            e.item.assignment_id,
        ),
    )


def _entry_view(entry: _Entry, m: _Messages, as_of: date, report_base: str) -> dict[str, Any]:
    item = entry.item
    url = _report_url(report_base, item.assignment_id)
    return {
        "assignment_id": item.assignment_id,
        "recommendation_id": item.recommendation_id,
        "reference": one_line(item.reference),
        "excerpt": excerpt(item.text),
        "source": m.label("sources", item.source),
        "due_kind": m.label("due_kinds", item.due_kind),
        "due_date": m.fmt_date(item.due_date),
        "days": m.days(item.due_date, as_of),
        "overdue": item.due_date < as_of,
        "status": m.label("statuses", item.status),
        "agency": one_line(item.agency_name),
        "role": m.label("roles", item.role),
        "reminder": "; ".join(m.label("kinds", str(k)) for k in entry.kinds),
        "report_url": url,
        "report_id": m("report_id", id=item.assignment_id),
        "notes": [m.label("flags", f) for f in entry.flags],
    }


# --- templates ------------------------------------------------------------------------


@cache
def _env(html: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATE_DIR),
        autoescape=html,  # the HTML part escapes every value; the text part is plain
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _render(name: str, context: Mapping[str, Any]) -> str:
    return _env(name.endswith(".html.j2")).get_template(name).render(**context)


# --- public API -----------------------------------------------------------------------


def render_digest(
    *,
    recipient_name: str,
    language: str,
    as_of: date,
    items: list[DigestItem],
    report_url: str,
    sender_name: str = "hrtrack",
) -> RenderedDigest:
    """Render the digest of ``items`` for one recipient as of ``as_of``.

    ``report_url`` is the tracker's base URL; each item links to
    ``{report_url}/v1/assignments/{assignment_id}/reports``. Unknown languages fall back
    to English. Raises ValueError when there is nothing to send.
    """
    if not items:
        raise ValueError("a digest needs at least one item")
    lang = normalize_language(language)
    m = _Messages(lang)
    recipient, sender = one_line(recipient_name), one_line(sender_name) or "hrtrack"
    entries = _merge(items)
    overdue = sum(1 for e in entries if e.item.due_date < as_of)
    upcoming = [e.item.due_date for e in entries if e.item.due_date >= as_of]

    parts = [m("subject_overdue", n=overdue)] if overdue else []
    if upcoming:
        parts.append(m("subject_next", date=m.fmt_date(min(upcoming), "date_subject")))
    subject = m.plural("subject_head", len(entries), sender=sender, recipient=recipient)
    subject = one_line(subject + (m("subject_sep") + ", ".join(parts) if parts else ""))

    summary = m.plural("summary", len(entries))
    if overdue:
        summary += "; " + m.plural("summary_overdue", overdue)
    groups: dict[date, list[dict[str, Any]]] = {}
    for number, entry in enumerate(entries, 1):
        view = _entry_view(entry, m, as_of, report_url) | {"number": number}
        groups.setdefault(entry.item.due_date, []).append(view)
    example_url = _report_url(report_url, entries[0].item.assignment_id)
    example_body = json.dumps(
        {"status": "in_progress", "text": m("example_text")}, ensure_ascii=False
    )
    statuses = ", ".join(f"{s} ({m.label('statuses', s)})" for s in REPORT_STATUSES)
    context = {
        "lang": lang,
        "subject": subject,
        "greeting": m("greeting", recipient=recipient),
        "recipient_line": m("recipient_line", recipient=recipient),
        "intro": m("intro", sender=sender, date=m.fmt_date(as_of)),
        "summary": summary + ".",
        "groups": [
            {
                "heading": f"{m.fmt_date(day)} — {m.days(day, as_of)}",
                "overdue": day < as_of,
                "entries": views,
            }
            for day, views in groups.items()
        ],
        "labels": {
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
            )
        },
        "how_to_title": m("how_to_title"),
        "how_to_body": m(
            "how_to_body", url_pattern=f"{report_url.rstrip('/')}/v1/assignments/{{id}}/reports"
        ),
        "how_to_statuses": m("how_to_statuses", statuses=statuses),
        "how_to_stop": m("how_to_stop"),
        "example_title": m("example_title"),
        "example_command": (
            f"curl -X POST {example_url} \\\n"
            '  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\\n'
            f"  -d '{example_body}'"
        ),
        "calendar_note": m("calendar_note"),
        "footer": m("footer", sender=sender),
    }
    return RenderedDigest(
        subject=subject,
        text=_render("digest.txt.j2", context),
        html=_render("digest.html.j2", context),
        ics=_calendar(entries, m, as_of, report_url, sender),
        language=lang,
    )


def event_uid(assignment_id: str, due_kind: str, due_date: date) -> str:
    """iCalendar UID, stable per assignment, due kind and due date across digests."""
    return f"{one_line(assignment_id)}-{one_line(due_kind)}-{due_date:%Y%m%d}@hrtrack"


def _calendar(
    entries: list[_Entry], m: _Messages, as_of: date, report_base: str, sender: str
) -> bytes:
    cal = icalendar.Calendar()
    cal.add("prodid", "-//hrtrack//notifier//EN")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", m("calendar_name", sender=sender))
    # DTSTAMP from as_of keeps the file deterministic and increasing from digest to digest
    stamp = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC)
    for entry in entries:  # already one entry per (assignment, due kind, due date)
        item = entry.item
        description = "\n".join(
            [
                excerpt(item.text),
                "",
                f"{m('label_source')}: {m.label('sources', item.source)}",
                f"{m('label_agency')}: {item.agency_name} — {m.label('roles', item.role)}",
                f"{m('label_status')}: {m.label('statuses', item.status)}",
                f"{m('label_report')}: POST {_report_url(report_base, item.assignment_id)}",
            ]
        )
        event = icalendar.Event.new(
            uid=event_uid(item.assignment_id, item.due_kind, item.due_date),
            stamp=stamp,
            start=item.due_date,
            end=item.due_date + timedelta(days=1),
            summary=one_line(f"{m.label('due_kinds', item.due_kind)}: {item.reference}"),
            description=description,
            categories=["hrtrack", item.source],
            transparency=icalendar.TRANSP.TRANSPARENT,
        )
        cal.add_component(event)
    return cal.to_ical()


def _address(value: str, what: str) -> Address:
    name, addr = parseaddr(one_line(value))
    if not addr or "@" not in addr:
        raise ValueError(f"invalid {what} address: {value!r}")
    return Address(display_name=one_line(name), addr_spec=addr)


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
    """multipart/mixed: multipart/alternative (text, html) + the .ics attachment.

    ``sender`` and ``recipient`` are addresses, optionally with a display name
    ("Ministry of Justice <moj@example.kz>"). The Message-ID is in ``msg["Message-ID"]``:
    ``message_id`` when given (a stable id lets a re-sent digest be recognised as the same
    message), otherwise a fresh one.
    """
    msg = EmailMessage()
    msg["From"] = _address(sender, "sender")
    msg["To"] = _address(recipient, "recipient")
    msg["Subject"] = one_line(digest.subject)  # CR/LF can never start a new header
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = one_line(message_id) if message_id else make_msgid(
        domain=one_line(message_id_domain).replace(" ", ""))
    msg["X-Hrtrack-As-Of"] = as_of.isoformat()
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    msg.set_content(digest.text, charset="utf-8")
    msg.add_alternative(digest.html, subtype="html", charset="utf-8")
    msg.add_attachment(
        digest.ics,
        maintype="text",
        subtype="calendar",
        params={"method": "PUBLISH", "charset": "utf-8"},
        filename=f"hrtrack-{as_of:%Y-%m-%d}.ics",
    )
    msg["Content-Language"] = normalize_language(digest.language)  # after set_content
    return msg
