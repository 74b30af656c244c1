"""The tracker's database adapter: bulk ingest, agency resolution, outbox writes.

Every method runs inside the caller's transaction. The events of a change made over HTTP
(reports, agencies), and of the agencies a batch creates from new executor names, commit
with it in the outbox, for the relay to publish. The assignment events of an ingested batch
(one AssignmentsChanged per recommendation change) are handed to the consumer instead
(``announcements``), which publishes them once the transaction has committed and only then
acknowledges the batch: a batch re-delivered after a crash announces its assignments again
(see ``ingest``).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple

import orjson
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.tracker.domain import (
    ExecutorClaim,
    active_from,
    claims_by_agency,
    executor_claims,
    is_closed,
    own_due,
    restated_event_type,
)
from services.tracker.models import (
    SCHEMA,
    Agency,
    AgencyAlias,
    Assignment,
    HistoryEntry,
    OutboxEvent,
    ProgressReport,
    Recommendation,
    utcnow,
)
from shared.db import driver_connection
from shared.events import (
    ASSIGNMENTS_CHANGED,
    AgencyEvent,
    AssignmentEventType,
    AssignmentStatus,
    EventBase,
    RecommendationEvent,
    deadline_json,
    due_dates_json,
    executors_json,
    latest_per_key,
)
from shared.executors import ExecutorRole
from shared.ids import agency_id as make_agency_id
from shared.ids import assignment_event_id, assignments_changed_id
from shared.ids import assignment_id as make_assignment_id
from shared.kafka import OutgoingRecord, json_record
from shared.settings import TOPIC_AGENCIES, TOPIC_ASSIGNMENTS, TOPIC_RECOMMENDATIONS

AGENCIES = Agency.__table__  # type: ignore[attr-defined]
ALIASES = AgencyAlias.__table__  # type: ignore[attr-defined]
RECOMMENDATIONS = Recommendation.__table__  # type: ignore[attr-defined]
ASSIGNMENTS = Assignment.__table__  # type: ignore[attr-defined]
REPORTS = ProgressReport.__table__  # type: ignore[attr-defined]
HISTORY = HistoryEntry.__table__  # type: ignore[attr-defined]
OUTBOX = OutboxEvent.__table__  # type: ignore[attr-defined]

OUTBOX_COLUMNS = ["event_id", "topic", "key", "payload", "created_at"]
HISTORY_COLUMNS = ["entity", "entity_id", "action", "actor", "data", "at"]

class EncodedEvent(NamedTuple):
    event_id: uuid.UUID
    payload: str  # the event's JSON


CHUNK = 4000  # rows per statement: keeps bind parameters under PostgreSQL's limit
SYSTEM_CANCEL = "agency no longer named by the recommendation"
# Plain strings for the rows (an Enum member's .value is a Python-level look-up, and a batch
# reads them tens of thousands of times).
NOT_STARTED = AssignmentStatus.NOT_STARTED.value
IN_PROGRESS = AssignmentStatus.IN_PROGRESS.value
CANCELLED = AssignmentStatus.CANCELLED.value
ROLE_VALUES = {role: role.value for role in ExecutorRole}


def unnest_insert(table: str, columns: dict[str, str], *, conflict: str | None = None,
                  update: Iterable[str] = (), extra_set: str = "",
                  returning: str = "") -> str:
    """One INSERT ... SELECT FROM unnest(arrays) for a whole batch.

    A single statement with one array parameter per column: PostgreSQL plans it once and
    the rows travel in one round trip (an executemany runs the statement once per row).
    `columns` maps column name to its SQL type.
    """
    names = ", ".join(columns)
    arrays = ", ".join(f"${i}::{sql_type}[]" for i, sql_type in
                       enumerate(columns.values(), start=1))
    sql = f"INSERT INTO {SCHEMA}.{table} ({names}) SELECT * FROM unnest({arrays})"
    if conflict:
        sets = [f"{c} = excluded.{c}" for c in update] + ([extra_set] if extra_set else [])
        sql += f" ON CONFLICT ({conflict}) " + (
            f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING")
    if returning:
        sql += f" RETURNING {returning}"
    return sql


def columns_of(rows: Sequence[dict[str, Any]], columns: Iterable[str]) -> list[list[Any]]:
    """Row dicts -> one list per column, the parameters of an unnest statement."""
    return [[row[c] for row in rows] for c in columns]


RECOMMENDATION_COLUMNS = {
    "id": "uuid", "source": "text", "reference": "text", "natural_key": "json",
    "text": "text", "deadline": "json", "due_dates": "json", "executors": "json",
    "payload": "json", "content_hash": "text", "version": "int", "needs_deadline": "bool",
    "created_at": "timestamptz", "updated_at": "timestamptz", "last_event_at": "timestamptz",
    "last_event_id": "uuid",
}
UPSERT_RECOMMENDATIONS = unnest_insert(
    "recommendations", RECOMMENDATION_COLUMNS, conflict="id",
    update=("source", "reference", "natural_key", "text", "deadline", "due_dates",
            "executors", "payload", "content_hash", "needs_deadline", "updated_at",
            "last_event_at", "last_event_id"),
    extra_set="version = recommendations.version + 1", returning="id, version")
# The current version lives in the recommendation row; recommendation_versions keeps the
# ones it replaced (copied there by the change that replaces them: most recommendations
# never change, and a copy of each at creation was one row in six of what the tracker
# wrote). A tracker older than migration 0006 copied each version at creation: DO NOTHING.
ARCHIVE_VERSIONS = f"""
INSERT INTO {SCHEMA}.recommendation_versions
       (recommendation_id, version, content_hash, payload, created_at)
SELECT id, version, content_hash, payload, updated_at FROM {SCHEMA}.recommendations
WHERE id = ANY($1::uuid[])
ON CONFLICT (recommendation_id, version) DO NOTHING
"""
# The batch's recommendations that exist, locked for the transaction. Through the driver, one
# array parameter: SQLAlchemy's expanding IN over a batch of ids (a bind parameter each, a
# statement text per batch size) cost the tracker about 5 us of CPU per recommendation.
LOCK_EXISTING_RECOMMENDATIONS = f"""
SELECT id, content_hash, version, last_event_at, last_event_id FROM {SCHEMA}.recommendations
WHERE id = ANY($1::uuid[]) FOR UPDATE
"""
ASSIGNMENT_COLUMNS = {
    "id": "uuid", "recommendation_id": "uuid", "agency_id": "uuid", "role": "text",
    "status": "text", "due": "date", "active_from": "date", "version": "int",
    "created_at": "timestamptz", "updated_at": "timestamptz", "closed_at": "timestamptz",
}
UPSERT_ASSIGNMENTS = unnest_insert(
    "assignments", ASSIGNMENT_COLUMNS, conflict="id",
    update=("role", "status", "due", "active_from", "version", "updated_at", "closed_at"))


def chunks(rows: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


@dataclass(frozen=True)
class Topics:
    """Where the tracker's events go (the defaults are the public contract)."""

    recommendations: str = TOPIC_RECOMMENDATIONS
    assignments: str = TOPIC_ASSIGNMENTS
    agencies: str = TOPIC_AGENCIES


@dataclass
class IngestResult:
    recommendations_changed: int = 0
    recommendations_unchanged: int = 0
    recommendations_stale: int = 0
    # Re-delivered events whose change was committed: their assignments announced again.
    recommendations_restated: int = 0
    assignments_created: int = 0
    assignments_updated: int = 0
    assignments_cancelled: int = 0
    agencies_created: list[str] = field(default_factory=list)


class TrackerRepository:
    def __init__(self, session: AsyncSession, topics: Topics | None = None) -> None:
        self.session = session
        self.topics = topics or Topics()
        self._outbox_rows: list[dict[str, Any]] = []
        self._history_rows: list[dict[str, Any]] = []
        # AssignmentsChanged events of the ingest, for the caller to publish after commit.
        self.announcements: list[OutgoingRecord] = []
        self.created_agencies: list[str] = []
        # One clock reading per transaction, as PostgreSQL's now(): history is ordered by id.
        self.now = utcnow()

    # --- outbox and history -----------------------------------------------------------------

    def add_event(self, topic: str, key: uuid.UUID, event: EventBase | EncodedEvent) -> None:
        """Queue an event for the outbox: a model, or one encoded already."""
        if isinstance(event, EncodedEvent):
            event_id, payload = event
        else:
            event_id, payload = event.event_id, event.model_dump_json()
        self._outbox_rows.append({"event_id": event_id, "topic": topic, "key": str(key),
                                  "payload": payload, "created_at": self.now})

    def announce(self, key: uuid.UUID, event: EncodedEvent) -> None:
        """An event of the ingest: published by the caller once committed."""
        self.announcements.append(json_record(str(key), event.payload, event.event_id))

    def add_history(self, entity: str, entity_id: uuid.UUID, action: str, actor: str,
                    data: dict[str, Any] | None = None) -> None:
        self._history_rows.append({"entity": entity, "entity_id": entity_id, "action": action,
                                   "actor": actor, "at": self.now,
                                   "data": orjson.dumps(data or {}, default=str).decode()})

    async def driver_connection(self) -> Any:
        """The asyncpg connection under this session's transaction (for COPY, unnest)."""
        return await driver_connection(self.session)

    async def copy_rows(self, table: str, columns: Iterable[str],
                        rows: Sequence[dict[str, Any]]) -> None:
        """COPY new rows into a table in this transaction (a conflict fails the batch)."""
        if rows:
            names = list(columns)
            driver = await self.driver_connection()
            await driver.copy_records_to_table(
                table, schema_name=SCHEMA, columns=names,
                records=list(map(itemgetter(*names), rows)))

    async def flush(self) -> None:
        """Write the queued outbox and history rows (call before commit).

        Both tables are append-only, so they are written with COPY on the session's own
        connection (same transaction): several times faster than INSERTs.
        """
        await self.copy_rows("outbox", OUTBOX_COLUMNS, self._outbox_rows)
        await self.copy_rows("history", HISTORY_COLUMNS, self._history_rows)
        self._outbox_rows.clear()
        self._history_rows.clear()

    # --- agencies ---------------------------------------------------------------------------

    def agency_event(self, agency: dict[str, Any] | Agency) -> AgencyEvent:
        row = agency if isinstance(agency, dict) else agency.model_dump()
        return AgencyEvent(agency_id=row["id"], name=row["name"], emails=list(row["emails"] or []),
                           language=row["language"], escalation_email=row["escalation_email"],
                           needs_review=row["needs_review"])

    def announce_agency(self, row: dict[str, Any]) -> None:
        self.add_event(self.topics.agencies, row["id"], self.agency_event(row))

    async def resolve_agencies(self, claims: Iterable[ExecutorClaim], actor: str
                               ) -> dict[str, dict[str, Any]]:
        """Agency rows by alias key; unknown names become new agencies flagged for review."""
        wanted = {c.key: c.name for c in claims}
        if not wanted:
            return {}
        found = await self.agencies_by_key(wanted)
        missing = {k: n for k, n in wanted.items() if k not in found}
        if missing:
            now = self.now
            new_rows = [{"id": make_agency_id(k), "key": k, "name": n, "emails": [],
                         "language": "en", "escalation_email": None, "aliases": [n],
                         "needs_review": True, "created_at": now, "updated_at": now}
                        for k, n in sorted(missing.items())]
            for part in chunks(new_rows, 2000):
                created = (await self.session.execute(
                    pg_insert(AGENCIES).values(list(part)).on_conflict_do_nothing()
                    .returning(*AGENCIES.c))).mappings().all()
                for row in created:
                    self.created_agencies.append(row["name"])
                    self.announce_agency(dict(row))
                    self.add_history("agency", row["id"], "created_from_executor", actor,
                                     {"name": row["name"]})
            alias_rows = [{"key": k, "agency_id": make_agency_id(k)} for k in sorted(missing)]
            for part in chunks(alias_rows):
                await self.session.execute(
                    pg_insert(ALIASES).values(list(part)).on_conflict_do_nothing())
            found = await self.agencies_by_key(wanted)
        return found

    async def agencies_by_key(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Agency rows (as dicts) by the alias keys that name them."""
        rows = (await self.session.execute(
            select(ALIASES.c.key.label("alias_key"), AGENCIES)
            .join(AGENCIES, AGENCIES.c.id == ALIASES.c.agency_id)
            .where(ALIASES.c.key.in_(list(keys))))).mappings().all()
        return {r["alias_key"]: {c.name: r[c] for c in AGENCIES.c} for r in rows}

    # --- recommendations ---------------------------------------------------------------------

    async def ingest(self, events: list[RecommendationEvent], today: date) -> IngestResult:
        """Upsert recommendations and their assignments.

        Idempotent: an event with the stored content changes nothing, and one older than the
        event last applied (a late re-delivery) never overwrites newer content.
        """
        result = IngestResult()
        latest = {e.recommendation_id: e
                  for e in latest_per_key(events, lambda e: e.recommendation_id)}
        driver = await self.driver_connection()
        existing: dict[uuid.UUID, Any] = {
            r["id"]: r for r in await driver.fetch(LOCK_EXISTING_RECOMMENDATIONS, list(latest))}
        changed: list[RecommendationEvent] = []
        redelivered: list[RecommendationEvent] = []
        for rid, e in latest.items():
            before = existing.get(rid)
            if before is not None and before["content_hash"] == e.content_hash:
                result.recommendations_unchanged += 1
                if before["last_event_id"] == e.event_id:
                    # The event that made the change, delivered again: its announcements may
                    # never have gone out (a crash between commit and publish).
                    redelivered.append(e)
            elif before is not None and before["last_event_at"] and \
                    e.occurred_at < before["last_event_at"]:
                result.recommendations_stale += 1
            else:
                changed.append(e)
        result.recommendations_changed = len(changed)
        if redelivered:
            result.recommendations_restated = len(redelivered)
            await self._restate(redelivered)
        if not changed:
            return result

        claims = {e.recommendation_id: executor_claims(e) for e in changed}
        agencies = await self.resolve_agencies(
            (c for cs in claims.values() for c in cs), actor="intake")
        result.agencies_created = list(self.created_agencies)

        now = self.now
        rec_rows = [recommendation_row(e, now) for e in changed]
        # New rows go in with COPY (the cheapest way in, on both sides); rows that exist
        # (locked above) are upserted, after the version each replaces is archived.
        await self.copy_rows("recommendations", RECOMMENDATION_COLUMNS,
                             [r for r in rec_rows if r["id"] not in existing])
        versions: dict[uuid.UUID, int] = {r["id"]: 1 for r in rec_rows}
        updated = [r for r in rec_rows if r["id"] in existing]
        if updated:
            await driver.execute(ARCHIVE_VERSIONS, [r["id"] for r in updated])
            versions.update({row["id"]: row["version"] for row in await driver.fetch(
                UPSERT_RECOMMENDATIONS, *columns_of(updated, RECOMMENDATION_COLUMNS))})
        encoded = {row["id"]: dates_fragments(row["deadline"], row["due_dates"])
                   for row in rec_rows}
        created = await self._upsert_assignments(
            changed, claims, agencies, today, now, result, encoded,
            [e.recommendation_id for e in changed if e.recommendation_id in existing])
        # One entry per recommendation change, with the assignments it created (read back as
        # each one's "created" entry, see queries.assignment_history).
        for e in changed:
            data = {"version": versions[e.recommendation_id], "content_hash": e.content_hash,
                    "event_id": str(e.event_id)}
            if e.recommendation_id in created:
                data["assignments"] = created[e.recommendation_id]
            self.add_history("recommendation", e.recommendation_id,
                             "created" if e.recommendation_id not in existing else "updated",
                             e.submitted_by, data)
        return result

    async def _upsert_assignments(
        self, changed: list[RecommendationEvent], claims: dict[uuid.UUID, list[ExecutorClaim]],
        agencies: dict[str, dict[str, Any]], today: date, now: datetime, result: IngestResult,
        encoded: dict[uuid.UUID, tuple[orjson.Fragment, orjson.Fragment]],
        stored_before: list[uuid.UUID],
    ) -> dict[uuid.UUID, dict[str, dict[str, str]]]:
        """``stored_before``: the recommendations that existed before this batch, the only
        ones that can have assignments yet. Returns the assignments created, per
        recommendation: {assignment id: {agency_id, role, named_as}}, for its history entry."""
        current = {row["id"]: row for row in
                   await self.assignments_of(stored_before, for_update=True)}
        reported = await self.reported_periods(list(current))
        cancelled = [a for a, row in current.items()
                     if row["status"] == CANCELLED]
        cancelled_by_report = await self._cancelled_by_report(cancelled)

        rows: list[dict[str, Any]] = []
        # Per recommendation changed: (assignment row, event type, status before).
        changes: dict[uuid.UUID, list[tuple[dict[str, Any], AssignmentEventType,
                                            AssignmentStatus | None]]] = defaultdict(list)
        by_rec: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
        for a in current.values():
            by_rec[a["recommendation_id"]].add(a["id"])
        created: dict[uuid.UUID, dict[str, dict[str, str]]] = defaultdict(dict)
        agency_of = {k: a["id"] for k, a in agencies.items()}
        agency_by_id = {a["id"]: a for a in agencies.values()}
        for event in changed:
            wanted: set[uuid.UUID] = set()
            named = claims_by_agency(claims[event.recommendation_id], agency_of)
            due = own_due(event.due_dates, event.deadline.due)
            owed_from = active_from(event, today)
            for agency_id, claim in named.items():
                aid = make_assignment_id(event.recommendation_id, agency_id)
                role = ROLE_VALUES[claim.role]
                wanted.add(aid)
                before = current.get(aid)
                status = before["status"] if before else NOT_STARTED
                closed_at = before["closed_at"] if before else None
                kind = AssignmentEventType.UPDATED if before else AssignmentEventType.CREATED
                previous: AssignmentStatus | None = None
                if before and status == CANCELLED \
                        and aid not in cancelled_by_report:
                    # Named again after a version had dropped it: the obligation is back.
                    previous = AssignmentStatus.CANCELLED
                    status = IN_PROGRESS if reported.get(aid) else NOT_STARTED
                    closed_at = None
                    kind = AssignmentEventType.STATUS_CHANGED
                    self.add_history("assignment", aid, "reopened", event.submitted_by,
                                     {"reason": "agency named again by the recommendation",
                                      "status": status})
                row: dict[str, Any] = {
                    "id": aid, "recommendation_id": event.recommendation_id,
                    "agency_id": agency_id, "role": role, "status": status,
                    "due": due,
                    "active_from": (before or {}).get("active_from") or owed_from,
                    "version": (before["version"] + 1) if before else 1,
                    "created_at": before["created_at"] if before else now, "updated_at": now,
                    "closed_at": closed_at,
                    "agency_name": agency_by_id[agency_id]["name"],
                }
                rows.append(row)
                changes[event.recommendation_id].append((row, kind, previous))
                if before:
                    result.assignments_updated += 1
                    moved = {k: {"from": _plain(before[k]), "to": _plain(row[k])}
                             for k in ("role", "due") if before[k] != row[k]}
                    if moved:
                        self.add_history("assignment", aid, "updated", event.submitted_by,
                                         moved)
                else:
                    result.assignments_created += 1
                    created[event.recommendation_id][str(aid)] = {
                        "agency_id": str(agency_id), "role": role, "named_as": claim.name}
            # Agencies no longer named by the new version: their open assignment is cancelled.
            for dropped in sorted(by_rec[event.recommendation_id] - wanted):
                before = current[dropped]
                if is_closed(before["status"]):
                    continue
                row = {**before, "status": CANCELLED,
                       "version": before["version"] + 1, "updated_at": now, "closed_at": now}
                rows.append(row)
                result.assignments_cancelled += 1
                changes[event.recommendation_id].append(
                    (row, AssignmentEventType.CLOSED, AssignmentStatus(before["status"])))
                self.add_history("assignment", dropped, "cancelled", event.submitted_by,
                                 {"reason": SYSTEM_CANCEL, "from": before["status"]})

        await self.copy_rows("assignments", ASSIGNMENT_COLUMNS,
                             [r for r in rows if r["id"] not in current])
        known = [r for r in rows if r["id"] in current]
        if known:
            driver = await self.driver_connection()
            await driver.execute(UPSERT_ASSIGNMENTS, *columns_of(known, ASSIGNMENT_COLUMNS))
        for event in changed:
            if event.recommendation_id in changes:
                self._announce_changes(event, encoded[event.recommendation_id], [
                    assignment_change(row, kind, reported.get(row["id"], []), previous)
                    for row, kind, previous in changes[event.recommendation_id]])
        return created

    async def assignments_of(self, recommendation_ids: list[uuid.UUID], *,
                             for_update: bool = False) -> list[dict[str, Any]]:
        """These recommendations' assignment rows with their agency's name (locked for this
        transaction with ``for_update``), in recommendation and assignment order."""
        found: list[dict[str, Any]] = []
        for ids in chunks(recommendation_ids):
            query = (select(ASSIGNMENTS, AGENCIES.c.name.label("agency_name"))
                     .join(AGENCIES, AGENCIES.c.id == ASSIGNMENTS.c.agency_id)
                     .where(ASSIGNMENTS.c.recommendation_id.in_(list(ids)))
                     .order_by(ASSIGNMENTS.c.recommendation_id, ASSIGNMENTS.c.id))
            if for_update:
                query = query.with_for_update(of=ASSIGNMENTS)
            found += [dict(row) for row in (await self.session.execute(query)).mappings()]
        return found

    async def _restate(self, events: list[RecommendationEvent]) -> None:
        """Announce the current state of these recommendations' assignments (same event ids
        as when that state was first announced)."""
        by_recommendation = {e.recommendation_id: e for e in events}
        encoded = {rid: dates_fragments(*dates_json(e)) for rid, e in by_recommendation.items()}
        rows = await self.assignments_of(list(by_recommendation))
        reported = await self.reported_periods([r["id"] for r in rows])
        for rid, of_one in groupby(rows, key=itemgetter("recommendation_id")):
            self._announce_changes(by_recommendation[rid], encoded[rid], [
                assignment_change(row, restated_event_type(row["version"], row["status"]),
                                  reported.get(row["id"], [])) for row in of_one])

    def _announce_changes(self, event: RecommendationEvent,
                          dates: tuple[orjson.Fragment, orjson.Fragment],
                          changes: list[dict[str, Any]]) -> None:
        """Announce the assignments a recommendation's change left (`assignment_change`s),
        in one event keyed by the recommendation; ``dates``: its deadline and due dates as
        JSON (encoded once per recommendation)."""
        deadline, due_dates = dates
        self.announce(event.recommendation_id, assignments_changed(
            event.recommendation_id, source=event.source.value, reference=event.reference,
            text=event.text, deadline=deadline, due_dates=due_dates, changes=changes))

    async def reported_periods(self, assignment_ids: list[uuid.UUID]
                               ) -> dict[uuid.UUID, list[date]]:
        periods: dict[uuid.UUID, list[date]] = defaultdict(list)
        for ids in chunks(assignment_ids):
            for row in (await self.session.execute(
                    select(REPORTS.c.assignment_id, REPORTS.c.period_start).distinct()
                    .where(REPORTS.c.assignment_id.in_(list(ids))))).all():
                periods[row.assignment_id].append(row.period_start)
        return periods

    async def _cancelled_by_report(self, assignment_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Assignments whose latest report cancelled them: a coordinator's decision stands."""
        if not assignment_ids:
            return set()
        latest = (select(REPORTS.c.assignment_id, REPORTS.c.status)
                  .ext(distinct_on(REPORTS.c.assignment_id))
                  .where(REPORTS.c.assignment_id.in_(assignment_ids))
                  .order_by(REPORTS.c.assignment_id, REPORTS.c.submitted_at.desc())).subquery()
        rows = (await self.session.execute(
            select(latest.c.assignment_id)
            .where(latest.c.status == AssignmentStatus.CANCELLED.value))).all()
        return {r.assignment_id for r in rows}


def recommendation_row(e: RecommendationEvent, now: datetime) -> dict[str, Any]:
    """A new recommendation's row (RECOMMENDATION_COLUMNS), version 1, written at ``now``."""
    # JSON columns go to PostgreSQL as text (asyncpg's json codec takes str); the deadline
    # and due dates are encoded once here and reused by the assignment events.
    deadline, due_dates = dates_json(e)
    return {
        "id": e.recommendation_id, "source": e.source.value, "reference": e.reference,
        "natural_key": orjson.dumps(e.natural_key).decode(), "text": e.text,
        "deadline": deadline, "due_dates": due_dates,
        "executors": orjson.dumps(executors_json(e.executors)).decode(),
        "payload": orjson.dumps(e.payload).decode(), "content_hash": e.content_hash,
        "version": 1, "needs_deadline": e.deadline.needs_deadline, "created_at": now,
        "updated_at": now, "last_event_at": e.occurred_at, "last_event_id": e.event_id,
    }


def dates_json(e: RecommendationEvent) -> tuple[str, str]:
    """A recommendation's deadline and due dates as JSON text."""
    return (orjson.dumps(deadline_json(e.deadline)).decode(),
            orjson.dumps(due_dates_json(e.due_dates)).decode())


def dates_fragments(deadline: str, due_dates: str) -> tuple[orjson.Fragment, orjson.Fragment]:
    """That JSON, to be embedded as is in the assignment events (``assignment_event``)."""
    return orjson.Fragment(deadline), orjson.Fragment(due_dates)


def _plain(value: Any) -> Any:
    """JSON-friendly history values."""
    return value.isoformat() if isinstance(value, date) else value


def assignment_change(row: dict[str, Any], event_type: AssignmentEventType,
                      reported: list[date], previous_status: AssignmentStatus | None = None
                      ) -> dict[str, Any]:
    """An assignment row's state as an `AssignmentChange` (the fields of its event that are
    not its recommendation's), with its event id: one per assignment, version and type
    (`shared.ids.assignment_event_id`)."""
    return {
        "event_id": assignment_event_id(row["id"], row["version"], event_type),
        "type": event_type, "assignment_id": row["id"], "agency_id": row["agency_id"],
        "agency_name": row["agency_name"], "role": row["role"], "status": row["status"],
        "active_from": row["active_from"], "reported_periods": sorted(set(reported)),
        "version": row["version"], "due": row["due"], "previous_status": previous_status,
    }


def assignments_changed(recommendation_id: uuid.UUID, *, source: str, reference: str, text: str,
                        deadline: Any, due_dates: Any, changes: list[dict[str, Any]]
                        ) -> EncodedEvent:
    """An `AssignmentsChanged` event as JSON: ``changes`` from `assignment_change`.

    `deadline` and `due_dates` are the recommendation's, as Python values or as JSON encoded
    already (`orjson.Fragment`). The unit tests hold this to the schema: every field, nothing
    else, and it validates. Its id follows from its changes' ids.
    """
    event_id = assignments_changed_id(c["event_id"] for c in changes)
    return EncodedEvent(event_id, orjson.dumps({
        "schema_version": 1, "event_id": event_id, "occurred_at": datetime.now(UTC),
        "type": ASSIGNMENTS_CHANGED, "recommendation_id": recommendation_id, "source": source,
        "reference": reference, "text": text, "deadline": deadline, "due_dates": due_dates,
        "assignments": changes,
    }, default=str).decode())  # default: asyncpg's own UUID type, which orjson does not know


def assignment_event(
    row: dict[str, Any], *, event_type: AssignmentEventType, source: str, reference: str,
    text: str, deadline: Any, due_dates: Any, reported: list[date],
    previous_status: AssignmentStatus | None = None, report_period: date | None = None,
) -> EncodedEvent:
    """An `AssignmentEvent` as JSON, built straight from the row: one assignment's change
    (a progress report). The unit tests hold this to the schema like `assignments_changed`.
    """
    change = assignment_change(row, event_type, reported, previous_status)
    return EncodedEvent(change["event_id"], orjson.dumps({
        **change, "schema_version": 1, "occurred_at": datetime.now(UTC),
        "recommendation_id": row["recommendation_id"], "source": source,
        "reference": reference, "text": text, "deadline": deadline, "due_dates": due_dates,
        "report_period": report_period,
    }, default=str).decode())
