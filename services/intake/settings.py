from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    max_body_bytes: int = Field(default=32 * 1024 * 1024, description="Largest request body")
    max_batch_items: int = 10_000
    publish_timeout_seconds: float = 30.0
