from __future__ import annotations

from shared.settings import ServiceSettings


class TrackerSettings(ServiceSettings):
    consumer_group: str = "tracker"
    batch_max_records: int = 1000
    outbox_batch_size: int = 2000
    outbox_poll_seconds: float = 0.5
    db_retry_max_seconds: float = 10.0
