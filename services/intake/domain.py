"""Intake's pure logic: turn posted items into recommendation events, or say what is wrong.

Nothing here does I/O. Errors name the field as the client wrote it (`items[3].review_date`,
`row 7: review_date`), never pydantic's internal union branches.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from shared.deadlines import Deadline
from shared.events import (
    DueDate,
    RecommendationEvent,
    Source,
    deadline_json,
    due_dates_json,
    executors_json,
    latest_per_key,
)
from shared.executors import Executor
from shared.ids import random_uuid
from shared.inputs import json_depth_exceeded, utf8_text
from shared.plan_parser import PlanAction
from shared.recommendations import RECOMMENDATION_ADAPTER, event_content

SOURCES = ("upr", "treaty_body", "plan")
MAX_JSON_DEPTH = 32


class BadRequest(ValueError):
    """The request as a whole is unusable (not JSON, not UTF-8, too deep): answered 400."""


@dataclass(frozen=True)
class Rejection:
    """One item or row refused, with where it was and every reason."""

    index: int
    errors: list[dict[str, Any]]
    label: str = "index"
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def reason(self) -> str:
        return "; ".join(f"{e['field']}: {e['message']}" for e in self.errors[:10])

    def as_dict(self) -> dict[str, Any]:
        return {self.label: self.index, **dict(self.extra), "reason": self.reason,
                "errors": self.errors}


# --- error messages ---------------------------------------------------------------------------

# Names pydantic gives union branches in error locations ("deadline.DeadlineIn",
# "executors.list[Executor]", "deadline.str"): not fields, so left out of the path.
_BRANCH_NAMES = frozenset({"str", "int", "float", "bool", "date", "none", "dict", "list"})


def _is_branch(part: str) -> bool:
    return part in _BRANCH_NAMES or part[:1].isupper() or any(c in part for c in "[-")


def _path(loc: Sequence[Any], prefix: str) -> str:
    parts = list(loc)
    if parts and parts[0] in SOURCES:  # the discriminated union's tag
        parts = parts[1:]
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _is_branch(str(part)):
            out += ("." if out else "") + str(part)
    return out or "body"


def _message(error: dict[str, Any]) -> str:
    kind = error.get("type")
    if kind == "union_tag_invalid":
        got = (error.get("ctx") or {}).get("tag")
        return f"must be one of {', '.join(SOURCES)} (got {got!r})"
    if kind == "union_tag_not_found":
        return f"field required: one of {', '.join(SOURCES)}"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "model_attributes_type":
        return "must be a JSON object (a recommendation)"
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def describe_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, Any]]:
    """Pydantic errors as [{field, message, type}], one per field and message."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        kind = str(error.get("type", "value_error"))
        if kind.startswith("union_tag"):
            loc = [*loc, "source"]
        field, message = _path(loc, prefix), _message(dict(error))
        if (field, message) in seen:
            continue
        seen.add((field, message))
        out.append({"field": field, "message": message, "type": kind})
    return out


# --- JSON bodies ------------------------------------------------------------------------------


def decode_utf8(body: bytes, what: str = "body") -> str:
    """The body as text; BadRequest naming the first byte that is not UTF-8 and its line."""
    try:
        return utf8_text(body, what)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def parse_json_body(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    text = decode_utf8(body)
    if not text or text.isspace():
        raise BadRequest("body is empty: expected a JSON recommendation or {\"items\": [...]}")
    try:
        # Not orjson: it reads integers past 64 bits as floats (another value) and refuses
        # lone surrogates, which are answered 422 naming the field.
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:  # the C decoder gives up on absurd nesting
        raise BadRequest(f"body is nested deeper than {max_depth} levels") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise BadRequest(f"body is not usable JSON: {exc}") from exc
    if json_depth_exceeded(value, max_depth):
        raise BadRequest(f"body is nested deeper than {max_depth} levels")
    return value


@dataclass(frozen=True)
class Envelope:
    """What a POST /v1/recommendations body holds: one item, or a batch."""

    items: list[Any]
    batch: bool


def envelope(raw: Any) -> Envelope:
    """{"items": [...]} is a batch; any other object is one recommendation."""
    if isinstance(raw, dict) and "source" not in raw and "items" in raw:
        unknown = sorted(set(raw) - {"items"})
        if unknown:
            raise BatchError(f"{unknown[0]}: unknown field (a batch is {{\"items\": [...]}})")
        if not isinstance(raw["items"], list):
            raise BatchError("items: must be a list of recommendations")
        if not raw["items"]:
            raise BatchError("items: must not be empty")
        return Envelope(raw["items"], batch=True)
    if isinstance(raw, list):
        raise BatchError('body: a batch must be {"items": [...]}, not a bare list')
    return Envelope([raw], batch=False)


class BatchError(ValueError):
    """The batch envelope is wrong (answered 422 naming the field)."""


# --- events -----------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, kw_only=True)
class Submission:
    """One recommendation's event as intake publishes it on `recommendations`.

    It has RecommendationEvent's fields (names, types, defaults and order) and writes the
    same JSON; the unit tests hold it to both. Intake builds these instead of the pydantic
    model because validating again what `event_content` has just built from validated
    input, only to write it out, cost about as much as validating the input itself.
    """

    schema_version: Literal[1] = 1
    event_id: uuid.UUID = field(default_factory=random_uuid)
    occurred_at: datetime = field(default_factory=_now)
    type: Literal["recommendation.submitted"] = "recommendation.submitted"
    recommendation_id: uuid.UUID
    content_hash: str
    source: Source
    reference: str
    natural_key: list[str]
    text: str
    deadline: Deadline
    due_dates: list[DueDate]
    executors: list[Executor]
    payload: dict[str, Any]
    submitted_by: str

    def to_json(self) -> bytes:
        """What `self.to_event().model_dump_json()` writes, written by orjson (a third of
        the time): UUIDs, dates, the UTC time with a Z, enums by value and strings come
        out alike, and the JSON-mode payload as it is."""
        return orjson.dumps({
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "occurred_at": self.occurred_at,
            "type": self.type,
            "recommendation_id": self.recommendation_id,
            "content_hash": self.content_hash,
            "source": self.source,
            "reference": self.reference,
            "natural_key": self.natural_key,
            "text": self.text,
            "deadline": deadline_json(self.deadline),
            "due_dates": due_dates_json(self.due_dates),
            "executors": executors_json(self.executors),
            "payload": self.payload,
            "submitted_by": self.submitted_by,
        }, option=orjson.OPT_UTC_Z)

    def to_event(self) -> RecommendationEvent:
        return RecommendationEvent(**{f.name: getattr(self, f.name) for f in fields(self)})


# --- validation -------------------------------------------------------------------------------


def validate_item(raw: Any, *, submitted_by: str, prefix: str = "") -> Submission:
    """The event for one posted item; raises ItemInvalid naming each field."""
    try:
        content = event_content(RECOMMENDATION_ADAPTER.validate_python(raw))
    except ValidationError as exc:
        raise ItemInvalid(describe_errors(exc, prefix)) from exc
    return Submission(**content, submitted_by=submitted_by)


class ItemInvalid(ValueError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors[:10]))
        self.errors = errors


def validate_items(
    items: Sequence[Any],
    *,
    submitted_by: str,
    prefix: str = "items",
    label: str = "index",
    first_index: int = 0,
    extras: Sequence[tuple[tuple[str, Any], ...]] | None = None,
) -> tuple[list[Submission], list[Rejection]]:
    """Events for the valid items, rejections (with index and reasons) for the others."""
    events: list[Submission] = []
    rejections: list[Rejection] = []
    for offset, raw in enumerate(items):
        index = first_index + offset
        path = f"{prefix}[{index}]" if prefix else ""
        try:
            events.append(validate_item(raw, submitted_by=submitted_by, prefix=path))
        except ItemInvalid as exc:
            rejections.append(
                Rejection(index, exc.errors, label, extras[offset] if extras else ())
            )
    return events, rejections


def item_source(raw: Any) -> str:
    """The item's source as a bounded metrics label."""
    source = raw.get("source") if isinstance(raw, dict) else None
    return source if source in SOURCES else "unknown"


def deduplicate(events: Iterable[Submission]) -> list[Submission]:
    """Within one request the last version of a recommendation wins (per-key order is kept)."""
    events = list(events)
    if len({e.recommendation_id for e in events}) == len(events):
        return events  # the usual case: every recommendation once
    return latest_per_key(events, lambda e: e.recommendation_id)


def unique_ids(events: Iterable[Submission]) -> list[str]:
    return list(dict.fromkeys(str(e.recommendation_id) for e in events))


# --- the National Plan ------------------------------------------------------------------------


def plan_item(action: PlanAction, plan: str | None = None) -> dict[str, Any]:
    """A parsed plan action as a posted plan recommendation: deadline and executors as
    written, so the payload keeps the document's words and intake parses them once more
    by the same rules."""
    item: dict[str, Any] = {
        "source": "plan",
        "plan": plan or action.plan,
        "plan_title": action.plan_title,
        "chapter": action.chapter,
        "section": action.section,
        "number": action.number,
        "text": action.text,
    }
    if action.plan_period != (0, 0):
        item["plan_period"] = list(action.plan_period)
    if action.subsection:
        item["subsection"] = action.subsection
    if action.deadline.text:
        item["deadline"] = action.deadline.text
    if action.executors_text:
        item["executors"] = action.executors_text
    return item
