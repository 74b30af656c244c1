"""The service clock: today's date, or the date set by HRTRACK_CLOCK for replays."""

from __future__ import annotations

from datetime import UTC, date, datetime


class Clock:
    def __init__(self, fixed_today: date | None = None) -> None:
        self.fixed_today = fixed_today

    def today(self) -> date:
        return self.fixed_today or datetime.now(UTC).date()

    def now(self) -> datetime:
        # Wall-clock time for audit stamps; only the date is replayed.
        return datetime.now(UTC)
