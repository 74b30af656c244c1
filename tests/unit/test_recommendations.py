"""The three payload models and their normalization into events (DESIGN.md sections 1-3)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from shared.events import DueKind, Source
from shared.executors import ExecutorRole
from shared.ids import recommendation_id
from shared.recommendations import (
    RECOMMENDATION_ADAPTER,
    PlanRecommendation,
    TreatyBodyRecommendation,
    UprRecommendation,
    canonical_json,
    to_event,
)

UPR: dict[str, Any] = {
    "source": "upr", "state": "KAZ", "cycle": 1, "session": 7, "review_date": "2010-02-12",
    "symbol": "A/HRC/14/10", "paragraph": "97.12", "text": "Ratify OP-CAT.",
    "recommending_states": ["Germany", "Czech Republic"], "response": "supported_in_part",
    "themes": ["torture"], "affected_groups": ["detainees"], "sdgs": [16],
    "executors": [{"name": "Ministry of Justice", "role": "lead"}],
}
TREATY: dict[str, Any] = {
    "source": "treaty_body", "state": "KAZ", "committee": "CAT", "symbol": "CAT/C/KAZ/CO/3",
    "paragraph": "15", "sub_paragraph": "a", "adopted": "2014-11-21", "text": "Investigate.",
    "follow_up": True, "follow_up_due": "2015-11-28", "follow_up_grade": "C",
    "executors": "Ministry of Internal Affairs, Prosecutor General",
}
PLAN: dict[str, Any] = {
    "source": "plan", "plan": "NHRAP-2009-2012", "plan_period": [2009, 2012],
    "chapter": "The Right to Privacy", "number": "3", "text": "Draft a law.",
    "deadline": "2nd quarter 2010",
    "executors": "Ministry of Justice with the participation of the Prosecutor General, "
                 "NGOs (per agreement)",
}


def event(raw: dict[str, Any]) -> Any:
    return to_event(RECOMMENDATION_ADAPTER.validate_python(raw), submitted_by="test")


def errors(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        RECOMMENDATION_ADAPTER.validate_python(raw)
    return {".".join(str(p) for p in e["loc"][1:]): e["msg"] for e in caught.value.errors()}


def test_upr_keeps_every_field() -> None:
    rec = RECOMMENDATION_ADAPTER.validate_python(UPR)
    assert isinstance(rec, UprRecommendation)
    assert (rec.cycle, rec.session, rec.review_date, rec.symbol, rec.paragraph) == (
        1, 7, date(2010, 2, 12), "A/HRC/14/10", "97.12")
    assert rec.recommending_states == ["Germany", "Czech Republic"]
    assert rec.response == "supported_in_part"
    assert (rec.themes, rec.affected_groups, rec.sdgs) == (["torture"], ["detainees"], [16])
    assert event(UPR).payload["recommending_states"] == ["Germany", "Czech Republic"]


def test_upr_id_comes_from_state_cycle_paragraph_only() -> None:
    first = event(UPR)
    assert first.recommendation_id == recommendation_id("upr", "KAZ", "1", "97.12")
    assert first.reference == "KAZ / cycle 1 / 97.12"
    other_text = event({**UPR, "text": "Changed.", "response": "noted"})
    assert other_text.recommendation_id == first.recommendation_id
    assert other_text.content_hash != first.content_hash
    assert event({**UPR, "cycle": 2}).recommendation_id != first.recommendation_id


def test_identical_repush_has_the_same_content_hash() -> None:
    assert event(UPR).content_hash == event(dict(UPR)).content_hash
    assert event(UPR).event_id != event(UPR).event_id  # each publish is its own event


def test_upr_derived_deadlines_mid_term_and_next_review() -> None:
    ev = event({k: v for k, v in UPR.items()})
    kinds = {(d.kind, d.due) for d in ev.due_dates}
    assert (DueKind.MID_TERM, date(2012, 8, 12)) in kinds  # 2.5 years after the review
    assert (DueKind.NEXT_REVIEW, date(2014, 8, 12)) in kinds  # 4.5 years after
    assert ev.deadline.due == date(2012, 8, 12)  # no own deadline: the mid-term report


def test_upr_response_is_one_of_three() -> None:
    assert "response" in errors({**UPR, "response": "accepted"})


@pytest.mark.parametrize("paragraph", ["97.12", "97", "110.3.1"])
def test_upr_paragraph_forms(paragraph: str) -> None:
    assert event({**UPR, "paragraph": paragraph}).payload["paragraph"] == paragraph


def test_upr_sdgs_are_goals_1_to_17() -> None:
    assert "sdgs.0" in errors({**UPR, "sdgs": [18]})


def test_treaty_body_keeps_every_field() -> None:
    rec = RECOMMENDATION_ADAPTER.validate_python(TREATY)
    assert isinstance(rec, TreatyBodyRecommendation)
    assert (rec.committee, rec.symbol, rec.paragraph, rec.sub_paragraph) == (
        "CAT", "CAT/C/KAZ/CO/3", "15", "a")
    assert (rec.adopted, rec.follow_up, rec.follow_up_due, rec.follow_up_grade) == (
        date(2014, 11, 21), True, date(2015, 11, 28), "C")


def test_treaty_body_id_and_follow_up_due_date() -> None:
    ev = event(TREATY)
    assert ev.recommendation_id == recommendation_id(
        "treaty_body", "CAT", "CAT/C/KAZ/CO/3", "15", "a")
    assert ev.reference == "CAT / CAT/C/KAZ/CO/3 / 15(a)"
    assert ev.deadline.due == date(2015, 11, 28)
    # The follow-up date is the deadline: one obligation, listed once under its own name.
    assert [(d.kind, d.due) for d in ev.due_dates] == [(DueKind.FOLLOW_UP, date(2015, 11, 28))]
    assert [(e.name, e.role) for e in ev.executors] == [
        ("Ministry of Internal Affairs", ExecutorRole.LEAD),
        ("Prosecutor General", ExecutorRole.CO),
    ]


def test_treaty_body_next_periodic_report_when_no_follow_up() -> None:
    raw = {**TREATY, "follow_up": False, "next_report_due": "2018-11-28"}
    del raw["follow_up_due"]
    ev = event(raw)
    assert ev.deadline.due == date(2018, 11, 28)
    # The own deadline (what the tracker's overdue and report windows use) is that date,
    # reminded once, as the next periodic report.
    assert [(d.kind, d.due) for d in ev.due_dates] == [
        (DueKind.NEXT_REPORT, date(2018, 11, 28))]


@pytest.mark.parametrize("committee", ["CCPR", "CESCR", "CAT", "CEDAW", "CRC", "CERD", "CRPD",
                                       "CMW", "CED"])
def test_every_committee(committee: str) -> None:
    assert event({**TREATY, "committee": committee}).payload["committee"] == committee


def test_treaty_body_errors_name_the_field() -> None:
    assert "committee" in errors({**TREATY, "committee": "HRC"})
    assert "follow_up_grade" in errors({**TREATY, "follow_up_grade": "F"})
    no_due = {k: v for k, v in TREATY.items() if k != "follow_up_due"}
    assert errors(no_due) == {"follow_up_due": "Value error, required when follow_up is true"}
    early = errors({**TREATY, "follow_up_due": "2014-01-01"})
    assert "before the adoption date" in early["follow_up_due"]


def test_plan_action_deadline_and_executors_as_written() -> None:
    ev = event(PLAN)
    assert ev.source is Source.PLAN
    assert ev.recommendation_id == recommendation_id(
        "plan", "NHRAP-2009-2012", "The Right to Privacy", "actions", "3")
    assert (ev.deadline.start, ev.deadline.due) == (date(2010, 4, 1), date(2010, 6, 30))
    assert ev.payload["deadline"] == "2nd quarter 2010"  # as written, in the payload
    assert [(e.name, e.role) for e in ev.executors] == [
        ("Ministry of Justice", ExecutorRole.LEAD),
        ("Prosecutor General", ExecutorRole.CO),
        ("NGOs", ExecutorRole.PARTNER),
    ]


def test_plan_yearly_recurs_over_the_plan_period() -> None:
    ev = event({**PLAN, "deadline": "Yearly"})
    assert [d.due for d in ev.due_dates] == [date(y, 12, 31) for y in range(2009, 2013)]


def test_unparseable_deadline_is_kept_and_flagged() -> None:
    ev = event({**PLAN, "deadline": "as soon as possible"})
    assert ev.deadline.needs_deadline and ev.deadline.text == "as soon as possible"
    assert ev.due_dates == []


def test_plan_subsection_names_a_later_list() -> None:
    rec = RECOMMENDATION_ADAPTER.validate_python(
        {**PLAN, "section": "recommendations", "subsection": "In the Field of Education"})
    assert isinstance(rec, PlanRecommendation)
    first_list = event({**PLAN, "section": "recommendations"})
    later = to_event(rec, submitted_by="t")
    assert later.recommendation_id != first_list.recommendation_id
    assert later.reference == ("NHRAP-2009-2012 / The Right to Privacy / In the Field of "
                               "Education / recommendation 3")


def test_plan_period_is_ordered_years() -> None:
    assert "plan_period" in errors({**PLAN, "plan_period": [2012, 2009]})


def test_deadline_as_a_date() -> None:
    ev = event({**PLAN, "deadline": {"due": "2011-03-31"}})
    assert (ev.deadline.start, ev.deadline.due) == (None, date(2011, 3, 31))
    assert "deadline" in ";".join(errors({**PLAN, "deadline": {"due": "2011-03-31",
                                                                "start": "2012-01-01"}}))


def test_unknown_fields_are_refused() -> None:
    assert errors({**UPR, "colour": "red"}) == {"colour": "Extra inputs are not permitted"}


# Computed before the intake performance work (issue 7): stored hashes are compared on
# re-push, so a faster canonicalization must give exactly these.
PINNED_UNICODE: dict[str, Any] = {
    "source": "upr", "state": "KAZ", "cycle": 2, "review_date": "2014-10-30",
    "paragraph": "120.5", "themes": ["\u0434\u0435\u0442\u0438"],
    "text": "  \u041e\u0431\u0435\u0441\u043f\u0435\u0447\u0438\u0442\u044c \u00ab\u043f\u0440"
            "\u0430\u0432\u0430\u00bb \u2014 caf\u00e9 \"q\" \\ \u4e2d  ",
}
PINNED = [
    (UPR, "6993c279-f6fc-5414-b7d4-5596567bed92",
     "fff55d4e7e0941dc37776075cd198c1af65a3f5c9b366e957839a70aca03f0d1"),
    (TREATY, "f701a83e-e0c7-582e-9594-7982cc135781",
     "eda01b38be0c08368ce679f6f11e077a99edd19cfec17f586df4055e5463dca3"),
    (PLAN, "61813a9e-6672-5e41-ac63-df680d217567",
     "d3bb07109739083556e350bc9073adcd1b8e73d328917abbdaaa4215d04b20b8"),
    ({**PLAN, "deadline": {"due": "2011-03-31", "start": "2011-01-01"},
      "executors": [{"name": "Ministry of Justice", "role": "lead"},
                    {"name": "UNDP", "role": "partner"}]},
     "61813a9e-6672-5e41-ac63-df680d217567",
     "b29d1ceb66672869b4ccc7dcb5b736a02316b726ef9c49c0596bf02548af1f1f"),
    (PINNED_UNICODE, "02d757ff-b522-5451-9567-9a8b8d5e78b8",
     "8d4d8b5df573019e128dc3f3254331258a03938fc930c656cd370970ba955896"),
]


@pytest.mark.parametrize(("raw", "rid", "digest"), PINNED,
                         ids=["upr", "treaty_body", "plan", "plan_dates", "unicode"])
def test_ids_and_content_hashes_never_change(raw: dict[str, Any], rid: str, digest: str) -> None:
    ev = event(raw)
    assert (str(ev.recommendation_id), ev.content_hash) == (rid, digest)


# --- the faster normalization gives what the plain one gave (issue 7) --------------------------


def reference_json(payload: dict[str, Any]) -> bytes:
    """How content hashes have always been taken: json.dumps, sorted, compact, ASCII."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


TRICKY_TEXTS = ["plain", "quote \" backslash \\ slash /", "tab\there\nnewline\r\x0b\x0c",
                "".join(chr(c) for c in range(32)), "del \x7f", "caf\u00e9", "\u0416\u0443\u0441",
                "\u4e2d\u6587", "emoji \U0001f600", "\u2028\u2029", "\ufeff", "\\u0000 as text"]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_canonical_json_is_what_json_dumps_writes(text: str) -> None:
    payload = {"text": text, "b": [1, True, None, {"z": text, "a": -3}], "a": {"y": 2, "x": 1},
               text: "as a key", "nested": [[], {}, ""]}
    assert canonical_json(payload) == reference_json(payload)
    storable = text.replace("\x00", "").strip() or "t"  # NUL is refused (tested below)
    rec = RECOMMENDATION_ADAPTER.validate_python({**PLAN, "text": storable,
                                                  "themes": [storable]})
    assert to_event(rec, submitted_by="t").content_hash == hashlib.sha256(
        reference_json(rec.model_dump(mode="json"))).hexdigest()


def test_canonical_json_of_python_values_is_json_dumps_with_str() -> None:
    payload: dict[str, Any] = {"due": date(2011, 3, 31), "at": datetime(2011, 3, 31, 12, 0),
                               "id": uuid.UUID(int=7)}
    assert canonical_json(payload) == reference_json(payload)


# Parsed with the plain implementation before the regexes were reworked for speed.
EXECUTOR_TEXTS = [
    ("Ministry of Culture and Information, MCI RK; Akimats of Almaty, Zhambyl and Pavlodar "
     "regions AND the Supreme Court (per agreement)",
     [("Ministry of Culture and Information", "lead"), ("MCI RK", "co"),
      ("Akimats of Almaty, Zhambyl and Pavlodar regions", "co"), ("Supreme Court", "partner")]),
    ("Prosecutor General NGOs (as agreed), Human Rights Commissioner (Ombudsman) jointly with "
     "UNDP",
     [("Prosecutor General", "lead"), ("NGOs", "partner"),
      ("Human Rights Commissioner (Ombudsman)", "co"), ("UNDP", "co")]),
    ("Ministry of Justice\u3000,\u2028Ministry of Finance\x1cwith the participation of OSCE",
     [("Ministry of Justice", "lead"), ("Ministry of Finance", "co"), ("OSCE", "co")]),
    ("Ministry of Labour w\u0131th the participation of Supreme Court",
     [("Ministry of Labour", "lead"), ("Supreme Court", "co")]),
    ("Ministry of Education (Committee (for) Youth), and \u041e\u0421\u041a \u0420\u041a",
     [("Ministry of Education (Committee (for) Youth), and OSK RK", "lead")]),
]


@pytest.mark.parametrize(("text", "expected"), EXECUTOR_TEXTS)
def test_executor_texts_parse_as_before(text: str, expected: list[tuple[str, str]]) -> None:
    for _ in range(2):  # the first parse fills the caches, the second reads them
        ev = event({**PLAN, "executors": text})
        assert [(e.name, e.role.value) for e in ev.executors] == expected


def test_cached_values_are_shared_but_never_changed_by_an_event() -> None:
    first, second = event(PLAN), event({**PLAN, "number": "4"})
    assert first.deadline == second.deadline and first.executors == second.executors
    first.executors.append(first.executors[0])  # an event's lists are its own
    assert len(event(PLAN).executors) == 3


@pytest.mark.parametrize(("field", "value", "path"), [
    ("text", "a\x00b", "text"),
    ("themes", ["ok", "\ud800"], "themes.1"),
    ("executors", [{"name": "Mo\x00J", "role": "lead"}], "executors.0.name"),
])
def test_unstorable_text_is_still_found_and_named(field: str, value: Any, path: str) -> None:
    assert errors({**PLAN, field: value})[path].startswith(("must not contain NUL",
                                                            "is not valid Unicode"))


def test_a_backslash_u0000_written_out_is_text_like_any_other() -> None:
    assert event({**PLAN, "text": "\\u0000 is how JSON escapes NUL"}).text.startswith("\\u0000")
