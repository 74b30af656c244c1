"""The tracker's state as Prometheus gauges, refreshed from the database by a background task.

Every replica exports the same values (dashboards take `max`); one failed refresh is
logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, date, datetime

from prometheus_client import Counter, Gauge
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.tracker.domain import quarter_start
from services.tracker.repository import AGENCIES, ASSIGNMENTS, OUTBOX, RECOMMENDATIONS
from shared.clock import Clock
from shared.deadlines import quarterly_report_periods
from shared.events import CLOSED_STATUSES, AssignmentStatus, Source

log = logging.getLogger(__name__)

RECOMMENDATIONS_GAUGE = Gauge("hrtrack_recommendations", "Recommendations by source", ["source"])
ASSIGNMENTS_GAUGE = Gauge("hrtrack_assignments", "Assignments by status", ["status"])
BY_AGENCY = Gauge("hrtrack_assignments_by_agency", "Assignments by agency and status",
                  ["agency", "status"])
OVERDUE = Gauge("hrtrack_assignments_overdue", "Open assignments past their own deadline")
DUE_THIS_QUARTER = Gauge("hrtrack_assignments_due_this_quarter",
                         "Open assignments whose own deadline falls in the current quarter")
REPORTS_SUBMITTED = Counter("hrtrack_reports_submitted", "Progress reports accepted, by status",
                            ["status"])
INGESTED = Counter("hrtrack_recommendations_ingested",
                   "Recommendation events the consumer committed, by outcome",
                   ["outcome"])  # changed | unchanged | stale
# Refreshed here, not by the relay: they must keep moving while the relay cannot publish.
OUTBOX_BACKLOG = Gauge("hrtrack_outbox_backlog", "Outbox events not yet published")
OUTBOX_OLDEST_AGE = Gauge("hrtrack_outbox_oldest_age_seconds",
                          "Age of the oldest unpublished event")
NEEDING_REVIEW = Gauge("hrtrack_agencies_needing_review",
                       "Agencies first seen as executor names, not yet reviewed")

CLOSED = [s.value for s in CLOSED_STATUSES]


def preinitialize() -> None:
    """Every labelled series exists from the start, so rates and sums never miss one."""
    for source in Source:
        RECOMMENDATIONS_GAUGE.labels(source=source.value)
    for status in AssignmentStatus:
        ASSIGNMENTS_GAUGE.labels(status=status.value)
        REPORTS_SUBMITTED.labels(status=status.value)
    for outcome in ("changed", "unchanged", "stale"):
        INGESTED.labels(outcome=outcome)


async def refresh(engine: AsyncEngine, today: date) -> None:
    q_start = quarter_start(today)
    q_end = quarterly_report_periods(q_start, q_start)[0][1]
    open_ = ASSIGNMENTS.c.status.not_in(CLOSED)
    async with engine.connect() as conn:
        by_source: dict[str, int] = {source: count for source, count in (await conn.execute(
            select(RECOMMENDATIONS.c.source, func.count()).group_by(RECOMMENDATIONS.c.source)
        )).all()}
        by_agency = (await conn.execute(
            select(AGENCIES.c.name, ASSIGNMENTS.c.status, func.count())
            .join(AGENCIES, AGENCIES.c.id == ASSIGNMENTS.c.agency_id)
            .group_by(AGENCIES.c.id, AGENCIES.c.name, ASSIGNMENTS.c.status))).all()
        overdue, due_now = (await conn.execute(select(
            func.count().filter(and_(open_, ASSIGNMENTS.c.due < today)),
            func.count().filter(and_(open_, ASSIGNMENTS.c.due.between(q_start, q_end))),
        ))).one()
        review = (await conn.execute(select(func.count()).select_from(AGENCIES)
                                     .where(AGENCIES.c.needs_review))).scalar_one()
        backlog, oldest = (await conn.execute(
            select(func.count(), func.min(OUTBOX.c.created_at)))).one()
    # No await below: a scrape never sees a half-updated set.
    for source in Source:
        RECOMMENDATIONS_GAUGE.labels(source=source.value).set(by_source.get(source.value, 0))
    by_status: dict[str, int] = {s.value: 0 for s in AssignmentStatus}
    per_agency: dict[tuple[str, str], int] = {}
    for agency, status, count in by_agency:  # names are not unique: add up
        per_agency[(agency, status)] = per_agency.get((agency, status), 0) + count
        by_status[status] = by_status.get(status, 0) + count
    BY_AGENCY.clear()  # agencies come and go (renames): no stale series
    for (agency, status), count in per_agency.items():
        BY_AGENCY.labels(agency=agency, status=status).set(count)
    for status, count in by_status.items():
        ASSIGNMENTS_GAUGE.labels(status=status).set(count)
    OVERDUE.set(overdue)
    DUE_THIS_QUARTER.set(due_now)
    NEEDING_REVIEW.set(review)
    OUTBOX_BACKLOG.set(backlog)
    OUTBOX_OLDEST_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)


# The refresh counts whole tables: a quarter of a second at 900,000 assignments, several
# times that before autovacuum lets its index-only scans skip the table. So a refresh is
# followed by a pause of at least this many times its own duration, which caps the share
# of the database's time the gauges take (1/21 of one backend) whatever the data's size.
PAUSE_PER_REFRESH_SECOND = 20.0


def pause_after(interval: float, refresh_seconds: float) -> float:
    """Seconds to wait before the next refresh: the configured interval, or longer when the
    last refresh was slow."""
    return max(interval, PAUSE_PER_REFRESH_SECOND * refresh_seconds)


async def refresh_forever(engine: AsyncEngine, clock: Clock, interval: float) -> None:
    while True:
        started = time.perf_counter()
        try:
            await refresh(engine, clock.today())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - metrics must never stop the service
            log.warning("metrics refresh failed (%s: %s)", type(exc).__name__, exc)
        await asyncio.sleep(pause_after(interval, time.perf_counter() - started))
