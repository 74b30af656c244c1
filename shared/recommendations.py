"""Recommendations as coordinators post them, and their normalization into events.

One pydantic model per source, discriminated by `source`. Normalization is pure: it
derives the deterministic id, the parsed deadline and due dates and the executors.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from shared.deadlines import Deadline, parse_deadline, upr_derived_deadlines
from shared.events import DueDate, DueKind, RecommendationEvent, Source
from shared.executors import Executor, parse_executors
from shared.ids import recommendation_id

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

    due: date
    start: date | None = None

    @model_validator(mode="after")
    def _start_before_due(self) -> DeadlineIn:
        if self.start and self.start > self.due:
            raise ValueError("deadline start must not be after its due date")
        return self


class _RecommendationBase(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    text: str = Field(min_length=1, max_length=20_000)
    executors: list[Executor] | Annotated[str, Field(max_length=5_000)] | None = Field(
        default=None, description="A list of {name, role}, or the executors text as written"
    )
    deadline: DeadlineIn | Annotated[str, Field(max_length=500)] | None = Field(
        default=None, description="The deadline as written, or {due, start}"
    )
    themes: list[ShortText] = Field(default_factory=list, max_length=50)
    affected_groups: list[ShortText] = Field(default_factory=list, max_length=50)


StateCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3")]


class UprRecommendation(_RecommendationBase):
    source: Literal["upr"]
    state: StateCode
    cycle: int = Field(ge=1, le=20)
    session: int | None = Field(default=None, ge=1)
    review_date: date
    symbol: ShortText | None = Field(default=None, description="Report symbol, e.g. A/HRC/14/10")
    paragraph: Annotated[str, Field(min_length=1, max_length=20, pattern=r"^\d+(\.\d+)*$")]
    recommending_states: list[ShortText] = Field(default_factory=list, max_length=200)
    response: UprResponse | None = None
    sdgs: list[Annotated[int, Field(ge=1, le=17)]] = Field(default_factory=list)

    def natural_key(self) -> list[str]:
        return ["upr", self.state, str(self.cycle), self.paragraph]

    def reference(self) -> str:
        return f"{self.state} / cycle {self.cycle} / {self.paragraph}"


class TreatyBodyRecommendation(_RecommendationBase):
    source: Literal["treaty_body"]
    state: StateCode
    committee: Committee
    symbol: ShortText
    paragraph: Annotated[str, Field(min_length=1, max_length=20)]
    sub_paragraph: Annotated[str, Field(max_length=20)] | None = None
    adopted: date
    follow_up: bool = False
    follow_up_due: date | None = None
    follow_up_grade: Literal["A", "B", "C", "D", "E"] | None = None
    next_report_due: date | None = None

    @model_validator(mode="after")
    def _follow_up_dates(self) -> TreatyBodyRecommendation:
        if self.follow_up and self.follow_up_due is None:
            raise ValueError("follow_up_due is required when follow_up is true")
        if self.follow_up_due and self.follow_up_due < self.adopted:
            raise ValueError("follow_up_due must not be before the adoption date")
        return self

    def natural_key(self) -> list[str]:
        return ["treaty_body", self.committee.value, self.symbol, self.paragraph,
                self.sub_paragraph or ""]

    def reference(self) -> str:
        para = self.paragraph + (f"({self.sub_paragraph})" if self.sub_paragraph else "")
        return f"{self.committee.value} / {self.symbol} / {para}"


class PlanRecommendation(_RecommendationBase):
    source: Literal["plan"]
    plan: ShortText
    plan_title: ShortText | None = None
    plan_period: tuple[int, int] | None = None
    chapter: ShortText
    section: Literal["actions", "recommendations"] = "actions"
    number: Annotated[str, Field(min_length=1, max_length=20)]

    @field_validator("plan_period")
    @classmethod
    def _period_ordered(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value and value[0] > value[1]:
            raise ValueError("plan_period must be (first year, last year)")
        return value

    def natural_key(self) -> list[str]:
        return ["plan", self.plan, self.chapter, self.section, self.number]

    def reference(self) -> str:
        kind = "action" if self.section == "actions" else "recommendation"
        return f"{self.plan} / {self.chapter} / {kind} {self.number}"


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
        return Deadline(text=rec.deadline.due.isoformat(), start=rec.deadline.start,
                        due=rec.deadline.due)
    if isinstance(rec.deadline, str) and rec.deadline:
        return parse_deadline(rec.deadline, plan_period=_plan_period(rec))
    if isinstance(rec, TreatyBodyRecommendation) and rec.follow_up_due:
        return Deadline(text="follow-up", start=rec.adopted, due=rec.follow_up_due)
    if isinstance(rec, UprRecommendation):
        mid_term = upr_derived_deadlines(rec.review_date)["mid_term"]
        return Deadline(text="mid-term report", start=rec.review_date, due=mid_term)
    if isinstance(rec, TreatyBodyRecommendation) and rec.next_report_due:
        return Deadline(text="next periodic report", start=rec.adopted, due=rec.next_report_due)
    return Deadline(text=rec.deadline or "", start=None, due=None, needs_deadline=True)


def due_dates(rec: AnyRecommendation, deadline: Deadline) -> list[DueDate]:
    """Every date this recommendation is due on (DESIGN.md section 2)."""
    dates: list[DueDate] = []
    if deadline.recurrence == "yearly":
        first, last = (deadline.start.year if deadline.start else None,
                       deadline.due.year if deadline.due else None)
        if first and last:
            dates += [DueDate(kind=DueKind.DEADLINE, due=date(y, 12, 31), start=date(y, 1, 1))
                      for y in range(first, last + 1)]
    elif deadline.due:
        dates.append(DueDate(kind=DueKind.DEADLINE, due=deadline.due, start=deadline.start))
    if isinstance(rec, UprRecommendation):
        derived = upr_derived_deadlines(rec.review_date)
        dates.append(DueDate(kind=DueKind.MID_TERM, due=derived["mid_term"]))
        dates.append(DueDate(kind=DueKind.NEXT_REVIEW, due=derived["next_review"]))
    if isinstance(rec, TreatyBodyRecommendation):
        if rec.follow_up and rec.follow_up_due:
            dates.append(DueDate(kind=DueKind.FOLLOW_UP, due=rec.follow_up_due))
        if rec.next_report_due:
            dates.append(DueDate(kind=DueKind.NEXT_REPORT, due=rec.next_report_due))
    # One entry per (kind, due): a derived date equal to the own deadline is kept once.
    unique: dict[tuple[DueKind, date], DueDate] = {}
    for d in dates:
        unique.setdefault((d.kind, d.due), d)
    return sorted(unique.values(), key=lambda d: (d.due, d.kind))


def normalized_executors(rec: AnyRecommendation) -> list[Executor]:
    if isinstance(rec.executors, str):
        return parse_executors(rec.executors)
    return list(rec.executors or [])


def content_hash(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def to_event(rec: AnyRecommendation, *, submitted_by: str) -> RecommendationEvent:
    payload = rec.model_dump(mode="json")
    deadline = normalized_deadline(rec)
    return RecommendationEvent(
        recommendation_id=recommendation_id(*rec.natural_key()),
        content_hash=content_hash(payload),
        source=Source(rec.source),
        reference=rec.reference(),
        natural_key=rec.natural_key(),
        text=rec.text,
        deadline=deadline,
        due_dates=due_dates(rec, deadline),
        executors=normalized_executors(rec),
        payload=payload,
        submitted_by=submitted_by,
    )
