"""bench/notifier_ingest: the notifier storing `assignments` events, without Kafka.

Starts its own PostgreSQL (as the tests do, with pg_stat_statements), migrates it, makes
assignment events the way the tracker does for the pipeline bench's recommendations (plan
deadlines in 2031-2032, UPR and treaty-body due dates, 1 to 5 agencies each) and feeds them
to ``TrackerEventsConsumer.handle_assignments`` in batches as the broker would hand them
over (parse, keep the latest per key, store). Three rounds: every assignment new (one
AssignmentsChanged per recommendation, as the tracker announces an ingest), every one
changed (one AssignmentEvent per assignment, as it announces a report: a new version with a
quarter reported, its due dates replaced), and the first round delivered again (stale:
nothing may change).

Prints per round the due rows written per assignment, the Python CPU per assignment of this
process (all of the handler: parsing, rows, SQLAlchemy/asyncpg), the CPU the PostgreSQL
processes used and the time per statement (pg_stat_statements; a COPY's time includes
waiting for the client's rows). The consumer's clock says TODAY: report rows go up to its
horizon. Run on demand, not in `make test`:

    .venv/bin/python -m bench.notifier_ingest [--n 30000] [--batch 2000] [--profile FILE]

Another version of the consumer, for a before/after comparison:

    git show REV:services/notifier/consumer.py > /tmp/consumer_rev.py
    .venv/bin/python -m bench.notifier_ingest --consumer /tmp/consumer_rev.py --revision 0003
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.util
import inspect
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import uvloop
from faststream.kafka import KafkaBroker
from sqlalchemy import text

from bench.common import machine
from bench.pipeline import make_items
from hrtrack.devstack import migrations_dir
from hrtrack.stack import Postgres, free_port
from services.notifier.consumer import TrackerEventsConsumer
from services.notifier.reminders import ReminderService
from services.notifier.settings import NotifierSettings
from services.tracker.domain import active_from, executor_claims, own_due
from shared.clock import Clock
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.events import (
    AssignmentEvent,
    AssignmentEventType,
    AssignmentsChanged,
    AssignmentStatus,
    RecommendationEvent,
)
from shared.ids import agency_id, assignment_id
from shared.recommendations import RECOMMENDATION_ADAPTER, to_event
from shared.web import tune_garbage_collector

TODAY = date(2030, 11, 20)
TOPIC = "assignments-bench"


def new_recommendations(n: int) -> list[RecommendationEvent]:
    """The events intake publishes for n of bench.pipeline.make_items' recommendations."""
    items, _ = make_items(max(1, n), run=uuid.uuid4().hex[:8])
    return [to_event(RECOMMENDATION_ADAPTER.validate_python(item), submitted_by="bench")
            for item in items]


def created_assignments(recommendations: list[RecommendationEvent], today: date
                        ) -> list[AssignmentEvent]:
    """One assignment event (version 1) per agency each names, as the tracker announces
    new assignments on ``today``."""
    events: list[AssignmentEvent] = []
    for rec in recommendations:
        for claim in executor_claims(rec):
            agency = agency_id(claim.key)
            events.append(AssignmentEvent(
                type=AssignmentEventType.CREATED,
                assignment_id=assignment_id(rec.recommendation_id, agency),
                recommendation_id=rec.recommendation_id, agency_id=agency,
                agency_name=claim.name, role=claim.role.value,
                status=AssignmentStatus.NOT_STARTED, source=rec.source,
                reference=rec.reference, text=rec.text, deadline=rec.deadline,
                due_dates=rec.due_dates, active_from=active_from(rec, today),
                due=own_due(rec.due_dates, rec.deadline.due)))
    return events


def make_events(n: int) -> list[AssignmentEvent]:
    """About n assignment events (version 1), as the tracker announces new assignments."""
    return created_assignments(new_recommendations(n // 3), TODAY)[:n]


def next_versions(events: list[AssignmentEvent]) -> list[AssignmentEvent]:
    """Each assignment one version later: in progress, its first quarter reported."""
    return [e.model_copy(update={
        "type": AssignmentEventType.REPORT_SUBMITTED, "status": AssignmentStatus.IN_PROGRESS,
        "version": e.version + 1, "event_id": uuid.uuid4(),
        "reported_periods": [e.active_from] if e.active_from else []}) for e in events]


def batches(bodies: list[tuple[bytes, bytes]], size: int) -> Iterator[SimpleNamespace]:
    """What FastStream hands a batch subscriber: raw records with value and key."""
    for start in range(0, len(bodies), size):
        records = tuple(SimpleNamespace(value=v, key=k) for k, v in bodies[start:start + size])
        yield SimpleNamespace(raw_message=records, ack=_no_ack)


async def _no_ack() -> None:
    return None


def postgres_cpu(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def encoded(events: list[AssignmentEvent]) -> list[tuple[bytes, bytes]]:
    """(key, value) of each event as the tracker's outbox publishes it."""
    return [(str(e.recommendation_id).encode(), e.model_dump_json().encode()) for e in events]


def encoded_changes(events: list[AssignmentEvent]) -> list[tuple[bytes, bytes]]:
    """(key, value) of these assignments as the tracker's ingest announces them: one
    AssignmentsChanged per recommendation."""
    by_recommendation: dict[uuid.UUID, list[AssignmentEvent]] = {}
    for e in events:
        by_recommendation.setdefault(e.recommendation_id, []).append(e)
    changes = [AssignmentsChanged.of(of_one) for of_one in by_recommendation.values()]
    return [(str(c.recommendation_id).encode(), c.model_dump_json().encode()) for c in changes]


async def run_round(name: str, consumer: TrackerEventsConsumer, engine: Any,
                    bodies: list[tuple[bytes, bytes]], n: int, batch: int, pg_pid: int,
                    profile: cProfile.Profile | None) -> None:
    """``bodies``: records carrying ``n`` assignments."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_stat_statements_reset()"))
    pg_before = postgres_cpu(pg_pid)
    wall, cpu = time.perf_counter(), time.process_time()
    if profile:
        profile.enable()
    for msg in batches(bodies, batch):
        await consumer.handle_assignments([], msg)  # type: ignore[arg-type]
    if profile:
        profile.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pg_cpu = postgres_cpu(pg_pid) - pg_before
    async with engine.connect() as conn:
        stats = (await conn.execute(text(
            "SELECT calls, rows, total_exec_time, query FROM pg_stat_statements "
            "WHERE query ~* 'notifier' ORDER BY total_exec_time DESC"))).all()
    print(f"\n{name}: {n:,} assignments in {len(bodies):,} records, batches of {batch}: "
          f"{wall:.2f}s wall, {n / wall:,.0f} assignments/s")
    print(f"  Python CPU (this process): {cpu * 1e6 / n:6.1f} us/assignment")
    print(f"  PostgreSQL CPU (all its processes): {pg_cpu * 1e6 / n:6.1f} us/assignment")
    # New assignments go in with COPY too: count the due rows' COPY only.
    copied = sum(s.rows for s in stats if s.query.lstrip().upper().startswith("COPY")
                 and "due_dates" in s.query)
    print(f"  due rows written: {copied / n:.2f}/assignment")
    total = sum(s.total_exec_time for s in stats)
    print(f"  PostgreSQL statement time: {total / 1000:.2f}s = {total * 1000 / n:.1f} "
          "us/assignment")
    for s in stats[:6]:
        query = " ".join(s.query.split())
        print(f"    {s.total_exec_time / 1000:7.3f}s {s.calls:6,} calls {s.rows:9,} rows  "
              f"{query[:90]}")


async def extension_round(engine: Any, settings: NotifierSettings, pg_pid: int) -> None:
    """The cost of the rolling window of report rows: a pass a year after the events were
    stored adds the quarters every open assignment needs by then (the most a pass on the
    day after a quarter's report rows leave the window can have to do)."""
    reminders = ReminderService(make_sessionmaker(engine), settings)
    as_of = TODAY + timedelta(days=365)
    pg_before = postgres_cpu(pg_pid)
    wall, cpu = time.perf_counter(), time.process_time()
    extended = await reminders.extend_report_dates(as_of)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pg_cpu = postgres_cpu(pg_pid) - pg_before
    per = 1e6 / max(extended, 1)
    print(f"\nreport rows extended for a pass as of {as_of}: {extended:,} assignments in "
          f"{wall:.2f}s wall; Python {cpu * per:.1f} us, PostgreSQL {pg_cpu * per:.1f} us "
          f"per assignment")


def consumer_class(path: Path | None) -> type[TrackerEventsConsumer]:
    """The service's consumer, or the one in another copy of consumer.py."""
    if path is None:
        return TrackerEventsConsumer
    spec = importlib.util.spec_from_file_location("notifier_consumer_under_test", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: type[TrackerEventsConsumer] = module.TrackerEventsConsumer
    return found


async def main(args: argparse.Namespace, database_url: str, pg_pid: int) -> None:
    tune_garbage_collector()
    settings = NotifierSettings(database_url=database_url, assignments_topic=TOPIC,
                                kafka_bootstrap="127.0.0.1:1")  # never connected
    engine = make_engine(database_url)
    found = consumer_class(args.consumer)
    parts: list[Any] = [KafkaBroker("127.0.0.1:1"), make_sessionmaker(engine), settings]
    has_clock = "clock" in inspect.signature(found.__init__).parameters  # older: none
    if has_clock:
        parts.append(Clock(TODAY))
    consumer = found(*parts)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
    events = make_events(args.n)
    rows_per_event = sum(len(e.due_dates) for e in events) / len(events)
    print(f"{len(events):,} assignment events, {rows_per_event:.1f} own due dates each")
    n = len(events)
    first, second = encoded_changes(events), encoded(next_versions(events))
    del events
    # Like a service after startup: what lives on (the events to feed) stays out of the
    # collector's scans, so the rounds measure the handler, not the bench's own heap.
    gc.collect()
    gc.freeze()
    profile = cProfile.Profile() if args.profile else None
    try:
        await run_round("new assignments", consumer, engine, first, n, args.batch, pg_pid,
                        profile)
        await run_round("changed assignments", consumer, engine, second, n, args.batch, pg_pid,
                        profile)
        await run_round("stale re-deliveries", consumer, engine, first, n, args.batch, pg_pid,
                        profile)
        async with engine.connect() as conn:
            due = (await conn.execute(text("SELECT count(*) FROM notifier.due_dates"))).scalar()
        print(f"\nnotifier.due_dates: {due:,} rows")
        if has_clock:
            await extension_round(engine, settings, pg_pid)
    finally:
        await engine.dispose()
    if profile:
        profile.dump_stats(args.profile)
        print(f"profile written to {args.profile}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000, help="assignment events per round")
    parser.add_argument("--batch", type=int, default=2000, help="records per batch")
    parser.add_argument("--revision", default="head", help="notifier migration to run up to")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the rounds here")
    parser.add_argument("--consumer", type=Path,
                        help="a consumer.py to measure instead of the service's")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory(prefix="hrtrack-bench-") as tmp:
        pg = Postgres(Path(tmp) / "pg", free_port(), Path(tmp) / "postgres.log",
                      extra_options=["-c", "shared_preload_libraries=pg_stat_statements"])
        pg.start()
        try:
            upgrade(migrations_dir("notifier"), pg.url, args.revision)
            assert pg.process is not None and pg.process.proc is not None
            uvloop.run(main(args, pg.url, pg.process.proc.pid))
        finally:
            pg.stop()


if __name__ == "__main__":
    cli()
