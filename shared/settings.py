"""Settings every service shares, read from HRTRACK_* environment variables."""

from __future__ import annotations

from datetime import date

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Base of each service's settings class; subclasses add their own fields."""

    model_config = SettingsConfigDict(env_prefix="HRTRACK_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    token_secret: SecretStr = Field(
        default=SecretStr(""), description="HMAC secret that signs and checks API tokens"
    )
    clock: date | None = Field(default=None, description="Take this date as today (replays)")
    log_level: str = "INFO"
    max_body_bytes: int = Field(default=1024 * 1024, gt=0,
                                description="Largest request body (413 above)")
    # Consumer group timing: short values make tests and dev restarts rejoin quickly.
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 500
    # How long a fetch may wait on the broker for new records. Kept short because the dev
    # broker (tansu) answers an empty fetch only when this expires, which would otherwise
    # add up to 500 ms to every event's latency.
    kafka_fetch_max_wait_ms: int = 20


TOPIC_RECOMMENDATIONS = "recommendations"
TOPIC_ASSIGNMENTS = "assignments"
TOPIC_AGENCIES = "agencies"
ALL_TOPICS = [TOPIC_RECOMMENDATIONS, TOPIC_ASSIGNMENTS, TOPIC_AGENCIES]


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"
