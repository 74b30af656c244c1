"""Progress reports: an agency (or a coordinator) reports on one assignment.

The report, the assignment's new status and version, the audit entries and the events
announcing them are written in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select

from services.tracker.domain import (
    is_closed,
    may_set_status,
    period_in_future,
    report_events,
    report_period,
    transition_allowed,
)
from services.tracker.models import ReportCreate, utcnow
from services.tracker.repository import (
    AGENCIES,
    ASSIGNMENTS,
    RECOMMENDATIONS,
    REPORTS,
    TrackerRepository,
    assignment_event,
)
from shared.auth import Principal
from shared.events import AssignmentStatus


class AssignmentNotFound(Exception):
    pass


@dataclass
class ReportRejected(Exception):
    """The report is well-formed but not acceptable now; names the field at fault."""

    status_code: int
    field: str
    message: str
    kind: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


async def submit_report(repo: TrackerRepository, assignment_id: uuid.UUID, data: ReportCreate,
                        principal: Principal, today: date,
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Store the report and apply its status. Returns (report row, assignment row)."""
    found = (await repo.session.execute(
        select(ASSIGNMENTS, AGENCIES.c.name.label("agency_name"),
               RECOMMENDATIONS.c.source, RECOMMENDATIONS.c.reference,
               RECOMMENDATIONS.c.text.label("recommendation_text"),
               RECOMMENDATIONS.c.deadline, RECOMMENDATIONS.c.due_dates)
        .join(AGENCIES, AGENCIES.c.id == ASSIGNMENTS.c.agency_id)
        .join(RECOMMENDATIONS, RECOMMENDATIONS.c.id == ASSIGNMENTS.c.recommendation_id)
        .where(ASSIGNMENTS.c.id == assignment_id)
        .with_for_update(of=ASSIGNMENTS))).mappings().first()
    # Another agency's assignment is answered like a missing one: nothing is revealed.
    if found is None or not principal.may_access_agency(found["agency_id"]):
        raise AssignmentNotFound(str(assignment_id))
    old, new = AssignmentStatus(found["status"]), data.status
    if not may_set_status(new, coordinator=principal.is_coordinator):
        raise ReportRejected(403, "status", f"only coordinators may set {new.value}",
                             "forbidden_status")
    if not transition_allowed(old, new):
        raise ReportRejected(409, "status", f"cannot change from {old.value} to {new.value}",
                             "transition_not_allowed")
    period = report_period(data.period, today)
    if period_in_future(period, today):
        raise ReportRejected(422, "period", f"quarter starting {period} has not begun "
                             f"(today is {today})", "period_in_future")

    now = utcnow()
    report = {"id": uuid.uuid4(), "assignment_id": assignment_id, "period_start": period,
              "status": new.value, "text": data.text,
              "evidence_links": [str(u) for u in data.evidence_links],
              "submitted_by": principal.subject, "submitted_at": now}
    await repo.session.execute(REPORTS.insert().values(report))

    closed_at = found["closed_at"]
    if is_closed(new) and not is_closed(old):
        closed_at = now
    elif not is_closed(new):
        closed_at = None
    assignment = {**{c.name: found[c.name] for c in ASSIGNMENTS.c},
                  "agency_name": found["agency_name"], "source": found["source"],
                  "reference": found["reference"], "status": new.value,
                  "version": found["version"] + 1, "updated_at": now, "closed_at": closed_at}
    await repo.session.execute(ASSIGNMENTS.update().where(ASSIGNMENTS.c.id == assignment_id)
                               .values(status=new.value, version=assignment["version"],
                                       updated_at=now, closed_at=closed_at))

    repo.add_history("assignment", assignment_id, "report_submitted", principal.subject,
                     {"report_id": str(report["id"]), "period": period.isoformat(),
                      "status": new.value})
    if new != old:
        repo.add_history("assignment", assignment_id, "status_changed", principal.subject,
                         {"from": old.value, "to": new.value})
    reported = (await repo.reported_periods([assignment_id])).get(assignment_id, [])
    for kind in report_events(old, new):
        repo.add_event(repo.topics.assignments, found["recommendation_id"], assignment_event(
            assignment, event_type=kind, source=found["source"], reference=found["reference"],
            text=found["recommendation_text"], deadline=found["deadline"],
            due_dates=found["due_dates"], reported=reported, previous_status=old,
            report_period=period))
    return report, assignment
