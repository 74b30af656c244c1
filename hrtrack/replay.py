"""`hrtrack replay --from DATE --to DATE`: one reminder pass per day against a running notifier.

Each day is POST /v1/reminders/run?as_of=DAY, in order; a line per day says what it sent.
A day the notifier cannot run right now (database or network outage: 503, connection
errors) is tried again until it runs, so a replay never skips a day.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any, TextIO

import httpx

RETRY_STATUSES = {502, 503, 504}


def days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def summary(day: date, report: dict[str, Any]) -> str:
    sent = report.get("sent") or []
    failed = report.get("failed") or []
    retrying = report.get("retrying") or []
    reminders = sum(int(d.get("items", 0)) for d in sent)
    line = (f"{day.isoformat()}: {len(sent)} digests sent ({reminders} reminders), "
            f"{report.get('claimed', 0)} reminders claimed")
    if report.get("late"):
        line += f", {report['late']} late (next digest)"
    if failed:
        line += f", {len(failed)} digests FAILED"
    if retrying:
        line += f", {len(retrying)} digests waiting to retry"
    if report.get("pending_reminders"):
        line += f", {report['pending_reminders']} reminders pending delivery"
    if report.get("unaddressed"):
        line += f", {report['unaddressed']} reminders with nobody to send to"
    return line


def replay(*, url: str, token: str, start: date, end: date, out: TextIO | None = None,
           retry_seconds: float = 2.0, max_wait_seconds: float = 600.0,
           client: httpx.Client | None = None,
           sleep: Callable[[float], None] = time.sleep) -> int:
    """Run one pass per day from ``start`` to ``end`` (inclusive). Returns the exit code:
    0 when every day ran, 1 when a day could not be run, 2 for a bad range."""
    out = out or sys.stdout
    if end < start:
        print(f"error: --to {end} is before --from {start}", file=sys.stderr)
        return 2
    http = client or httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0))
    headers = {"Authorization": f"Bearer {token}"}
    totals = {"days": 0, "digests": 0, "reminders": 0, "failed": 0}
    try:
        for day in days(start, end):
            report = _run_day(http, url, headers, day, retry_seconds, max_wait_seconds, sleep)
            if report is None:
                return 1
            totals["days"] += 1
            totals["digests"] += len(report.get("sent") or [])
            totals["reminders"] += sum(int(d.get("items", 0)) for d in report.get("sent") or [])
            totals["failed"] += len(report.get("failed") or [])
            print(summary(day, report), file=out, flush=True)
    finally:
        if client is None:
            http.close()
    print(f"replayed {totals['days']} days: {totals['digests']} digests sent "
          f"({totals['reminders']} reminders), {totals['failed']} failed", file=out, flush=True)
    return 0


def _run_day(http: httpx.Client, url: str, headers: dict[str, str], day: date,
             retry_seconds: float, max_wait_seconds: float,
             sleep: Callable[[float], None]) -> dict[str, Any] | None:
    waited = 0.0
    while True:
        try:
            response = http.post(f"{url.rstrip('/')}/v1/reminders/run",
                                 params={"as_of": day.isoformat()}, headers=headers)
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                report: dict[str, Any] = response.json()
                return report
            if response.status_code not in RETRY_STATUSES:
                print(f"error: {day}: HTTP {response.status_code}: {response.text[:500]}",
                      file=sys.stderr)
                return None
            problem = f"HTTP {response.status_code}"
        if waited >= max_wait_seconds:
            print(f"error: {day}: notifier unavailable for {waited:.0f}s ({problem})",
                  file=sys.stderr)
            return None
        print(f"{day}: notifier unavailable ({problem}); retrying", file=sys.stderr)
        sleep(retry_seconds)
        waited += retry_seconds
