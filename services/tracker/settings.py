from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from shared.settings import (
    TOPIC_AGENCIES,
    TOPIC_ASSIGNMENTS,
    TOPIC_RECOMMENDATIONS,
    ServiceSettings,
)

DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "data" / "agencies.json"


class TrackerSettings(ServiceSettings):
    consumer_group: str = "tracker"
    batch_max_records: int = 1000
    # Consumers in this process (the topic has 6 partitions): one decodes while another
    # waits for PostgreSQL.
    consumer_workers: int = Field(default=2, ge=1, le=6)
    outbox_batch_size: int = 2000
    outbox_poll_seconds: float = 0.5
    db_retry_max_seconds: float = 10.0
    # Topics: the defaults are the contract; tests give heavy runs their own topics.
    recommendations_topic: str = TOPIC_RECOMMENDATIONS
    assignments_topic: str = TOPIC_ASSIGNMENTS
    agencies_topic: str = TOPIC_AGENCIES
    # The agency directory seeded at startup (missing agencies and aliases only).
    directory_file: Path | None = Field(
        default=DEFAULT_DIRECTORY, description="JSON directory seed; empty to skip seeding")
    # Quarterly progress reports are due on this day of the month after the quarter.
    report_day: int = Field(default=10, ge=1, le=31)
    metrics_refresh_seconds: float = Field(default=15.0, gt=0)

    @field_validator("directory_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value
