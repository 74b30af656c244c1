"""Intake's pure logic: turn posted JSON into recommendation events, or say what is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.events import RecommendationEvent
from shared.recommendations import RECOMMENDATION_ADAPTER, to_event
from shared.web import validation_errors


@dataclass(frozen=True)
class Rejection:
    index: int
    errors: list[dict[str, Any]]

    def as_dict(self, label: str = "index") -> dict[str, Any]:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in self.errors[:10])
        return {label: self.index, "reason": summary, "errors": self.errors}


def validate_item(raw: Any, *, submitted_by: str) -> RecommendationEvent:
    """Raises pydantic.ValidationError naming the field."""
    return to_event(RECOMMENDATION_ADAPTER.validate_python(raw), submitted_by=submitted_by)


def validate_items(
    items: list[Any], *, submitted_by: str, first_index: int = 0
) -> tuple[list[RecommendationEvent], list[Rejection]]:
    events: list[RecommendationEvent] = []
    rejections: list[Rejection] = []
    for offset, raw in enumerate(items):
        try:
            events.append(validate_item(raw, submitted_by=submitted_by))
        except ValidationError as exc:
            rejections.append(
                Rejection(first_index + offset, validation_errors(list(exc.errors())))
            )
        except ValueError as exc:
            # Normalization errors that are not field errors still name the item.
            rejections.append(
                Rejection(
                    first_index + offset,
                    [{"field": "body", "message": str(exc), "type": "value_error"}],
                )
            )
    return events, rejections


def deduplicate(events: list[RecommendationEvent]) -> list[RecommendationEvent]:
    """Within one request the last version of a recommendation wins (per-key order is kept)."""
    latest: dict[Any, RecommendationEvent] = {}
    for event in events:
        latest.pop(event.recommendation_id, None)
        latest[event.recommendation_id] = event
    return list(latest.values())
