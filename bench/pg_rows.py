"""bench/pg_rows: PostgreSQL's CPU per new recommendation, table by table and index by index.

Builds the rows the tracker and the notifier write for N new recommendations of
bench.pipeline.make_items (the tracker's as bench.pipeline's raw database limit makes them,
its recommendation row with the tracker's own code; the notifier's assignment rows and due
rows with its consumer's code, for the clock's today), and COPYs each table's rows into a
private PostgreSQL migrated like the services' (same options as the dev stack). Each COPY
runs in a transaction that is rolled back, on a table truncated in it, and is measured by
the CPU its backend process used: on a busy machine that is steadier than wall time, and
every variant of every table is run once per round, so a slow spell hits them all alike.

Per table it prints the rows per recommendation and the median CPU per recommendation;
then, for each index, how much less the same COPY costs without it (the index dropped in
the rolled-back transaction): what an index, or a row, costs the write path. The pipeline's
PostgreSQL CPU (bench.pipeline) also holds commits, look-ups, WAL and background work.

    .venv/bin/python -m bench.pg_rows [--n 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.common import machine
from bench.notifier_ingest import created_assignments, new_recommendations
from bench.pipeline import TRACKER_COLUMNS, tracker_rows
from hrtrack.devstack import migrate
from hrtrack.stack import Postgres, free_port
from services.notifier.consumer import (
    COPY_ASSIGNMENT_COLUMNS,
    DUE_COLUMNS,
    DueRows,
    Recommendations,
    assignment_rows,
    latest_tracked,
)
from services.notifier.policy import ReminderPolicy, report_dates_window
from shared.db import asyncpg_dsn
from shared.events import AssignmentEvent

# (schema, table, columns, rows)
Load = tuple[str, str, Sequence[str], list[tuple[Any, ...]]]


def notifier_rows(assignments: list[AssignmentEvent], today: date, now: datetime
                  ) -> list[Load]:
    """The rows the notifier's consumer writes for these new assignments on ``today``."""
    policy = ReminderPolicy()
    due_rows = DueRows(policy)
    recommendations = Recommendations()
    tracked = latest_tracked(assignments)
    window = report_dates_window(today, policy)
    plans = [due_rows.plan(a, recommendations(r)[0], window) for a, r in tracked]
    rows = [(*row, now) for row in assignment_rows(tracked, plans, recommendations)]
    due = [row for (a, _), plan in zip(tracked, plans, strict=True)
           for row in due_rows.rows(a, plan)]
    return [("notifier", "assignments", COPY_ASSIGNMENT_COLUMNS, rows),
            ("notifier", "due_dates", list(DUE_COLUMNS), due)]


async def indexes(conn: asyncpg.Connection, schema: str, table: str) -> list[str]:
    """The table's indexes, its primary key's last (dropped as a constraint)."""
    found = await conn.fetch(
        "SELECT i.indexrelid::regclass::text AS name, i.indisprimary FROM pg_index i "
        "WHERE i.indrelid = $1::regclass ORDER BY i.indisprimary, 1", f"{schema}.{table}")
    return [r["name"] for r in found]


async def copy_cpu(conn: asyncpg.Connection, backend: psutil.Process, load: Load,
                   drop_index: str | None) -> float:
    """CPU seconds of one COPY of the load (without ``drop_index``), rolled back."""
    schema, table, columns, rows = load
    transaction = conn.transaction()
    await transaction.start()
    try:
        if drop_index:
            primary = await conn.fetchval(
                "SELECT conname FROM pg_constraint WHERE conindid = $1::regclass "
                "AND contype = 'p'", drop_index)
            await conn.execute(f"ALTER TABLE {schema}.{table} DROP CONSTRAINT {primary} CASCADE"
                               if primary else f"DROP INDEX {drop_index}")
        # A new empty file for the table and its indexes (rolled back with the rest), so
        # no round finds the dead rows of the one before.
        await conn.execute(f"TRUNCATE {schema}.{table} CASCADE")
        before = backend.cpu_times()
        await conn.copy_records_to_table(table, schema_name=schema, columns=list(columns),
                                         records=rows)
        after = backend.cpu_times()
        return after.user + after.system - before.user - before.system
    finally:
        await transaction.rollback()


async def measure(database_url: str, loads: list[Load], n: int, rounds: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
        variants = [(load, index) for load in loads
                    for index in [None, *await indexes(conn, load[0], load[1])]]
        cpu: dict[tuple[str, str, str | None], list[float]] = {}
        for _ in range(rounds):
            for load, index in variants:
                used = await copy_cpu(conn, backend, load, index)
                cpu.setdefault((load[0], load[1], index), []).append(used / n * 1e6)
    finally:
        await conn.close()
    total = 0.0
    print(f"\n{'table':<26}{'rows/rec':>9}{'us/rec':>9}   (median of {rounds}; min-max)")
    for schema, table, _, rows in loads:
        runs = cpu[(schema, table, None)]
        whole = statistics.median(runs)
        total += whole
        print(f"{schema + '.' + table:<26}{len(rows) / n:>9.1f}{whole:>9.1f}   "
              f"({min(runs):.1f}-{max(runs):.1f})")
        for (of_schema, of_table, index), without in cpu.items():
            if (of_schema, of_table) == (schema, table) and index is not None:
                print(f"{'':<8}{index.split('.')[-1]:<36} adds "
                      f"{whole - statistics.median(without):5.1f} us/rec")
    print(f"{'all of them':<35}{total:>9.1f} us of PostgreSQL CPU per recommendation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="recommendations")
    parser.add_argument("--rounds", type=int, default=7, help="COPYs of each variant")
    args = parser.parse_args()
    print(machine())
    today, now = date.today(), datetime.now(UTC)
    recommendations = new_recommendations(args.n)
    assignments = created_assignments(recommendations, today)
    n = len(recommendations)
    loads: list[Load] = [("tracker", table, TRACKER_COLUMNS[table], rows) for table, rows
                         in tracker_rows(recommendations, now).items()]
    loads += notifier_rows(assignments, today, now)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hrtrack-bench-") as tmp:
        pg = Postgres(Path(tmp) / "pg", free_port(), Path(tmp) / "postgres.log")
        pg.start()
        try:
            migrate(pg.url)
            asyncio.run(measure(pg.url, loads, n, args.rounds))
        finally:
            pg.stop()
    print(f"({n:,} recommendations, {len(assignments):,} assignments, "
          f"{time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
