"""bench/reminders: one reminder pass over 1,000,000 assignments in the notifier.

Loads the assignments, their due dates and 2,000 agencies straight into the notifier's
own tables (COPY), then runs one pass through the notifier's HTTP API against the SMTP
sink and prints how long the due-set computation took and how long claiming, rendering
and sending the digests took.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import psutil

from bench.common import PeakMemory, all_pids, fresh_stack, machine
from hrtrack.devstack import DevStack
from shared.db import asyncpg_dsn

LANGUAGES = ("en", "ru", "kk")
FIRST_DUE, LAST_DUE = date(2009, 1, 1), date(2012, 12, 31)


def quarter_report_due(day: date) -> date:
    """The 10th of the month after the quarter of `day` ends."""
    month = 3 * ((day.month - 1) // 3) + 4
    year = day.year + (month > 12)
    return date(year, (month - 1) % 12 + 1, 10)


async def load(pool: asyncpg.Pool, n: int, agencies: int, seed: int = 3) -> int:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    agency_rows = [(uuid.uuid4(), f"Agency {i}", [f"agency{i}@bench.example"],
                    LANGUAGES[i % 3], f"head{i}@bench.example", False, now)
                   for i in range(agencies)]
    span = (LAST_DUE - FIRST_DUE).days
    assignment_rows: list[tuple[Any, ...]] = []
    due_rows: list[tuple[Any, ...]] = []
    for i in range(n):
        agency = agency_rows[i % agencies]
        aid = uuid.uuid4()
        due = FIRST_DUE + timedelta(days=rng.randrange(span))
        start = due - timedelta(days=365)
        status = "implemented" if rng.random() < 0.3 else rng.choice(
            ("not_started", "in_progress", "partially_implemented"))
        role = rng.choice(("lead", "co", "partner"))
        assignment_rows.append((
            aid, uuid.uuid4(), agency[0], agency[1], role,
            status, "plan", f"BENCH / Chapter {i % 40} / action {i}",
            f"Action {i}: ensure every allegation of torture is investigated promptly.",
            '{"text": "2011", "start": null, "due": null, "recurrence": null}', start, [], 1,
            now))
        # agency, status and role are copied onto the due rows as the consumer does, so
        # the table's keep-in-sync triggers have nothing to fill in.
        due_rows.append((aid, "deadline", due, start, agency[0], status, role))
        quarter = date(start.year, 3 * ((start.month - 1) // 3) + 1, 1)
        for _ in range(4):  # a year of quarterly progress reports
            due_rows.append((aid, "report", quarter_report_due(quarter), quarter, agency[0],
                             status, role))
            quarter = (quarter + timedelta(days=95)).replace(day=1)
            quarter = quarter.replace(month=3 * ((quarter.month - 1) // 3) + 1)
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "agency_contacts", schema_name="notifier", records=agency_rows,
            columns=["id", "name", "emails", "language", "escalation_email", "needs_review",
                     "updated_at"])
        await conn.copy_records_to_table(
            "assignments", schema_name="notifier", records=assignment_rows,
            columns=["id", "recommendation_id", "agency_id", "agency_name", "role", "status",
                     "source", "reference", "text", "deadline", "active_from",
                     "reported_periods", "version", "updated_at"])
        await conn.copy_records_to_table(
            "due_dates", schema_name="notifier", records=due_rows,
            columns=["assignment_id", "kind", "due_date", "period_start", "agency_id", "status",
                     "role"])
        await conn.execute("ANALYZE notifier.assignments; ANALYZE notifier.due_dates; "
                           "ANALYZE notifier.agency_contacts")
    return len(due_rows)


async def run(args: argparse.Namespace, stack: DevStack) -> dict[str, float]:
    info = stack.info()
    pool = await asyncpg.create_pool(asyncpg_dsn(info["database_url"]), min_size=1, max_size=2)
    try:
        started = time.perf_counter()
        due_rows = await load(pool, args.n, args.agencies)
        print(f"reminders: loaded {args.n:,} assignments ({due_rows:,} due dates, "
              f"{args.agencies:,} agencies) in {time.perf_counter() - started:.1f}s")
        pids = all_pids(stack)
        if stack.smtp and stack.smtp.process and stack.smtp.process.proc:
            pids["smtp"] = stack.smtp.process.proc.pid
        idle_mb = psutil.Process(pids["notifier"]).memory_info().rss / 2**20
        with PeakMemory(pids) as memory:
            # CPU seconds as well as wall time: the machine may be busy with other work.
            cpu_before = memory.cpu_seconds()
            async with httpx.AsyncClient(timeout=3600, headers={
                    "Authorization": f"Bearer {info['coordinator_token']}"}) as http:
                started = time.perf_counter()
                answer = await http.post(f"{info['notifier_url']}/v1/reminders/run",
                                         params={"as_of": args.as_of})
                total = time.perf_counter() - started
            cpu_after = memory.cpu_seconds()
        answer.raise_for_status()
        report = answer.json()
        mails = len(list(stack.mail_dir.glob("*.eml")))
    finally:
        await pool.close()
    due_set_ms = float(report["due_set_ms"])
    print(f"  pass as of {args.as_of}: {report.get('candidates', '?')} reminders due, "
          f"{mails:,} digests delivered to the SMTP sink")
    largest = max((d["items"] for k in ("sent", "failed", "retrying") for d in report[k]),
                  default=0)
    print(f"  digests: {len(report['sent']):,} sent, {len(report['failed']):,} failed, "
          f"{len(report['retrying']):,} to retry; the largest has {largest:,} reminders")
    for failed in report["failed"][:3]:
        print(f"    failed: {failed['recipient']} ({failed['items']:,} reminders): "
              f"{failed['error'][:120]}")
    print(f"  due-set computation: {due_set_ms:,.0f} ms")
    print(f"  claiming, rendering and sending: {total * 1000 - due_set_ms:,.0f} ms "
          f"(whole pass {total:.1f}s)")
    cpu = {name: cpu_after[name] - cpu_before[name] for name in pids}
    print(f"  CPU during the pass: notifier {cpu.get('notifier', 0):.1f}s, "
          f"postgres {cpu.get('postgres', 0):.1f}s, SMTP sink {cpu.get('smtp', 0):.1f}s")
    print("  peak resident memory: " + ", ".join(
        f"{name} {mb:.0f} MB" for name, mb in sorted(memory.peak_mb.items())))
    print(f"  notifier peak resident memory: {memory.peak_mb.get('notifier', 0):.0f} MB "
          f"({idle_mb:.0f} MB before the pass)")
    return {"due_set_ms": due_set_ms, "pass_s": total}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=1_000_000, help="assignments")
    parser.add_argument("--agencies", type=int, default=2_000)
    parser.add_argument("--as-of", default="2010-06-30")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    args = parser.parse_args()
    print(machine())
    # Scheduled passes off: the benchmark runs exactly one.
    with fresh_stack({"HRTRACK_PASS_INTERVAL_SECONDS": "0"}) as stack:
        figures = asyncio.run(run(args, stack))
    print(f"reminders: due-set {figures['due_set_ms']:.0f} ms")


if __name__ == "__main__":
    main()
