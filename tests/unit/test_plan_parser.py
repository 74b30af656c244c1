"""The plan parser against a human reading of the real plan (tests/fixtures/plan_expected.json).

The fixture was typed by reading every action-table row of the document by eye; the parser
must agree on deadline and executors for at least 95% of the rows.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from shared.deadlines import Deadline
from shared.executors import agency_key
from shared.plan_parser import PlanAction, parse_plan, plan_actions_json

ROOT = Path(__file__).resolve().parents[2]
PLAN_FILE = ROOT / "data" / "national-action-plan-2009-2012.txt"
EXPECTED_FILE = ROOT / "tests" / "fixtures" / "plan_expected.json"
AGENCIES_FILE = ROOT / "services" / "tracker" / "data" / "agencies.json"


@cache
def _actions() -> tuple[PlanAction, ...]:
    return tuple(parse_plan(PLAN_FILE.read_text(encoding="utf-8")))


@cache
def _expected() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXPECTED_FILE.read_text(encoding="utf-8"))
    return data


def _rows() -> list[PlanAction]:
    return [a for a in _actions() if a.section == "actions"]


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _row_view(action: PlanAction) -> dict[str, Any]:
    return {
        "deadline": {
            "start": _iso(action.deadline.start),
            "due": _iso(action.deadline.due),
            "recurrence": action.deadline.recurrence,
        },
        "executors": [(agency_key(e.name), e.role.value) for e in action.executors],
    }


def _expected_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "deadline": row["deadline"],
        "executors": [(agency_key(e["name"]), e["role"]) for e in row["executors"]],
    }


def test_plan_identity() -> None:
    action = _actions()[0]
    assert action.plan == "NHRAP-2009-2012"
    assert action.plan_period == (2009, 2012)
    assert action.plan_title == "National Human Rights Action Plan of Kazakhstan for 2009-2012"


def test_rows_match_the_human_reading() -> None:
    parsed = {(a.chapter, a.number): a for a in _rows()}
    rows = _expected()["rows"]
    mismatches: list[str] = []
    for row in rows:
        action = parsed.get((row["chapter"], row["number"]))
        if action is None:
            mismatches.append(f"missing: {row['chapter']} #{row['number']}")
            continue
        got, want = _row_view(action), _expected_view(row)
        if got != want:
            mismatches.append(f"{row['chapter']} #{row['number']}: got {got}, want {want}")
    rate = 1 - len(mismatches) / len(rows)
    print(
        f"\nplan rows matching the human reading: {len(rows) - len(mismatches)}/{len(rows)} "
        f"({rate:.1%})"
    )
    for line in mismatches:
        print("  MISMATCH", line)
    assert rate >= 0.95, "\n".join(mismatches)


def test_row_count_per_table() -> None:
    expected = Counter(row["chapter"] for row in _expected()["rows"])
    assert Counter(a.chapter for a in _rows()) == expected
    assert sorted(expected.values()) == sorted(_expected()["tables"].values())
    assert len(_rows()) == 44


def test_rows_are_numbered_in_order_within_each_table() -> None:
    by_chapter: dict[str, list[int]] = {}
    for action in _rows():
        by_chapter.setdefault(action.chapter, []).append(int(action.number))
    for chapter, numbers in by_chapter.items():
        assert numbers == list(range(1, len(numbers) + 1)), chapter


def test_every_table_row_has_a_deadline_and_a_lead() -> None:
    for action in _rows():
        assert not action.deadline.needs_deadline, (action.chapter, action.number)
        assert [e.role.value for e in action.executors][:1] == ["lead"], action.number


_DEBRIS = re.compile(r"\ufffd|No\. Action|\s{2}|\n|\s\d{1,3}$")


@cache
def _page_numbers() -> frozenset[str]:
    """The stray page numbers of the source ("\ufffd07" is page 107 with a digit lost)."""
    lines = PLAN_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(ln.strip() for ln in lines if re.fullmatch(r"\s*[\d\ufffd]{1,3}\s*", ln))


@pytest.mark.parametrize("field", ["text", "chapter", "executor", "deadline"])
def test_no_page_debris_in_output(field: str) -> None:
    for action in _actions():
        values = {
            "text": [action.text],
            "chapter": [action.chapter],
            "executor": [e.name for e in action.executors],
            # A recommendation whose years date only past events has no deadline text.
            "deadline": [action.deadline.text] if not action.deadline.needs_deadline else [],
        }[field]
        for value in values:
            assert value == value.strip() and value, (action.chapter, action.number)
            assert not _DEBRIS.search(value), (action.chapter, action.number, value)
            assert not _page_numbers() & set(value.split()), (action.chapter, action.number)


def test_source_has_page_debris_inside_a_table() -> None:
    assert "\ufffd07" in _page_numbers()  # so the test above checks something real


def test_text_is_joined_across_lines_and_hyphenation() -> None:
    rows = {(a.chapter, a.number): a for a in _rows()}
    text = rows[("The Right to Freedom of Thought, Conscience and Religion", "2")].text
    assert "recommendations for the amendment" in text  # "recom-\nmendations"
    text = rows[("The Right to Freedom of Peaceful Assembly and Association", "7")].text
    assert "officers of law-enforcement agencies" in text
    assert text.startswith("Development and adoption of agency-level instructional material")


@pytest.mark.parametrize(
    ("chapter", "number", "starts", "start", "due"),
    [
        (
            "The Right to Freedom of Movement and Choice of Residence",
            "4",
            "In 2012, ratify the UN International Convention",
            date(2012, 1, 1),
            date(2012, 12, 31),
        ),
        (
            "The Right to Freedom of Movement and Choice of Residence",
            "3",
            "For the effective coordination of work with migrants",
            date(2012, 1, 1),
            date(2012, 12, 31),
        ),
        (
            "The Right to Freedom of Movement and Choice of Residence",
            "10",
            "In 2010, write and pass the Law",
            date(2010, 1, 1),
            date(2010, 12, 31),
        ),
        (
            "The Right to Freedom of Speech and the Receipt of Information",
            "2",
            "With the aim of fully guaranteeing",
            date(2011, 1, 1),
            date(2011, 12, 31),
        ),
        (
            "Human Rights in the Sphere of Labor Relations - The Right to Social Security",
            "2",
            "\u201cOn Amendments and Additions to Some Legislative Documents with Regard to "
            "Migration",
            date(2009, 10, 1),
            date(2009, 12, 31),
        ),
        (
            "Rights of the Child",
            "4",
            "In 2011, ratify the Convention on the Civil Aspects",
            date(2011, 1, 1),
            date(2011, 12, 31),
        ),
        (
            "Rights of the Child",
            "1",
            "In 2012, ratify the Convention against Discrimination",
            date(2012, 1, 1),
            date(2012, 12, 31),
        ),
        (
            "Rights of Women",
            "6",
            "In 2012, ratify the Convention \u201cOn Maternity Protection",
            date(2012, 1, 1),
            date(2012, 12, 31),
        ),
        (
            "Rights of Individuals in Socially Protected Sections of the Population to the Receipt "
            "of Free Qualified Legal Assistance",
            "3",
            "Develop and adopt the Law of RK",
            None,
            date(2011, 9, 30),
        ),
        (
            "Rights of the Convicted",
            "8",
            "Correctional institutions and investigative jails",
            date(2012, 1, 1),
            date(2012, 12, 31),
        ),
    ],
)
def test_recommendation_items_with_years(
    chapter: str, number: str, starts: str, start: date | None, due: date
) -> None:
    recs = [
        a
        for a in _actions()
        if a.section == "recommendations" and a.chapter == chapter and a.number == number
    ]
    assert len(recs) == 1, [(a.chapter, a.number) for a in _actions()]
    rec = recs[0]
    assert rec.text.startswith(starts)
    assert (rec.deadline.start, rec.deadline.due) == (start, due)
    assert rec.executors == []


def test_recommendations_whose_years_are_no_deadline_are_kept_and_flagged() -> None:
    recs = [a for a in _actions() if a.section == "recommendations"]
    flagged = [a for a in recs if a.deadline.needs_deadline]
    texts = " ".join(a.text for a in flagged)
    assert "adopted in 1976" in texts  # a past event, not a deadline
    assert "in Maastricht" in texts
    assert "For Counteraction of the AIDS Epidemic" in texts  # a year inside a title
    for action in flagged:
        assert action.deadline == Deadline(text="", start=None, due=None, needs_deadline=True)
    assert (len(recs), len(flagged)) == (30, 9)


def test_recommendations_without_any_year_are_left_out() -> None:
    recs = [a for a in _actions() if a.section == "recommendations"]
    assert all(re.search(r"(?:19|20)\d\d", a.text) for a in recs)
    texts = " ".join(a.text for a in recs)
    assert "Accelerate the adoption of the Law" not in texts  # Rights of the Child, item 1


def test_every_item_has_its_own_natural_key() -> None:
    keys = Counter((a.chapter, a.section, a.subsection, a.number) for a in _actions())
    assert [k for k, n in keys.items() if n > 1] == []


def test_later_lists_of_a_chapter_are_named_by_their_heading() -> None:
    child = {(a.subsection, a.number): a for a in _actions() if a.chapter == "Rights of the Child"}
    first = child[("In the Field of Educational Legislation", "1")]
    assert first.text == "In 2012, ratify the Convention against Discrimination in Education."
    assert child[(None, "2")].text.startswith("In 2010, ratify the Convention")


def test_every_executor_resolves_to_exactly_one_agency() -> None:
    agencies = json.loads(AGENCIES_FILE.read_text(encoding="utf-8"))
    owners: dict[str, list[str]] = {}
    for agency in agencies:
        assert agency["kind"] in {
            "ministry",
            "prosecutor",
            "court",
            "akimat",
            "commission",
            "agency",
            "ngo",
            "international",
            "other",
        }
        assert isinstance(agency["voluntary"], bool)
        for key in {agency_key(n) for n in [agency["name"], *agency["aliases"]]}:
            owners.setdefault(key, []).append(agency["name"])
    assert not {k: v for k, v in owners.items() if len(v) > 1}, "an alias names two agencies"
    names = {e.name for a in _actions() for e in a.executors}
    unresolved = sorted(n for n in names if len(owners.get(agency_key(n), [])) != 1)
    assert not unresolved


def test_interior_ministry_variants_are_one_agency() -> None:
    agencies = json.loads(AGENCIES_FILE.read_text(encoding="utf-8"))
    owner = {agency_key(n): a["name"] for a in agencies for n in [a["name"], *a["aliases"]]}
    assert (
        owner[agency_key("Ministry of the Interior")]
        == owner[agency_key("Ministry of Internal Affairs")]
    )
    assert owner[agency_key("The Ministry of Justice")] == owner[agency_key("MoJ")]


def test_plan_actions_json_is_json_ready() -> None:
    data = plan_actions_json(list(_actions()))
    assert json.loads(json.dumps(data)) == data
    first = data[0]
    assert first["chapter"] == "The Right to Life"
    assert first["number"] == "1"
    assert first["section"] == "actions"
    assert first["plan"] == "NHRAP-2009-2012"
    assert first["plan_period"] == [2009, 2012]
    assert first["deadline"] == {
        "text": "2011",
        "start": "2011-01-01",
        "due": "2011-12-31",
        "recurrence": None,
        "needs_deadline": False,
    }
    assert first["executors"][0] == {"name": "Ministry of Justice", "role": "lead"}


def test_header_repeated_after_a_page_break_and_split_rows() -> None:
    text = "\n".join(
        [
            "The Right to Test",
            "",
            "No. Action Deadline Executors",
            "1. Study the experience of other",
            "",
            "countries in the field",
            "",
            "4th quarter",
            "",
            "12",
            " No. Action Deadline Executors",
            "of 2009",
            "",
            "Ministry of Justice,",
            "Prosecutor General (per",
            "agreement)",
            "2. Hold a round table 2010 Ministry of Justice",
            "",
            "2011 Supreme Court",
            "",
            "The Right to Something Else",
            "",
            "Prose follows.",
        ]
    )
    actions = parse_plan(text)
    assert [(a.chapter, a.number) for a in actions] == [
        ("The Right to Test", "1"),
        ("The Right to Test", "2"),
    ]
    first, second = actions
    assert first.text == "Study the experience of other countries in the field"
    assert (first.deadline.start, first.deadline.due) == (date(2009, 10, 1), date(2009, 12, 31))
    assert [(e.name, e.role.value) for e in first.executors] == [
        ("Ministry of Justice", "lead"),
        ("Prosecutor General", "partner"),
    ]
    assert second.text == "Hold a round table 2010 Ministry of Justice"
    assert second.deadline.due == date(2011, 12, 31)
    assert [e.name for e in second.executors] == ["Supreme Court"]


def test_parse_plan_of_no_plan_is_empty() -> None:
    assert parse_plan("") == []
    assert parse_plan("Some prose without tables.\n") == []


def test_table_followed_by_prose_and_recommendation_lists() -> None:
    prose = "This paragraph is ordinary prose that runs over the full width of the page, as here."
    text = "\n".join(
        [
            "National Human Rights Action Plan of Kazakhstan for 2009-2012",
            "",
            "Rights of Testers",
            "",
            "No. Action Deadline Executors",
            "1. Hold a seminar",
            "",
            "2010 Ministry of Justice",
            "",
            prose,
            "",
            "Based on the above, we recommend that the Government implement the following:",
            "",
            "1. In 2011, ratify the Convention.",
            "2. Establish shelters.",
            "",
            "In 2012, adopt the Law on shelters.",
            "",
            "In the Field of Education:",
            "",
            "1. Revise the curricula, as adopted in 2004.",
            "2. Before the adoption of the law,",
            "",
            "train teachers in the 3rd quarter of 2010.",
            "",
            "Conclusion",
            "",
            "3. In 2012 everything was done.",
        ]
    )
    actions = parse_plan(text)
    assert [(a.section, a.subsection, a.number, a.deadline.due) for a in actions] == [
        ("actions", None, "1", date(2010, 12, 31)),
        ("recommendations", None, "1", date(2011, 12, 31)),
        ("recommendations", None, "2", date(2012, 12, 31)),  # from its second paragraph
        # the second list: a past year only, kept and flagged
        ("recommendations", "In the Field of Education", "1", None),
        # an item over a blank line
        ("recommendations", "In the Field of Education", "2", date(2010, 9, 30)),
    ]
    assert actions[3].deadline.needs_deadline
    assert [e.name for e in actions[0].executors] == ["Ministry of Justice"]
    assert actions[0].executors_text == "Ministry of Justice"
    assert {a.chapter for a in actions} == {"Rights of Testers"}
    assert "Field of Education" not in actions[2].text


def test_list_heading_at_a_page_top_without_a_blank_line() -> None:
    text = "\n".join(
        [
            "Rights of Testers",
            "",
            "We recommend that the Government implement the following in 2009-2012:",
            "",
            "1. Revise the rules before 2011.",
            "2. Recognize children as unable to work up to the age of 18 years.",
            " In the Field of Educational Legislation:",
            "",
            "1. In 2012, ratify the Convention against Discrimination in Education.",
        ]
    )
    actions = parse_plan(text)
    assert [(a.subsection, a.number) for a in actions] == [
        (None, "1"),
        ("In the Field of Educational Legislation", "1"),
    ]
    assert actions[1].deadline.due == date(2012, 12, 31)

