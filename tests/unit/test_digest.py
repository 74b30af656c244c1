"""Unit tests for services.notifier.digest (digest rendering and the email message)."""

from __future__ import annotations

import email
import email.policy
import json
import random
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path

import icalendar
import jinja2
import jinja2.filters
import pytest
from pydantic import ValidationError

from services.notifier.digest import (
    DigestItem,
    Envelope,
    RenderedDigest,
    build_email,
    digest_message,
    event_uid,
    excerpt,
    ledger_url,
    normalize_language,
    plural_category,
    prepare_digest,
    wordwrap,
)
from services.notifier.policy import ReminderKind
from services.notifier.settings import NotifierSettings

K = ReminderKind
AS_OF = date(2009, 12, 1)
REPORT_URL = "http://tracker.test:8002/"
LONG_TEXT = (
    "Ensure that every person deprived of liberty is afforded, in law and in practice, all "
    "fundamental legal safeguards from the very outset of deprivation of liberty, including "
    "the right to have prompt access to a lawyer and to an independent medical examination, "
    "and to notify a relative of their choice."
)


def make_item(**overrides: object) -> DigestItem:
    base = DigestItem(
        assignment_id="asg-1",
        recommendation_id="rec-1",
        source="plan",
        reference="NHRAP-2009-2012 / The Right to Privacy / No. 3",
        text="Adopt a law on the protection of personal data.",
        due_kind="deadline",
        due_date=date(2009, 12, 31),
        status="in_progress",
        kind=K.UPCOMING,
        agency_name="Ministry of Justice",
        role="lead",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def items() -> list[DigestItem]:
    return [
        make_item(),  # due in 30 days
        make_item(
            assignment_id="asg-2",
            recommendation_id="rec-2",
            source="treaty_body",
            reference="CAT/C/KAZ/CO/3 para 15",
            text=LONG_TEXT,
            due_kind="follow_up",
            due_date=date(2009, 11, 20),  # 11 days overdue
            status="not_started",
            kind=K.OVERDUE,
            role="co",
        ),
        make_item(
            assignment_id="asg-3",
            recommendation_id="rec-3",
            source="upr",
            reference="KAZ / cycle 1 / 97.12",
            text="Consider ratifying the Optional Protocol to the Convention against Torture.",
            due_kind="report",
            due_date=date(2009, 12, 8),  # 7 days left
            status="partially_implemented",
        ),
    ]


def render(items: list[DigestItem], language: str = "en", **kw: object) -> RenderedDigest:
    args: dict[str, object] = {
        "recipient_name": "Ministry of Justice",
        "language": language,
        "as_of": AS_OF,
        "items": items,
        "report_url": REPORT_URL,
    }
    args.update(kw)
    return prepare_digest(**args).render()  # type: ignore[arg-type]


def parse(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def calendar_part(msg: EmailMessage) -> EmailMessage:
    parts = [p for p in msg.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 1
    return parts[0]


# --- languages ------------------------------------------------------------------------


def test_english_subject_is_informative(items: list[DigestItem]) -> None:
    digest = render(items)
    assert digest.subject == (
        "hrtrack: 3 deadlines for Ministry of Justice — 1 overdue, next due 8 Dec 2009"
    )
    assert digest.language == "en"


def test_subject_without_overdue_and_all_overdue(items: list[DigestItem]) -> None:
    assert render([items[0]]).subject == (
        "hrtrack: 1 deadline for Ministry of Justice — next due 31 Dec 2009"
    )
    assert render([items[1]], sender_name="NHRC").subject == (
        "NHRC: 1 deadline for Ministry of Justice — 1 overdue"
    )


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("en", ["Due date", "days overdue", "7 days left", "lead executor", "co-executor",
                "quarterly progress report", "partially implemented", "How to report"]),
        ("ru", ["Срок", "просрочено на 11 дней", "осталось 7 дней", "осталось 30 дней",
                "ответственный исполнитель", "соисполнитель", "исполнено частично",
                "ежеквартальный отчёт", "Как отчитаться", "Уважаемые коллеги", "декабря 2009 г.",
                "Заключительные замечания договорного органа"]),
        ("kk", ["Мерзімі", "мерзімі өткеніне 11 күн болды", "7 күн қалды", "30 күн қалды",
                "жауапты орындаушы", "бірлесіп орындаушы", "ішінара орындалды",
                "тоқсандық есеп", "Құрметті әріптестер", "2009 жылғы 31 желтоқсан",
                "Шарттық органның қорытынды ескертулері"]),
    ],
)  # fmt: skip
def test_all_languages_render(items: list[DigestItem], language: str, words: list[str]) -> None:
    digest = render(items, language)
    assert digest.language == language
    for word in words:
        assert word in digest.text, word
        assert word in digest.html, word
    assert f'<html lang="{language}">' in digest.html
    if language != "en":  # no English labels left over
        for english in ("Due date", "days left", "overdue", "Status", "Source", "lead executor"):
            assert english not in digest.text
        assert re.search(r"[А-Яа-яӘәҒғҚқҢңӨөҰұҮүІі]", digest.subject)


def test_localized_subjects(items: list[DigestItem]) -> None:
    assert render(items, "ru").subject == (
        "hrtrack: Ministry of Justice — 3 срока, просрочено: 1, ближайший срок — 8 декабря 2009 г."
    )
    assert render(items, "kk").subject == (
        "hrtrack: Ministry of Justice — 3 мерзім, мерзімі өткені: 1, "
        "ең жақын мерзім — 2009 жылғы 8 желтоқсан"
    )


@pytest.mark.parametrize(
    ("days_left", "phrase"),
    [(1, "остался 1 день"), (2, "осталось 2 дня"), (5, "осталось 5 дней"),
     (11, "осталось 11 дней"), (21, "остался 21 день"), (22, "осталось 22 дня")],
)  # fmt: skip
def test_russian_plural_forms_days_left(days_left: int, phrase: str) -> None:
    due = date.fromordinal(AS_OF.toordinal() + days_left)
    assert phrase in render([make_item(due_date=due)], "ru").text


@pytest.mark.parametrize(
    ("days_overdue", "phrase"),
    [(1, "просрочено на 1 день"), (3, "просрочено на 3 дня"), (14, "просрочено на 14 дней"),
     (31, "просрочено на 31 день")],
)  # fmt: skip
def test_russian_plural_forms_overdue(days_overdue: int, phrase: str) -> None:
    due = date.fromordinal(AS_OF.toordinal() - days_overdue)
    assert phrase in render([make_item(due_date=due, kind=K.OVERDUE)], "ru").text


def test_kazakh_and_english_counts() -> None:
    due1 = date(2009, 12, 2)
    assert "1 күн қалды" in render([make_item(due_date=due1)], "kk").text
    assert "1 day left" in render([make_item(due_date=due1)], "en").text
    assert "due today" in render([make_item(due_date=AS_OF)], "en").text
    assert "срок истекает сегодня" in render([make_item(due_date=AS_OF)], "ru").text


def test_plural_categories() -> None:
    assert [plural_category(n, "ru") for n in (1, 2, 4, 5, 11, 12, 14, 21, 22, 25, 101, 111)] == [
        "one", "few", "few", "many", "many", "many", "many", "one", "few", "many", "one", "many",
    ]  # fmt: skip
    assert [plural_category(n, "en") for n in (0, 1, 2)] == ["other", "one", "other"]
    assert plural_category(5, "kk") == "other"


@pytest.mark.parametrize(
    ("given", "used"),
    [("de", "en"), ("", "en"), ("ru-RU", "ru"), ("RU", "ru"), ("kk_KZ", "kk"), ("kz", "kk")],
)
def test_language_normalization_and_fallback(given: str, used: str) -> None:
    assert normalize_language(given) == used


def test_unknown_language_falls_back_to_english(items: list[DigestItem]) -> None:
    digest = render(items, "fr")
    assert digest.language == "en"
    assert digest.subject.startswith("hrtrack: 3 deadlines for")
    assert "Due date" in digest.text


def test_catalogues_are_complete() -> None:
    folder = Path(__file__).resolve().parents[2] / "services" / "notifier" / "templates"
    cats = {
        lang: json.loads((folder / f"messages.{lang}.json").read_text(encoding="utf-8"))
        for lang in ("en", "ru", "kk")
    }
    for lang in ("ru", "kk"):
        assert set(cats[lang]) == set(cats["en"]), lang
        for key, value in cats["en"].items():
            if isinstance(value, dict) and key in ("statuses", "roles", "sources", "due_kinds",
                                                   "kinds", "flags"):  # fmt: skip
                assert set(cats[lang][key]) == set(value), (lang, key)
                assert all(cats[lang][key][k] != v for k, v in value.items()), (lang, key)
    for key in ("days_left", "days_overdue", "summary", "subject_head"):
        assert set(cats["ru"][key]) == {"one", "few", "many"}


def test_catalogues_cover_shared_enums() -> None:
    events = pytest.importorskip("shared.events")
    folder = Path(__file__).resolve().parents[2] / "services" / "notifier" / "templates"
    for lang in ("en", "ru", "kk"):
        cat = json.loads((folder / f"messages.{lang}.json").read_text(encoding="utf-8"))
        assert {str(k) for k in events.DueKind} <= set(cat["due_kinds"]), lang
        assert {str(s) for s in events.AssignmentStatus} <= set(cat["statuses"]), lang
        assert {str(s) for s in events.Source} <= set(cat["sources"]), lang


# --- content and layout ---------------------------------------------------------------


def test_groups_ordered_overdue_first_then_soonest(items: list[DigestItem]) -> None:
    extra = make_item(
        assignment_id="asg-4", source="upr", reference="Zeta action", due_date=date(2009, 12, 8)
    )
    digest = render([*items, extra])
    headings = [
        "20 November 2009 — 11 days overdue",
        "8 December 2009 — 7 days left",
        "31 December 2009 — 30 days left",
    ]
    for part in (digest.text, digest.html):
        positions = [part.index(h) for h in headings]
        assert positions == sorted(positions)
        assert part.count("8 December 2009 — 7 days left") == 1  # one heading per date
    # both items due on 8 Dec sit under the same heading, by agency, source, reference
    text = digest.text
    assert text.index("8 December 2009 — 7 days left") < text.index("KAZ / cycle 1 / 97.12")
    assert text.index("KAZ / cycle 1 / 97.12") < text.index("Zeta action")
    assert text.index("Zeta action") < text.index("31 December 2009 — 30 days left")


def test_every_item_shows_its_details(items: list[DigestItem]) -> None:
    digest = render(items)
    for item in items:
        url = f"http://tracker.test:8002/v1/assignments/{item.assignment_id}/reports"
        for part in (digest.text, digest.html):
            assert item.reference in part
            assert url in part
    text = digest.text
    assert "Source: Treaty body concluding observations" in text
    assert "Current status: not started" in text
    assert "Agency: Ministry of Justice — co-executor" in text
    assert "Due date: 20 November 2009 (11 days overdue)" in text
    assert "POST http://tracker.test:8002/v1/assignments/{id}/reports" in " ".join(text.split())
    assert "Authorization: Bearer" in text
    assert "(assignment asg-2)" in text


def test_excerpt_cut_at_word() -> None:
    long = (LONG_TEXT + " ") * 3
    cut = excerpt(long)
    flat = " ".join(long.split())
    assert cut.endswith("…")
    body = cut[:-1]
    assert len(body) <= 240
    assert flat.startswith(body)
    assert flat[len(body)] in " ,;:."  # cut falls between words
    assert len(body) > 200
    assert excerpt("short  text\n here") == "short text here"
    assert excerpt("x" * 500) == "x" * 240 + "…"  # no word boundary: hard cut


def test_digest_shows_excerpt_not_full_text() -> None:
    long = (LONG_TEXT + " ") * 3
    digest = render([make_item(text=long)])
    html_text = digest.html
    assert excerpt(long)[:-1] in " ".join(html_text.split())
    assert long.strip()[-60:] not in digest.text.replace("\n   ", " ")
    assert "…" in digest.text


def test_html_escapes_item_text() -> None:
    item = make_item(
        text='<script>alert("x")</script> & more',
        reference="<b>ref</b>",
        agency_name="Ministry <img src=x onerror=alert(1)>",
    )
    digest = render([item], recipient_name="<i>MoJ</i>")
    assert "<script>" not in digest.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more" in digest.html
    assert "<b>ref</b>" not in digest.html and "&lt;b&gt;ref&lt;/b&gt;" in digest.html
    assert "<img" not in digest.html
    assert "<i>MoJ</i>" not in digest.html
    assert '<script>alert("x")</script>' in digest.text  # plain text shows it verbatim


def test_duplicate_obligation_listed_once_with_all_kinds(items: list[DigestItem]) -> None:
    escalated = replace(items[1], kind=K.ESCALATION_AGENCY, flags=("no_contact",))
    digest = render([*items, escalated])
    assert digest.subject.startswith("hrtrack: 3 deadlines")
    assert digest.text.count("CAT/C/KAZ/CO/3 para 15") == 1
    assert "overdue reminder; escalation to the agency's management" in digest.text
    assert "the agency has no contact address" in digest.text


def test_rendering_is_deterministic(items: list[DigestItem]) -> None:
    assert render(items, "ru") == render(list(reversed(items)), "ru")


def test_empty_digest_is_refused() -> None:
    with pytest.raises(ValueError):
        render([])


# --- the email message ----------------------------------------------------------------


def test_message_structure_and_headers(items: list[DigestItem]) -> None:
    digest = render(items, "ru")
    msg = build_email(
        digest=digest,
        sender="hrtrack <noreply@hrtrack.test>",
        recipient="Министерство юстиции <moj@gov.test>",
        as_of=AS_OF,
        message_id_domain="mail.hrtrack.test",
        now=datetime(2009, 12, 1, 6, 0, tzinfo=UTC),
    )
    parsed = parse(msg)
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, attachment = parsed.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    plain, html = alternative.iter_parts()
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
    assert plain.get_content() == digest.text
    assert html.get_content() == digest.html
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_param("method") == "PUBLISH"
    assert attachment.get_filename() == "hrtrack-2009-12-01.ics"

    assert parsed["X-Hrtrack-As-Of"] == "2009-12-01"
    assert parsed["Subject"] == digest.subject
    assert parsed["To"].addresses[0].addr_spec == "moj@gov.test"
    assert parsed["To"].addresses[0].display_name == "Министерство юстиции"
    assert parsed["From"].addresses[0].addr_spec == "noreply@hrtrack.test"
    assert parsed["Date"].datetime == datetime(2009, 12, 1, 6, 0, tzinfo=UTC)
    assert re.fullmatch(r"<[^<>@\s]+@mail\.hrtrack\.test>", parsed["Message-ID"])
    assert msg["Message-ID"] == parsed["Message-ID"]
    assert parsed["Content-Language"] == "ru"
    raw_headers = msg.as_bytes().split(b"\n\n", 1)[0]
    raw_headers.decode("ascii")  # Cyrillic subject and names are RFC 2047-encoded


def test_message_ids_are_unique(items: list[DigestItem]) -> None:
    digest = render(items)
    ids = {
        build_email(digest=digest, sender="a@b.test", recipient="c@d.test", as_of=AS_OF)[
            "Message-ID"
        ]
        for _ in range(20)
    }
    assert len(ids) == 20


@pytest.mark.parametrize("evil", ["\r\n", "\n", "\r", "\u2028", "\x85"])
def test_header_injection_impossible(items: list[DigestItem], evil: str) -> None:
    digest = render(items, recipient_name=f"Ministry{evil}Bcc: spy@evil.test", sender_name="hr")
    assert "\n" not in digest.subject and "\r" not in digest.subject
    forged = replace(digest, subject=f"Hello{evil}Bcc: spy@evil.test{evil}{evil}body")
    for d in (digest, forged):
        msg = build_email(
            digest=d,
            sender=f'"hrtrack{evil}Bcc: spy@evil.test" <noreply@hrtrack.test>',
            recipient=f'"MoJ{evil}Cc: spy@evil.test" <moj@gov.test>',
            as_of=AS_OF,
        )
        raw = msg.as_bytes()
        parsed = parse(msg)
        assert parsed["Bcc"] is None and parsed["Cc"] is None
        assert not re.search(rb"^(Bcc|Cc):", raw, re.MULTILINE)
        assert "Bcc: spy@evil.test" in parsed["Subject"]  # kept as harmless text
        assert [a.addr_spec for a in parsed["To"].addresses] == ["moj@gov.test"]


def test_long_non_ascii_headers_come_back_as_they_were(items: list[DigestItem]) -> None:
    # The email package's own folding lost the space between "сроков," and "просрочено".
    subject = ("hrtrack: Ministry of Justice — 600 сроков, просрочено: 480, ближайший срок — "
               "1 декабря 2009 г.")
    name = "Министерство юстиции Республики Казахстан, Департамент по правам человека"
    _envelope, chunks = digest_message(
        digest=replace(render(items, "ru"), subject=subject), as_of=AS_OF,
        sender='"Ведомство, отдел" <noreply@hrtrack.test>', recipient=f'"{name}" <moj@gov.test>')
    raw = b"".join(chunks)
    # As sent (re-generating it with the email package would refold it, with that bug).
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == subject
    assert msg["To"].addresses[0].display_name == name
    assert msg["To"].addresses[0].addr_spec == "moj@gov.test"
    assert msg["From"].addresses[0].display_name == "Ведомство, отдел"


def test_invalid_address_is_refused(items: list[DigestItem]) -> None:
    with pytest.raises(ValueError):
        build_email(digest=render(items), sender="hrtrack", recipient="x@y.test", as_of=AS_OF)


# --- the calendar ---------------------------------------------------------------------


def test_ics_parses_with_one_event_per_obligation(items: list[DigestItem]) -> None:
    escalated = replace(items[1], kind=K.ESCALATION_COORDINATOR)
    digest = render([*items, escalated], "kk")
    msg = parse(build_email(digest=digest, sender="a@b.test", recipient="c@d.test", as_of=AS_OF))
    ics = calendar_part(msg).get_content()
    ics_bytes = ics if isinstance(ics, bytes) else ics.encode()
    assert ics_bytes.replace(b"\r\n", b"\n") == digest.ics.replace(b"\r\n", b"\n")

    cal = icalendar.Calendar.from_ical(digest.ics)
    assert str(cal["METHOD"]) == "PUBLISH"
    events = list(cal.walk("VEVENT"))
    assert len(events) == 3
    by_uid = {str(e["UID"]): e for e in events}
    assert set(by_uid) == {
        "asg-1-deadline-20091231@hrtrack",
        "asg-2-follow_up-20091120@hrtrack",
        "asg-3-report-20091208@hrtrack",
    }
    for item in items:
        event = by_uid[event_uid(item.assignment_id, item.due_kind, item.due_date)]
        start = event.decoded("DTSTART")
        assert start == item.due_date and not isinstance(start, datetime)  # all-day
        assert event.decoded("DTEND") == date.fromordinal(item.due_date.toordinal() + 1)
        assert item.reference in str(event["SUMMARY"])
        assert "DTSTAMP" in event
    assert "орындау мерзімі" in str(by_uid["asg-1-deadline-20091231@hrtrack"]["SUMMARY"])


def test_ics_uids_stable_across_digests(items: list[DigestItem]) -> None:
    def uids(digest: RenderedDigest) -> set[str]:
        return {str(e["UID"]) for e in icalendar.Calendar.from_ical(digest.ics).walk("VEVENT")}

    first = render(items, "en")
    later = render(items[:2], "ru", as_of=date(2009, 12, 20), recipient_name="Someone else")
    assert uids(later) < uids(first)


def test_ics_escapes_text_safely() -> None:
    item = make_item(reference="Ref; with, commas\nand newline", text="Line 1\r\nEND:VEVENT")
    cal = icalendar.Calendar.from_ical(render([item]).ics)
    events = list(cal.walk("VEVENT"))
    assert len(events) == 1
    assert str(events[0]["SUMMARY"]) == "implementation deadline: Ref; with, commas and newline"


def test_given_message_id_is_kept(items: list[DigestItem]) -> None:
    msg = parse(build_email(digest=render(items), sender="a@b.test", recipient="c@d.test",
                            as_of=AS_OF, message_id="<digest-42@hrtrack.kz>"))
    assert msg["Message-ID"] == "<digest-42@hrtrack.kz>"


@pytest.mark.parametrize(
    ("language", "flag", "words"),
    [
        ("en", "no_escalation_contact", "no escalation contact"),
        ("ru", "no_escalation_contact", "контакт для эскалации"),
        ("kk", "no_escalation_contact", "эскалацияға"),
        ("en", "late", "after the previous digest had been sent"),
        ("ru", "late", "после отправки предыдущей сводки"),
        ("kk", "late", "алдыңғы жиынтық"),
    ],
)
def test_flags_are_explained_in_every_language(language: str, flag: str, words: str) -> None:
    digest = render([make_item(flags=(flag,))], language)
    assert words in digest.text and words in digest.html


# --- streaming ------------------------------------------------------------------------


def many_items(n: int) -> list[DigestItem]:
    return [
        make_item(
            assignment_id=f"asg-{i}",
            reference=f"NHRAP / Chapter {i % 7} / No. {i}",
            text=f"Действие {i}: обеспечить, чтобы каждое заявление о пытках расследовалось "
            "незамедлительно; <b>и</b> беспристрастно, с участием адвоката. " * (1 + i % 3),
            due_date=date.fromordinal(AS_OF.toordinal() - 200 + i % 260),
            kind=K.OVERDUE if i % 260 < 200 else K.UPCOMING,
            agency_name=f"Агентство {i % 5}",
        )
        for i in range(n)
    ]


def test_streamed_message_carries_the_rendered_parts() -> None:
    items = many_items(600)
    whole = render(items, "ru")
    prepared = prepare_digest(recipient_name="Ministry of Justice", language="ru", as_of=AS_OF,
                              items=items, report_url=REPORT_URL)
    envelope, chunks = digest_message(
        digest=prepared, sender="hrtrack <noreply@hrtrack.test>",
        recipient="Министерство <moj@gov.test>", as_of=AS_OF, message_id="<digest-1@hr.test>",
        now=datetime(2009, 12, 1, 6, 0, tzinfo=UTC))
    pieces = list(chunks)
    assert len(pieces) > 10, "the message comes in pieces, not whole"
    raw = b"".join(pieces)
    assert envelope == Envelope("noreply@hrtrack.test", ("moj@gov.test",), "<digest-1@hr.test>")

    # Wire format: CRLF only, short lines, nothing to dot-stuff, ASCII.
    assert b"\n" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 78
    assert not any(line.startswith(b".") for line in lines)
    raw.decode("ascii")

    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    alternative, attachment = parsed.iter_parts()
    plain, html = alternative.iter_parts()
    assert plain.get_content() == whole.text
    assert html.get_content() == whole.html
    assert attachment.get_payload(decode=True) == whole.ics
    assert parsed["Subject"] == whole.subject == prepared.subject
    assert len(list(icalendar.Calendar.from_ical(whole.ics).walk("VEVENT"))) == 600
    # Same digest, same Message-ID and time: the same bytes (a re-send is the same mail).
    _again, chunks = digest_message(
        digest=prepare_digest(recipient_name="Ministry of Justice", language="ru", as_of=AS_OF,
                              items=list(reversed(items)), report_url=REPORT_URL),
        sender="hrtrack <noreply@hrtrack.test>", recipient="Министерство <moj@gov.test>",
        as_of=AS_OF, message_id="<digest-1@hr.test>", now=datetime(2009, 12, 1, 6, 0, tzinfo=UTC))
    assert b"".join(chunks) == raw


def test_invalid_address_is_refused_before_anything_is_written(items: list[DigestItem]) -> None:
    with pytest.raises(ValueError, match="recipient"):
        digest_message(digest=render(items), sender="a@b.test", recipient="nobody",
                       as_of=AS_OF)


@pytest.mark.parametrize("shift", range(4))
def test_ics_lines_folded_at_75_octets_between_characters(shift: int) -> None:
    text = "x" * shift + "Қазақстан Республикасының Адам құқықтары жөніндегі ұлттық жоспары " * 6
    item = make_item(text=text, reference="Ұлттық жоспар; 2009, № 3 " * 4, agency_name="Әділет")
    ics = render([item], "kk").ics
    assert ics.endswith(b"\r\n") and b"\n" not in ics.replace(b"\r\n", b"")
    for line in ics.split(b"\r\n"):
        assert len(line) <= 75
        line.decode("utf-8")  # never cut inside a character
    (event,) = icalendar.Calendar.from_ical(ics).walk("VEVENT")
    assert str(event["DESCRIPTION"]).startswith(excerpt(text)[:-1])
    assert str(event["SUMMARY"]).endswith(" ".join(["Ұлттық жоспар; 2009, № 3"] * 4))


def test_wordwrap_is_jinjas() -> None:
    env = jinja2.Environment()
    rng = random.Random(7)
    vocabulary = ["a", "law", "on", "the", "protection", "of", "personal", "data;", "обеспечить",
                  "каждое", "заявление", "Қазақстан", "well-known", "x" * 80, "end.", "—", "",
                  "tab\there", "nbsp\u00a0word", "line\nbreak"]
    samples = ["", " ", "one", "  two  spaces ", excerpt(LONG_TEXT), LONG_TEXT]
    samples += [" ".join(rng.choice(vocabulary) for _ in range(rng.randrange(1, 60)))
                for _ in range(400)]
    for text in samples:
        for width, wrapstring in ((73, "\n   "), (76, None), (10, "|")):
            assert wordwrap(env, text, width, wrapstring=wrapstring) == \
                jinja2.filters.do_wordwrap(env, text, width, wrapstring=wrapstring), text


# --- capped digests: the most urgent in full, the rest summarised -----------------------


def summary_rows(text: str, heading: str) -> list[tuple[int, str]]:
    """The rows of one plain-text summary table: (count, the rest of the line)."""
    lines = text.split("\n")
    start = lines.index(heading) + 3  # heading, underline, column names
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        count, rest = line.strip().split(" ", 1)
        rows.append((int(count), rest.strip()))
    return rows


def numbered(text: str) -> list[tuple[str, str]]:
    """The items listed in full, in the order shown: (number, reference)."""
    return re.findall(r"^(\d+)\. (.+)$", text, flags=re.MULTILINE)


def book(upcoming: int = 10, overdue: int = 5, escalated: int = 3) -> list[DigestItem]:
    """Items of every urgency; agencies A, B, C in turn. Escalations are due later than
    the plain overdue items, so urgency, not the date alone, must put them first."""
    made = []
    for i in range(escalated):
        made.append(make_item(assignment_id=f"esc-{i}", reference=f"E{i}",
                              due_date=date(2009, 10, 20 + i), kind=K.ESCALATION_COORDINATOR,
                              agency_name="Agency " + "ABC"[i % 3], agency_id=f"id-{i % 3}"))
    for i in range(overdue):
        made.append(make_item(assignment_id=f"ovd-{i}", reference=f"O{i}",
                              due_date=date(2009, 9, 1 + i), kind=K.OVERDUE,
                              agency_name="Agency " + "ABC"[i % 3], agency_id=f"id-{i % 3}"))
    for i in range(upcoming):
        made.append(make_item(assignment_id=f"upc-{i}", reference=f"U{i}",
                              due_date=date(2009, 12, 2 + i), kind=K.UPCOMING,
                              agency_name="Agency " + "ABC"[i % 3], agency_id=f"id-{i % 3}"))
    random.Random(7).shuffle(made)
    return made


def test_capped_digest_lists_the_most_urgent_in_full() -> None:
    digest = render(book(), max_items=6)
    # escalations (by due date), then the most overdue; nothing upcoming
    expected = ["E0", "E1", "E2", "O0", "O1", "O2"]
    assert [ref for _n, ref in numbered(digest.text)] == expected
    assert [int(n) for n, _ref in numbered(digest.text)] == [1, 2, 3, 4, 5, 6]
    for ref in expected:
        assert f"{ref}</div>" in digest.html
    for ref in ("O3", "O4", "U0", "U9"):
        assert f"\n{ref}\n" not in digest.text and f"{ref}</div>" not in digest.html
    # the subject and the first summary line still speak of all 18
    assert digest.subject.startswith("hrtrack: 18 deadlines for Ministry of Justice — 8 overdue")
    assert "18 items need your attention; 8 of them are overdue." in digest.text
    assert "the most urgent: 6; summarised after them: 12." in " ".join(digest.text.split())
    # only the listed items are in the calendar
    events = list(icalendar.Calendar.from_ical(digest.ics).walk("VEVENT"))
    assert sorted(str(e["UID"]).split("-deadline-")[0] for e in events) == sorted(
        ["esc-0", "esc-1", "esc-2", "ovd-0", "ovd-1", "ovd-2"])
    assert "listed in full" in " ".join(digest.text.split())


def test_capped_digest_summary_adds_up() -> None:
    digest = render(book(), max_items=6)
    text = digest.text
    assert "Not listed above: 12 more items; 2 of them are overdue" in text
    agencies = summary_rows(text, "By agency")
    assert sum(n for n, _ in agencies) == 12
    # 2 overdue (O3: agency A, O4: agency B) and 10 upcoming (U0..U9: A B C A B C ...)
    assert agencies == [(5, "1  Agency A (id-0)"), (4, "1  Agency B (id-1)"),
                        (3, "0  Agency C (id-2)")]
    dates = summary_rows(text, "By due date and reminder")
    assert sum(n for n, _ in dates) == 12
    assert dates[0] == (1, "4 September 2009 (88 days overdue) — overdue reminder")
    assert dates[1] == (1, "5 September 2009 (87 days overdue) — overdue reminder")
    assert dates[2] == (1, "2 December 2009 (1 day left) — advance reminder")
    assert len(dates) == 12
    # where they all are: the ledger, on a line of its own
    assert "\nGET /v1/reminders?as_of=2009-12-01&limit=5000\n" in text
    # the HTML part carries the same tables: 3 agency rows, 12 date rows
    html = digest.html.split("By agency</h3>")[1]
    counts = re.findall(r'<tr><td style="padding:2px 10px;text-align:right;">(\d+)</td>', html)
    assert len(counts) == 3 + 12 and sum(map(int, counts)) == 2 * 12


def test_summary_names_the_most_severe_kind_of_an_item() -> None:
    items = [make_item(assignment_id="first", due_date=date(2009, 10, 1), kind=K.OVERDUE),
             make_item(assignment_id="x", due_date=date(2009, 9, 1), kind=K.OVERDUE),
             make_item(assignment_id="x", due_date=date(2009, 9, 1), kind=K.ESCALATION_AGENCY)]
    digest = render(items, max_items=1)
    # the escalated one goes first (listed); the other is summarised as overdue
    assert [ref for _n, ref in numbered(digest.text)] == [items[1].reference]
    assert "escalation to the agency's management" in digest.text.split("How to report")[0]
    assert summary_rows(digest.text, "By due date and reminder") == [
        (1, "1 October 2009 (61 days overdue) — overdue reminder")]


def test_not_capped_when_within_the_limit(items: list[DigestItem]) -> None:
    capped, whole = render(items, max_items=3), render(items)
    assert capped == whole
    assert "Not listed above" not in whole.text and "By agency" not in whole.html
    with pytest.raises(ValueError, match="max_items"):
        render(items, max_items=0)


def test_summary_escapes_agency_names() -> None:
    evil = 'Ministry <script>alert("x")</script> & Co\r\nBcc: a@b'
    items = [make_item(assignment_id="listed"),
             make_item(assignment_id="counted", agency_name=evil, agency_id="<id>&",
                       due_date=date(2010, 1, 1))]
    digest = render(items, max_items=1)
    assert "<script>" not in digest.html and "<id>" not in digest.html
    assert ("Ministry &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co Bcc: a@b"
            in digest.html)
    assert "&lt;id&gt;&amp;" in digest.html
    # plain text: as it is, on one line
    assert summary_rows(digest.text, "By agency") == [
        (1, '0  Ministry <script>alert("x")</script> & Co Bcc: a@b (<id>&)')]


@pytest.mark.parametrize(
    ("language", "title", "by_agency", "by_date", "words"),
    [
        ("ru", "Не перечислены выше, ещё пунктов: 12; из них просрочено: 2", "По ведомствам",
         "По срокам и видам напоминаний",
         ["наиболее срочные пункты: 6", "остальные сведены в", "журнале напоминаний",
          "4 сентября 2009 г. (просрочено на 88 дней) — напоминание о просрочке",
          "2 декабря 2009 г. (остался 1 день) — предварительное напоминание",
          "ведомство", "перечисленных подробно"]),
        ("kk", "Жоғарыда көрсетілмеген тағы тармақтар: 12; оның ішінде мерзімі өткені: 2",
         "Мекемелер бойынша", "Мерзімдер мен еске салу түрлері бойынша",
         ["ең шұғыл тармақтар толық көрсетілген: 6", "еске салулар журналында",
          "2009 жылғы 4 қыркүйек (мерзімі өткеніне 88 күн болды) — мерзімнің өтуі туралы",
          "мекеме", "Толық көрсетілген тармақтардың мерзімдері"]),
    ],
)
def test_capped_digest_in_russian_and_kazakh(language: str, title: str, by_agency: str,
                                             by_date: str, words: list[str]) -> None:
    digest = render(book(), language, max_items=6)
    flat = " ".join(digest.text.split())
    assert title in digest.text
    for word in words:
        assert word in flat, word
    assert sum(n for n, _ in summary_rows(digest.text, by_agency)) == 12
    assert sum(n for n, _ in summary_rows(digest.text, by_date)) == 12
    assert title in digest.html and by_agency in digest.html and by_date in digest.html
    assert "Not listed" not in digest.text + digest.html


def test_summary_tables_stay_short_and_still_add_up() -> None:
    # 250 agencies with one summarised item each, over 250 due dates
    items = [make_item(assignment_id=f"a{i}", agency_name=f"Agency {i:03d}", agency_id=f"{i}",
                       due_date=date.fromordinal(AS_OF.toordinal() + 1 + i))
             for i in range(251)]
    digest = render(items, max_items=1)
    for heading, other in (("By agency", "other agencies (151)"),
                           ("By due date and reminder", "other due dates (151)")):
        rows = summary_rows(digest.text, heading)
        assert len(rows) == 100
        assert sum(n for n, _ in rows) == 250
        assert rows[-1][0] == 151 and rows[-1][1].endswith(other)


def test_ledger_url() -> None:
    assert ledger_url(None, "coord+1@hr.test", date(2010, 6, 30)) == (
        "/v1/reminders?recipient=coord%2B1@hr.test&as_of=2010-06-30&limit=5000")
    assert ledger_url("https://hr.example/notifier/", "a@b.kz", date(2010, 6, 30)) == (
        "https://hr.example/notifier/v1/reminders?recipient=a@b.kz&as_of=2010-06-30"
        "&limit=5000")
    digest = render([make_item(), make_item(assignment_id="b")], max_items=1,
                    ledger_url=ledger_url("https://hr.example", "a&b@x.kz", AS_OF))
    assert ("\nGET https://hr.example/v1/reminders?recipient=a%26b@x.kz&as_of=2009-12-01"
            "&limit=5000\n") in digest.text
    assert "a%26b@x.kz&amp;as_of=2009-12-01" in digest.html


def test_capped_message_stays_small_however_many_items() -> None:
    """The bench's coordinators' digest (23,768 items) was a 93 MB message; capped, the
    message's size depends on the cap, not on the number of items."""
    sizes = {}
    for n in (300, 6000):
        items = [replace(item, agency_name=f"Agency {i % 2000}", agency_id=str(i % 2000))
                 for i, item in enumerate(many_items(n))]
        prepared = prepare_digest(recipient_name="Coordinators", language="ru", as_of=AS_OF,
                                  items=items, report_url=REPORT_URL, max_items=200)
        _envelope, chunks = digest_message(digest=prepared, sender="hrtrack <n@hr.test>",
                                           recipient="c@hr.test", as_of=AS_OF)
        sizes[n] = len(b"".join(chunks))
    assert sizes[6000] < 2 * 1024 * 1024
    assert sizes[6000] < 2 * sizes[300]


def test_digest_max_items_setting() -> None:
    assert NotifierSettings().digest_max_items == 200
    assert NotifierSettings(public_url="").public_url is None
    with pytest.raises(ValidationError, match="digest_max_items"):
        NotifierSettings(digest_max_items=0)
