"""Intake's pure logic: bodies, error messages naming the field, plan actions as items."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC
from functools import cache
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from services.intake.domain import (
    BadRequest,
    BatchError,
    ItemInvalid,
    Submission,
    deduplicate,
    envelope,
    parse_json_body,
    plan_item,
    unique_ids,
    validate_item,
    validate_items,
)
from shared.events import RecommendationEvent
from shared.plan_parser import PlanAction, parse_plan

PLAN_FILE = Path(__file__).resolve().parents[2] / "data" / "national-action-plan-2009-2012.txt"

UPR: dict[str, Any] = {"source": "upr", "state": "KAZ", "cycle": 2, "paragraph": "97.12",
                       "review_date": "2014-10-30", "text": "Ratify."}


@cache
def plan_actions() -> tuple[PlanAction, ...]:
    return tuple(parse_plan(PLAN_FILE.read_text(encoding="utf-8")))


def test_batch_errors_name_the_item_and_field() -> None:
    items = [UPR, {**UPR, "paragraph": "1"}, {**UPR, "paragraph": "2"},
             {k: v for k, v in UPR.items() if k != "review_date"}]
    events, rejections = validate_items(items, submitted_by="t")
    assert len(events) == 3
    assert [r.as_dict()["index"] for r in rejections] == [3]
    assert rejections[0].reason == "items[3].review_date: Field required"


def test_union_branch_names_are_not_part_of_the_path() -> None:
    with pytest.raises(ItemInvalid) as caught:
        validate_item({**UPR, "deadline": 5, "executors": 7}, submitted_by="t")
    fields = {e["field"] for e in caught.value.errors}
    assert fields == {"deadline", "executors"}


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({**UPR, "source": "ngo"}, "source", "must be one of upr, treaty_body, plan (got 'ngo')"),
        ({"text": "x"}, "source", "field required: one of upr, treaty_body, plan"),
        ({**UPR, "colour": "red"}, "colour", "unknown field"),
        (5, "body", "must be a JSON object (a recommendation)"),
        ({**UPR, "cycle": "two"}, "cycle", "Input should be a valid integer"),
        ({**UPR, "review_date": "2014-02-30"}, "review_date", "Input should be a valid date"),
        ({**UPR, "themes": "torture"}, "themes", "Input should be a valid list"),
        ({**UPR, "response": "maybe"}, "response", "Input should be 'supported'"),
    ],
)
def test_single_item_errors(raw: Any, field: str, message: str) -> None:
    with pytest.raises(ItemInvalid) as caught:
        validate_item(raw, submitted_by="t")
    assert any(e["field"] == field and e["message"].startswith(message)
               for e in caught.value.errors), caught.value.errors


def test_rejections_of_a_csv_are_rows() -> None:
    _, rejections = validate_items([{**UPR, "cycle": "x"}], submitted_by="t", prefix="",
                                   label="row", first_index=2)
    assert rejections[0].as_dict()["row"] == 2
    assert rejections[0].errors[0]["field"] == "cycle"


def test_json_body_errors() -> None:
    with pytest.raises(BadRequest, match=r"not UTF-8: byte 0xff at offset 10 \(line 1\)"):
        parse_json_body(b'{"text": "\xff"}')
    with pytest.raises(BadRequest, match="not valid JSON: Expecting value at line 1 column 1"):
        parse_json_body(b"hello")
    with pytest.raises(BadRequest, match="empty"):
        parse_json_body(b"  ")
    with pytest.raises(BadRequest, match="nested deeper than 32 levels"):
        parse_json_body(json.dumps({"items": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]
                                                 ]]]]]]]]]]]}).encode())
    with pytest.raises(BadRequest, match="nested deeper"):
        parse_json_body(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(BadRequest, match="not usable JSON: Exceeds the limit"):
        parse_json_body(b'{"cycle": ' + b"1" * 5000 + b"}")
    assert parse_json_body("\ufeff{\"a\": 1}".encode()) == {"a": 1}


def test_envelope() -> None:
    assert envelope(UPR).batch is False
    assert envelope({"items": [UPR]}).items == [UPR]
    with pytest.raises(BatchError, match="^extra: unknown field"):
        envelope({"items": [UPR], "extra": 1})
    with pytest.raises(BatchError, match="^items: must be a list"):
        envelope({"items": {"a": 1}})
    with pytest.raises(BatchError, match="^items: must not be empty"):
        envelope({"items": []})
    with pytest.raises(BatchError, match="not a bare list"):
        envelope([UPR])


def test_within_a_request_the_last_version_wins() -> None:
    events, _ = validate_items([UPR, {**UPR, "text": "Changed."}], submitted_by="t")
    kept = deduplicate(events)
    assert [e.text for e in kept] == ["Changed."]
    assert unique_ids(events) == [str(events[0].recommendation_id)]


def test_every_plan_action_becomes_a_valid_item_with_the_same_deadline_and_executors() -> None:
    actions = plan_actions()
    events, rejections = validate_items([plan_item(a) for a in actions], submitted_by="t")
    assert rejections == []
    assert len({e.recommendation_id for e in events}) == len(actions) == 74
    for action, ev in zip(actions, events, strict=True):
        assert ev.deadline.model_dump(exclude={"text"}) == action.deadline.model_dump(
            exclude={"text"}), (action.chapter, action.number)
        assert ev.executors == action.executors
        assert ev.payload["chapter"] == action.chapter
        assert ev.payload["plan_title"] == action.plan_title
        assert ev.payload["plan_period"] == [2009, 2012]


def test_plan_id_can_be_overridden() -> None:
    item = plan_item(plan_actions()[0], "MY-PLAN")
    assert item["plan"] == "MY-PLAN"
    assert item["executors"].startswith("Ministry of Justice")  # as written


def test_within_a_request_each_recommendation_once_in_the_order_of_its_last_version() -> None:
    items = [UPR, {**UPR, "paragraph": "1"}, {**UPR, "text": "Changed."}, {**UPR, "paragraph": "2"}]
    events, _ = validate_items(items, submitted_by="t")
    assert [(e.payload["paragraph"], e.text) for e in deduplicate(events)] == [
        ("1", "Ratify."), ("97.12", "Changed."), ("2", "Ratify.")]
    distinct = events[1:]
    assert deduplicate(distinct) == distinct


# --- the event intake publishes ---------------------------------------------------------------


def test_a_submission_has_the_fields_of_a_recommendation_event() -> None:
    fields = {f.name: f for f in dataclasses.fields(Submission)}
    types = get_type_hints(Submission)
    assert list(fields) == list(RecommendationEvent.model_fields)  # names and order
    for name, model_field in RecommendationEvent.model_fields.items():
        assert types[name] == model_field.annotation, name
        if model_field.default_factory is not None:
            assert fields[name].default_factory is not dataclasses.MISSING, name
        elif not model_field.is_required():
            assert fields[name].default == model_field.default, name
    sub = submissions()[0]
    assert sub.event_id != submissions()[0].event_id  # each submission is its own event
    assert sub.occurred_at.tzinfo is UTC


def submissions() -> list[Submission]:
    """Every source, every kind of deadline and executors, texts JSON must escape."""
    items = [plan_item(a) for a in plan_actions()]
    items += [UPR, {**UPR, "paragraph": "3", "deadline": "Yearly", "executors": "MoJ"},
              {"source": "treaty_body", "state": "KAZ", "committee": "CAT", "symbol": "S/1",
               "paragraph": "15", "sub_paragraph": "a", "adopted": "2014-11-21",
               "text": "Line\nbreak \"quoted\" \\ tab\t \u0416\u0443\u0441 \U0001f600 \x7f",
               "follow_up": True, "follow_up_due": "2015-11-28", "follow_up_grade": "B",
               "next_report_due": "2018-11-28", "themes": ["a\u2028b"],
               "executors": [{"name": "\u041c\u0438\u043d\u044e\u0441\u0442", "role": "co"}]},
              {"source": "plan", "plan": "P", "chapter": "C", "number": "1", "text": "t",
               "deadline": {"due": "2011-03-31", "start": "2011-01-01"}},
              {"source": "plan", "plan": "P", "chapter": "C", "number": "2", "text": "t",
               "deadline": "as soon as possible"}]
    events, rejections = validate_items(items, submitted_by="coordinator \u00e9")
    assert rejections == []
    return events


def test_a_submission_writes_what_the_event_model_writes() -> None:
    for sub in submissions():
        event = sub.to_event()
        assert sub.to_json() == event.model_dump_json().encode()
        assert RecommendationEvent.model_validate_json(sub.to_json()) == event
