"""Intake's settings (HRTRACK_* environment variables)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import TOPIC_RECOMMENDATIONS, ServiceSettings


class IntakeSettings(ServiceSettings):
    max_body_bytes: int = Field(default=32 * 1024 * 1024, description="Largest request body")
    max_batch_items: int = Field(
        default=10_000, description="Most items of a batch, rows of a CSV, actions of a plan"
    )
    publish_timeout_seconds: float = Field(
        default=30.0, description="How long a request waits for the broker's acknowledgements"
    )
    retry_after_seconds: int = Field(default=5, description="Retry-After of a 503 answer")
    # The default is the contract; tests give heavy runs their own topic.
    recommendations_topic: str = TOPIC_RECOMMENDATIONS
