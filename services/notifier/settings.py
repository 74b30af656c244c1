from __future__ import annotations

from pydantic import Field

from services.notifier.policy import ReminderPolicy
from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    consumer_group: str = "notifier"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_timeout_seconds: float = 10.0
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_starttls: bool = False
    mail_from: str = "hrtrack <hrtrack@localhost>"
    coordinator_emails: list[str] = Field(default_factory=list)
    tracker_url: str = "http://127.0.0.1:8002"
    # Scheduled passes on the service clock; 0 turns them off (passes only on request).
    pass_interval_seconds: float = 300.0
    delivery_retry_seconds: float = 5.0
    delivery_max_backoff_seconds: float = 600.0
    policy: ReminderPolicy = Field(default_factory=ReminderPolicy)
