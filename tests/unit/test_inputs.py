"""What the edges refuse (shared.inputs, shared.web.read_json) and how it is named."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from services.intake.domain import validate_items
from shared.inputs import IsoDate, text_problem, unstorable
from shared.web import ProblemError, _without_null, read_json


@pytest.mark.parametrize(("text", "problem"), [
    ("plain", None),
    ("Қазақстан Республикасы — ok", None),
    ("a\x00b", "must not contain NUL characters (\\u0000, first at position 1)"),
    ("ab\ud800", "is not valid Unicode: lone surrogate \\ud800 at position 2"),
])
def test_text_problem(text: str, problem: str | None) -> None:
    assert text_problem(text) == problem


def test_unstorable_names_every_path_in_document_order() -> None:
    value = {"name": "ok", "aliases": ["MoJ", "Mo\x00J"], "nested": [{"x": "\ud800"}],
             "bad\x00key": 1, "n": 5}
    found = unstorable(value)
    assert [path for path, _ in found] == [(), ("aliases", 1), ("nested", 0, "x")]
    assert found[0][1].startswith("an object key must not contain NUL")


def test_unstorable_stops_at_its_limit() -> None:
    assert len(unstorable(["\x00"] * 100, limit=20)) == 20


@pytest.mark.parametrize("value", [0, "0", 1700000000, "2010-2-3", "12/03/2010", True, None])
def test_iso_date_refuses_what_is_not_written_yyyy_mm_dd(value: Any) -> None:
    with pytest.raises(ValidationError, match="YYYY-MM-DD|valid date"):
        TypeAdapter(IsoDate).validate_python(value)


def test_iso_date_takes_dates() -> None:
    adapter = TypeAdapter(IsoDate)
    assert adapter.validate_python("2010-02-12") == date(2010, 2, 12)
    assert adapter.validate_python(date(2010, 2, 12)) == date(2010, 2, 12)
    assert adapter.json_schema() == {"format": "date", "type": "string"}


def test_recommendation_text_with_nul_is_rejected_at_its_path() -> None:
    items = [{"source": "plan", "plan": "P", "chapter": "C\x00", "number": "1", "text": "t",
              "executors": [{"name": "Mo\x00J", "role": "lead"}]},
             {"source": "plan", "plan": "P", "chapter": "C", "number": "2", "text": "fine"}]
    events, rejections = validate_items(items, submitted_by="test")
    assert len(events) == 1
    assert [e["field"] for e in rejections[0].errors] == [
        "items[0].chapter", "items[0].executors[0].name"]
    assert {e["type"] for e in rejections[0].errors} == {"string_unstorable"}


@pytest.mark.parametrize(("items", "field", "message"), [
    ([{"source": "upr", "state": "KAZ", "cycle": "1", "paragraph": "1.2",
       "review_date": "2010-02-12", "text": "t"}], "items[0].cycle", "valid integer"),
    ([{"source": "treaty_body", "state": "KAZ", "committee": "CAT", "symbol": "S",
       "paragraph": "1", "adopted": "2014-11-21", "text": "t", "follow_up": 0}],
     "items[0].follow_up", "valid boolean"),
    ([{"source": "plan", "plan": "P", "chapter": "C", "number": "1", "text": "t",
       "deadline": {"due": "2011-12-31", "start": 0}}], "items[0].deadline.start",
     "YYYY-MM-DD"),
])
def test_json_types_are_strict(items: list[Any], field: str, message: str) -> None:
    events, rejections = validate_items(items, submitted_by="test")
    assert not events
    error = next(e for e in rejections[0].errors if e["field"] == field)
    assert message in error["message"]


@pytest.mark.parametrize(("body", "status", "detail"), [
    (b'{"a": "caf\xe9"}', 400, "body is not UTF-8: byte 0xe9 at offset 10 (line 1)"),
    (b'{"a": 1,\n x}', 400, "body is not valid JSON: Expecting property name enclosed in "
                           "double quotes at line 2 column 2"),
    (b"[" * 33 + b"]" * 33, 400, "body is nested deeper than 32 levels"),
    (b"[" * 50_000 + b"]" * 50_000, 400, "body is nested deeper than 32 levels"),
    (b'{"a": ["ok", "x\\u0000"]}', 422, "a[1]: must not contain NUL characters"),
])
def test_read_json_refuses_with_what_and_where(body: bytes, status: int, detail: str) -> None:
    with pytest.raises(ProblemError) as refused:
        read_json(body)
    assert refused.value.status_code == status
    assert str(refused.value.detail).startswith(detail)


def test_read_json_reads_json_and_drops_a_byte_order_mark() -> None:
    assert read_json('\ufeff{"a": [1, "é"]}'.encode()) == {"a": [1, "é"]}


@pytest.mark.parametrize(("schema", "simplified"), [
    ({"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}], "title": "Q",
      "default": None}, {"type": "string", "maxLength": 5, "title": "Q"}),
    ({"anyOf": [{"$ref": "#/components/schemas/Source"}, {"type": "null"}]},
     {"$ref": "#/components/schemas/Source"}),
    ({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
     {"anyOf": [{"type": "string"}, {"type": "integer"}]}),
    ({"type": "integer", "default": 0}, {"type": "integer", "default": 0}),
])
def test_parameters_are_documented_without_null(schema: dict[str, Any],
                                                 simplified: dict[str, Any]) -> None:
    assert _without_null(schema) == simplified
