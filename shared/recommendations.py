"""Recommendations as coordinators post them, and their normalization into events.

One pydantic model per source, discriminated by `source` (DESIGN.md sections 1 and 6).
Normalization is pure: it derives the deterministic id from the natural key, the parsed
deadline and due dates and the executors. The content hash of the validated payload is the
version identity: intake is stateless, the tracker numbers the versions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal, TypedDict

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.deadlines import Deadline, parse_deadline, upr_derived_deadlines
from shared.events import DueDate, DueKind, RecommendationEvent, Source
from shared.executors import Executor, parse_executors
from shared.ids import recommendation_id
from shared.inputs import IsoDate, unstorable

ShortText = Annotated[str, Field(min_length=1, max_length=500)]


class UprResponse(StrEnum):
    SUPPORTED = "supported"
    SUPPORTED_IN_PART = "supported_in_part"
    NOTED = "noted"


class Committee(StrEnum):
    CCPR = "CCPR"
    CESCR = "CESCR"
    CAT = "CAT"
    CEDAW = "CEDAW"
    CRC = "CRC"
    CERD = "CERD"
    CRPD = "CRPD"
    CMW = "CMW"
    CED = "CED"


class DeadlineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    due: IsoDate
    start: IsoDate | None = None

    @model_validator(mode="after")
    def _start_before_due(self) -> DeadlineIn:
        if self.start and self.start > self.due:
            raise ValueError("deadline start must not be after its due date")
        return self


# Numbers, booleans and dates as JSON types (StrictInt, StrictBool, IsoDate): the lax
# coercions ("1" as 1, 0 as false or as 1970-01-01) would accept what the documented schema
# refuses. CSV cells are converted to these types by the importer first.
class _RecommendationBase(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    text: str = Field(min_length=1, max_length=20_000, description="The recommendation's text")
    executors: list[Executor] | Annotated[str, Field(max_length=5_000)] | None = Field(
        default=None, description="A list of {name, role}, or the executors text as written"
    )
    deadline: DeadlineIn | Annotated[str, Field(max_length=500)] | None = Field(
        default=None, description="The deadline as written, or {due, start}"
    )
    themes: list[ShortText] = Field(default_factory=list, max_length=50)
    affected_groups: list[ShortText] = Field(
        default_factory=list, max_length=50, description="e.g. women, children, migrants"
    )

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        # Every string, nested ones and keys included, each error at its own path: a NUL
        # would otherwise only fail in the tracker's PostgreSQL, after a 202 (shared.inputs).
        found = unstorable(data) if isinstance(data, dict) and not _surely_storable(data) else []
        if found:
            raise ValidationError.from_exception_data(cls.__name__, [
                InitErrorDetails(type=PydanticCustomError("string_unstorable", problem),
                                 loc=path, input=data)
                for path, problem in found])
        return data


def _surely_storable(data: dict[str, Any]) -> bool:
    """True when no string in `data` can hold a NUL or a lone surrogate; False means look.

    One orjson encoding (about a tenth of the cost of walking the strings in Python) decides
    it: orjson refuses lone surrogates and writes NUL as the escape `\\u0000`. Anything it
    cannot encode, or any such escape (even a harmless literal backslash-u0000), falls back
    to `unstorable`, which then finds and names each problem as before.
    """
    try:
        return b"\\u0000" not in orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError included
        return False


StateCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3")]


class UprRecommendation(_RecommendationBase):
    """A recommendation of the Universal Periodic Review; key: state, cycle, paragraph."""

    source: Literal["upr"]
    state: StateCode
    cycle: StrictInt = Field(ge=1, le=20, description="UPR cycle (1 = 2008-2011)")
    session: StrictInt | None = Field(default=None, ge=1, le=200,
                                      description="Working-group session")
    review_date: IsoDate = Field(description="Date of the review in the working group")
    symbol: ShortText | None = Field(default=None, description="Report symbol, e.g. A/HRC/14/10")
    paragraph: Annotated[
        str,
        Field(min_length=1, max_length=20, pattern=r"^\d+(\.\d+)*$",
              description="Paragraph of the report, e.g. 97.12"),
    ]
    recommending_states: list[ShortText] = Field(default_factory=list, max_length=200)
    response: UprResponse | None = Field(
        default=None, description="The state's response: supported, supported_in_part, noted"
    )
    sdgs: list[Annotated[StrictInt, Field(ge=1, le=17)]] = Field(
        default_factory=list, max_length=17, description="Sustainable Development Goals 1-17"
    )

    def natural_key(self) -> list[str]:
        return ["upr", self.state, str(self.cycle), self.paragraph]

    def reference(self) -> str:
        return f"{self.state} / cycle {self.cycle} / {self.paragraph}"


class TreatyBodyRecommendation(_RecommendationBase):
    """A treaty body's concluding observation; key: committee, symbol, paragraph(, sub)."""

    source: Literal["treaty_body"]
    state: StateCode
    committee: Committee
    symbol: ShortText = Field(description="Document symbol, e.g. CAT/C/KAZ/CO/3")
    paragraph: Annotated[str, Field(min_length=1, max_length=20)]
    sub_paragraph: Annotated[str, Field(max_length=20)] | None = Field(
        default=None, description="e.g. (a)"
    )
    adopted: IsoDate = Field(description="Adoption date of the concluding observations")
    follow_up: StrictBool = Field(
        default=False, description="The committee asked for a follow-up report on it"
    )
    # Checked field by field (not on the whole model) so an error names the field.
    follow_up_due: IsoDate | None = Field(
        default=None, validate_default=True, description="Due date of the follow-up report"
    )
    follow_up_grade: Literal["A", "B", "C", "D", "E"] | None = Field(
        default=None, description="The committee's assessment of the follow-up, A-E"
    )
    next_report_due: IsoDate | None = Field(
        default=None, validate_default=True, description="Due date of the next periodic report"
    )

    @field_validator("follow_up_due")
    @classmethod
    def _follow_up_due(cls, value: date | None, info: ValidationInfo) -> date | None:
        if value is None and info.data.get("follow_up"):
            raise ValueError("required when follow_up is true")
        adopted = info.data.get("adopted")
        if value and adopted and value < adopted:
            raise ValueError(f"must not be before the adoption date {adopted.isoformat()}")
        return value

    @field_validator("next_report_due")
    @classmethod
    def _next_report_due(cls, value: date | None, info: ValidationInfo) -> date | None:
        adopted = info.data.get("adopted")
        if value and adopted and value < adopted:
            raise ValueError(f"must not be before the adoption date {adopted.isoformat()}")
        return value

    def natural_key(self) -> list[str]:
        return ["treaty_body", self.committee.value, self.symbol, self.paragraph,
                self.sub_paragraph or ""]

    def reference(self) -> str:
        para = self.paragraph + (f"({self.sub_paragraph})" if self.sub_paragraph else "")
        return f"{self.committee.value} / {self.symbol} / {para}"


Year = Annotated[StrictInt, Field(ge=1900, le=2100)]


class PlanRecommendation(_RecommendationBase):
    """An action of a National Plan; key: plan, chapter, table or list, number."""

    source: Literal["plan"]
    plan: ShortText = Field(description="Plan id, e.g. NHRAP-2009-2012")
    plan_title: ShortText | None = None
    plan_period: tuple[Year, Year] | None = Field(
        default=None, description="[first year, last year]; 'Yearly' recurs over it"
    )
    chapter: ShortText = Field(description="The chapter (the right concerned)")
    section: Literal["actions", "recommendations"] = Field(
        default="actions", description="The chapter's action table, or its recommendation lists"
    )
    subsection: ShortText | None = Field(
        default=None, description="Heading of a chapter's second or later recommendation list"
    )
    number: Annotated[str, Field(min_length=1, max_length=20)]

    @field_validator("plan_period")
    @classmethod
    def _period_ordered(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value and value[0] > value[1]:
            raise ValueError("must be [first year, last year]")
        return value

    def natural_key(self) -> list[str]:
        # The subsection only when there is one, so ids of first lists and tables stay put.
        sub = [self.subsection] if self.subsection else []
        return ["plan", self.plan, self.chapter, self.section, *sub, self.number]

    def reference(self) -> str:
        kind = "action" if self.section == "actions" else "recommendation"
        sub = f" / {self.subsection}" if self.subsection else ""
        return f"{self.plan} / {self.chapter}{sub} / {kind} {self.number}"


RecommendationIn = Annotated[
    UprRecommendation | TreatyBodyRecommendation | PlanRecommendation,
    Field(discriminator="source"),
]
RECOMMENDATION_ADAPTER: TypeAdapter[
    UprRecommendation | TreatyBodyRecommendation | PlanRecommendation
] = TypeAdapter(RecommendationIn)

AnyRecommendation = UprRecommendation | TreatyBodyRecommendation | PlanRecommendation


def _plan_period(rec: AnyRecommendation) -> tuple[int, int] | None:
    if isinstance(rec, PlanRecommendation):
        return rec.plan_period
    return None


def normalized_deadline(rec: AnyRecommendation) -> Deadline:
    if isinstance(rec.deadline, DeadlineIn):
        return _deadline(rec.deadline.due.isoformat(), rec.deadline.start, rec.deadline.due)
    if isinstance(rec.deadline, str) and rec.deadline:
        return _parsed_deadline(rec.deadline, _plan_period(rec))
    if isinstance(rec, TreatyBodyRecommendation) and rec.follow_up_due:
        return _deadline("follow-up", rec.adopted, rec.follow_up_due)
    if isinstance(rec, UprRecommendation):
        return _mid_term_deadline(rec.review_date)
    if isinstance(rec, TreatyBodyRecommendation) and rec.next_report_due:
        return _deadline("next periodic report", rec.adopted, rec.next_report_due)
    return _NO_DEADLINE  # rec.deadline is None or "" here


def due_dates(rec: AnyRecommendation, deadline: Deadline) -> list[DueDate]:
    """Every date this recommendation is due on (DESIGN.md section 2)."""
    review_date = follow_up_due = next_report_due = None
    if isinstance(rec, UprRecommendation):
        review_date = rec.review_date
    elif isinstance(rec, TreatyBodyRecommendation):
        follow_up_due = rec.follow_up_due if rec.follow_up else None
        next_report_due = rec.next_report_due
    return list(_due_dates(deadline.recurrence, deadline.start, deadline.due,
                           review_date, follow_up_due, next_report_due))


# Deadlines and due dates are frozen values that a batch repeats over and over (the same
# review date, the same follow-up date, the same quarter): each is built once, by its inputs.
_CACHE_SIZE = 4096
_NO_DEADLINE = Deadline(text="", start=None, due=None, needs_deadline=True)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _deadline(text: str, start: date | None, due: date) -> Deadline:
    return Deadline(text=text, start=start, due=due)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _mid_term_deadline(review_date: date) -> Deadline:
    mid_term = upr_derived_deadlines(review_date)["mid_term"]
    return Deadline(text="mid-term report", start=review_date, due=mid_term)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _due_dates(
    recurrence: str | None, start: date | None, due: date | None,
    upr_review_date: date | None, follow_up_due: date | None, next_report_due: date | None,
) -> tuple[DueDate, ...]:
    dates: list[DueDate] = []
    if recurrence == "yearly":
        first, last = (start.year if start else None, due.year if due else None)
        if first and last:
            dates += [DueDate(kind=DueKind.DEADLINE, due=date(y, 12, 31), start=date(y, 1, 1))
                      for y in range(first, last + 1)]
    elif due:
        dates.append(DueDate(kind=DueKind.DEADLINE, due=due, start=start))
    if upr_review_date:
        derived = upr_derived_deadlines(upr_review_date)
        dates.append(DueDate(kind=DueKind.MID_TERM, due=derived["mid_term"]))
        dates.append(DueDate(kind=DueKind.NEXT_REVIEW, due=derived["next_review"]))
    if follow_up_due:
        dates.append(DueDate(kind=DueKind.FOLLOW_UP, due=follow_up_due))
    if next_report_due:
        dates.append(DueDate(kind=DueKind.NEXT_REPORT, due=next_report_due))
    # One entry per date: when the own deadline was derived from the mid-term report or the
    # follow-up date, that obligation is listed (and reminded) once, under its own name.
    unique: dict[date, DueDate] = {}
    for d in sorted(dates, key=lambda d: d.kind is DueKind.DEADLINE):
        unique.setdefault(d.due, d)
    return tuple(sorted(unique.values(), key=lambda d: (d.due, d.kind)))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parsed_executors(text: str) -> tuple[Executor, ...]:
    # A batch repeats the same executors text over many rows; parsing is the costly part of
    # validation, and Executor is frozen, so the parse is shared.
    return tuple(parse_executors(text))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parsed_deadline(text: str, plan_period: tuple[int, int] | None) -> Deadline:
    return parse_deadline(text, plan_period=plan_period)


def normalized_executors(rec: AnyRecommendation) -> list[Executor]:
    if isinstance(rec.executors, str):
        return list(_parsed_executors(rec.executors))
    return list(rec.executors or [])


# Dates and dataclasses go to the fallback: json writes them with str(), orjson otherwise.
_SORTED_JSON = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                | orjson.OPT_PASSTHROUGH_DATACLASS)


def canonical_json(payload: dict[str, Any]) -> bytes:
    """A JSON-mode payload as `json.dumps(payload, sort_keys=True, separators=(",", ":"),
    default=str)` writes it (ASCII, non-ASCII escaped), which content hashes are taken of.

    orjson writes the same bytes whenever its output is printable ASCII: same separators,
    key order and escapes of quotes, backslashes and control characters; payloads hold no
    floats (the models have none). Otherwise (non-ASCII text, which json escapes and orjson
    does not; DEL; a type orjson would write differently from str()), the json module does.
    """
    try:
        fast = orjson.dumps(payload, option=_SORTED_JSON)
    except TypeError:  # orjson.JSONEncodeError included: not a type it writes as json does
        fast = b""
    if fast and fast.isascii() and b"\x7f" not in fast:
        return fast
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def content_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(payload)).hexdigest()


class EventContent(TypedDict):
    """What a RecommendationEvent says about its recommendation (its fields of that name)."""

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


def event_content(rec: AnyRecommendation) -> EventContent:
    """The normalized recommendation: id, content hash, deadline, due dates, executors."""
    payload = rec.model_dump(mode="json")
    deadline = normalized_deadline(rec)
    natural_key = rec.natural_key()
    return {
        "recommendation_id": recommendation_id(*natural_key),
        "content_hash": content_hash(payload),
        "source": Source(rec.source),
        "reference": rec.reference(),
        "natural_key": natural_key,
        "text": rec.text,
        "deadline": deadline,
        "due_dates": due_dates(rec, deadline),
        "executors": normalized_executors(rec),
        "payload": payload,
    }


def to_event(rec: AnyRecommendation, *, submitted_by: str) -> RecommendationEvent:
    return RecommendationEvent(**event_content(rec), submitted_by=submitted_by)
