"""The notifier's settings: HRTRACK_* environment variables, the reminder policy in one place.

The policy comes from (later wins): its defaults, the JSON or TOML file named by
HRTRACK_POLICY_FILE, a JSON object in HRTRACK_POLICY, and single fields such as
HRTRACK_POLICY__BEFORE_DAYS='[30,14,7,1]' (see docs/notifier.md).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.notifier.policy import ReminderPolicy
from shared.settings import TOPIC_AGENCIES, TOPIC_ASSIGNMENTS, ServiceSettings


def load_policy_file(path: Path) -> dict[str, Any]:
    """A policy file: JSON, or TOML (``.toml``); either the fields at top level or under a
    ``policy`` table/key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the policy file {path}: {exc}") from exc
    try:
        data: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"the policy file {path} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"the policy file {path} must hold an object of policy fields")
    nested = data.get("policy")
    return dict(nested) if isinstance(nested, dict) else data


class NotifierSettings(ServiceSettings):
    # "__" reaches into nested models: HRTRACK_POLICY__BEFORE_DAYS sets policy.before_days.
    model_config = SettingsConfigDict(env_prefix="HRTRACK_", extra="ignore",
                                      env_nested_delimiter="__")

    consumer_group: str = "notifier"
    # Topics: the defaults are the contract; tests give their runs their own topics.
    assignments_topic: str = TOPIC_ASSIGNMENTS
    agencies_topic: str = TOPIC_AGENCIES
    # Longer than the tracker's: the notifier's view has to be current by the next pass, not
    # within milliseconds, and the dev broker answers an idle fetch only when the wait runs
    # out, so a short wait keeps broker and notifier polling (20 ms: 4% of a core each, at
    # rest; bench/pipeline: 540 -> 510 us of CPU per recommendation).
    kafka_fetch_max_wait_ms: int = 250
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_starttls: bool = False
    mail_from: str = "hrtrack <hrtrack@localhost>"
    message_id_domain: str = "hrtrack.local"
    coordinator_emails: list[str] = Field(default_factory=list)
    coordinator_name: str = "Coordinators"
    coordinator_language: str = "en"
    # Links in the mails ("how to report") and look-ups of agencies the events have not
    # brought yet.
    tracker_url: str = "http://127.0.0.1:8002"
    tracker_lookup: bool = True
    tracker_timeout_seconds: float = Field(default=5.0, gt=0)
    # A digest lists this many reminders in full at most (the most urgent), the rest as
    # counts by agency and by due date: a coordinators' digest of a large book would
    # otherwise be a message of tens of MB that mail servers refuse.
    digest_max_items: int = Field(default=200, ge=1)
    # This notifier's address as the digests' readers reach it: the capped digest's link
    # to the ledger (none: the path alone).
    public_url: str | None = None
    # Scheduled passes on the service clock; 0 turns them off (passes only on request).
    pass_interval_seconds: float = Field(default=300.0, ge=0)
    # Delivery retries: exponential backoff from this base up to the maximum, no limit on
    # attempts for temporary failures.
    delivery_retry_seconds: float = Field(default=5.0, gt=0)
    delivery_max_backoff_seconds: float = Field(default=600.0, gt=0)
    policy_file: Path | None = None
    policy: ReminderPolicy = Field(default_factory=ReminderPolicy)

    @field_validator("policy_file", "public_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="before")
    @classmethod
    def _merge_policy_file(cls, data: Any) -> Any:
        """File values first, then whatever the environment sets on top of them."""
        if not isinstance(data, dict) or not data.get("policy_file"):
            return data
        merged = load_policy_file(Path(data["policy_file"]))
        given = data.get("policy")
        if isinstance(given, ReminderPolicy):
            given = given.model_dump(exclude_unset=True)
        elif isinstance(given, str):
            given = json.loads(given)
        merged.update(given or {})
        return {**data, "policy": merged}
