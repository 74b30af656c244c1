"""bench/pipeline: recommendations end to end through intake, Kafka and the tracker.

Pushes N recommendations (1 to 5 executors each) in batches over HTTP into a fresh dev
stack and measures until every one and every assignment is in the tracker's tables;
then the latency of single recommendations at a steady rate; then the raw limits of the
same machine (aiokafka produce and consume of the same payloads, asyncpg executemany of
the same rows) and the ratio of end-to-end throughput to the lowest raw limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import PeakMemory, all_pids, fresh_stack, machine, service_pids
from hrtrack.devstack import DevStack, instances
from services.tracker.domain import executor_claims
from services.tracker.repository import (
    ASSIGNMENT_COLUMNS,
    HISTORY_COLUMNS,
    RECOMMENDATION_COLUMNS,
    recommendation_row,
)
from shared.db import asyncpg_dsn
from shared.events import RecommendationEvent
from shared.recommendations import RECOMMENDATION_ADAPTER, to_event

ROOT = Path(__file__).resolve().parent.parent
DIRECTORY = ROOT / "services" / "tracker" / "data" / "agencies.json"
QUARTERS = ["1st quarter of 2031", "2nd quarter 2031", "3rd-4th quarter 2031", "2031",
            "2031-2032", "4th quarter of 2032"]
COMMITTEES = ["CAT", "CCPR", "CESCR", "CEDAW", "CRC", "CERD", "CRPD"]


def agency_names() -> list[str]:
    return [entry["name"] for entry in json.loads(DIRECTORY.read_text())]


def expected_assignments(items: list[dict[str, Any]]) -> int:
    """Assignments the tracker must end with: one per distinct agency named."""
    return sum(
        len(executor_claims(to_event(RECOMMENDATION_ADAPTER.validate_python(i),
                                     submitted_by="bench")))
        for i in items)


def make_items(n: int, run: str, seed: int = 7) -> tuple[list[dict[str, Any]], int]:
    """n recommendations of the three sources; returns them and the assignments expected."""
    rng = random.Random(seed)
    names = agency_names()
    items: list[dict[str, Any]] = []
    for i in range(n):
        executors = rng.sample(names, rng.randint(1, 5))
        roles = ["lead"] + ["co"] * (len(executors) - 1)
        as_list = [{"name": name, "role": role} for name, role in zip(executors, roles,
                                                                       strict=True)]
        kind = i % 3
        text = (f"Recommendation {i} of run {run}: ensure that every allegation of torture is "
                "investigated promptly, impartially and effectively, and that perpetrators "
                "are prosecuted and punished with penalties commensurate with the crime.")
        if kind == 0:
            items.append({"source": "plan", "plan": f"BENCH-{run}", "chapter": f"Chapter {i % 40}",
                          "number": str(i), "text": text, "deadline": rng.choice(QUARTERS),
                          "executors": ", ".join(executors)})
        elif kind == 1:
            items.append({"source": "upr", "state": "KAZ", "cycle": 3, "session": 34,
                          "review_date": "2019-11-07", "symbol": "A/HRC/43/10",
                          "paragraph": f"{100 + i // 1000}.{i % 1000}.{abs(hash(run)) % 997}",
                          "text": text, "recommending_states": ["Germany", "Chile"],
                          "response": "supported", "themes": ["torture"], "executors": as_list})
        else:
            items.append({"source": "treaty_body", "state": "KAZ",
                          "committee": rng.choice(COMMITTEES), "symbol": f"CAT/C/KAZ/CO/{run}",
                          "paragraph": str(i), "adopted": "2024-11-21", "text": text,
                          "follow_up": i % 10 == 2, "follow_up_due": "2025-11-28",
                          "executors": as_list})
    return items, expected_assignments(items)


async def counts(pool: asyncpg.Pool) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM tracker.recommendations) AS r, "
        "(SELECT count(*) FROM tracker.assignments) AS a")
    return int(row["r"]), int(row["a"])


APPLIED = 'hrtrack_recommendations_ingested_total{outcome="changed"}'


async def applied(http: httpx.AsyncClient, urls: list[str]) -> float:
    """Recommendations the trackers have committed, from their own counters: polling their
    metrics costs them far less than a count(*) over a growing table costs PostgreSQL, and
    the poll competes for the CPU with what it measures."""
    total = 0.0
    for url in urls:
        for line in (await http.get(f"{url}/metrics")).text.splitlines():
            if line.startswith(APPLIED):
                total += float(line.rsplit(" ", 1)[1])
    return total


def tracker_urls(stack: DevStack) -> list[str]:
    """The tracker and its replicas (``--trackers``)."""
    return [stack.url(name) for name in instances("tracker", stack.services)]


@dataclass
class Throughput:
    seconds: float
    recommendations: int
    assignments: int
    rejected: int

    @property
    def rec_per_s(self) -> float:
        return self.recommendations / self.seconds

    @property
    def assignments_per_s(self) -> float:
        return self.assignments / self.seconds


async def push_all(stack: DevStack, items: list[dict[str, Any]], expected: int, batch: int,
                   concurrency: int, pool: asyncpg.Pool) -> Throughput:
    info = stack.info()
    headers = {"Authorization": f"Bearer {info['coordinator_token']}"}
    base_r, base_a = await counts(pool)
    # The load generator encodes its bodies before the clock starts: it shares the machine.
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        queue.put_nowait((len(chunk), orjson.dumps({"items": chunk})))
    rejected = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal rejected
        while not queue.empty():
            _, body = queue.get_nowait()
            while True:
                answer = await http.post(f"{info['intake_url']}/v1/recommendations",
                                         content=body)
                if answer.status_code == 503:
                    await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
                    continue
                answer.raise_for_status()
                rejected += len(answer.json().get("rejected", []))
                break

    started = time.perf_counter()
    async with httpx.AsyncClient(headers={**headers, "Content-Type": "application/json"},
                                 timeout=300) as http:
        trackers = tracker_urls(stack)
        before = await applied(http, trackers)
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        posted = time.perf_counter()
        # Done when the tracker says it committed them all and its tables agree.
        while True:
            if await applied(http, trackers) - before >= len(items):
                r, a = await counts(pool)
                if r - base_r >= len(items) and a - base_a >= expected:
                    break
            if time.perf_counter() - posted > 300:
                r, _ = await counts(pool)
                raise TimeoutError(f"only {r - base_r}/{len(items)} recommendations tracked")
            await asyncio.sleep(0.1)  # each poll renders the tracker's metrics: keep it rare
    elapsed = time.perf_counter() - started
    print(f"  posted in {posted - started:.1f}s, tracked in {elapsed:.1f}s")
    return Throughput(elapsed, r - base_r, a - base_a, rejected)


async def latency(stack: DevStack, rate: float, seconds: float, pool: asyncpg.Pool,
                  run: str) -> list[float]:
    """POST one recommendation at a steady rate; time until its row is committed."""
    info = stack.info()
    headers = {"Authorization": f"Bearer {info['coordinator_token']}"}
    items, _ = make_items(int(rate * seconds), f"{run}-lat", seed=11)
    waiting: dict[uuid.UUID, float] = {}
    results: list[float] = []
    done = asyncio.Event()

    async def poller() -> None:
        while not done.is_set() or waiting:
            if waiting:
                rows = await pool.fetch("SELECT id FROM tracker.recommendations "
                                        "WHERE id = ANY($1::uuid[])", list(waiting))
                now = time.perf_counter()
                for row in rows:
                    results.append((now - waiting.pop(row["id"])) * 1000)
            await asyncio.sleep(0.002)

    async def post(http: httpx.AsyncClient, item: dict[str, Any]) -> None:
        started = time.perf_counter()
        answer = await http.post(f"{info['intake_url']}/v1/recommendations", json=item)
        answer.raise_for_status()
        waiting[uuid.UUID(answer.json()["id"])] = started

    polling = asyncio.create_task(poller())
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        tasks = []
        t0 = time.perf_counter()
        for i, item in enumerate(items):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(post(http, item)))
        await asyncio.gather(*tasks)
    done.set()
    await asyncio.wait_for(polling, 120)
    return results


def recommendation_events(items: list[dict[str, Any]]) -> list[RecommendationEvent]:
    """The events intake publishes for these items (what the raw limits store and send)."""
    return [to_event(RECOMMENDATION_ADAPTER.validate_python(i), submitted_by="bench")
            for i in items]


def event_payloads(events: list[RecommendationEvent]) -> list[tuple[bytes, bytes]]:
    return [(str(e.recommendation_id).encode(), e.model_dump_json().encode()) for e in events]


async def raw_kafka(bootstrap: str, payloads: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in payloads]
        await asyncio.gather(*futures)
        produce = len(payloads) / (time.perf_counter() - started)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"bench-{uuid.uuid4().hex[:6]}", enable_auto_commit=False)
    await consumer.start()
    try:
        seen = 0
        started = time.perf_counter()
        while seen < len(payloads):
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            seen += sum(len(b) for b in batches.values())
        consume = len(payloads) / (time.perf_counter() - started)
    finally:
        await consumer.stop()
    return produce, consume


RAW_TABLES = ("recommendations", "assignments", "history")
# The tracker's tables and the columns of the rows tracker_rows makes, in order.
TRACKER_COLUMNS: dict[str, list[str]] = {
    "recommendations": list(RECOMMENDATION_COLUMNS), "assignments": list(ASSIGNMENT_COLUMNS),
    "history": HISTORY_COLUMNS}


def tracker_rows(events: list[RecommendationEvent], now: datetime
                 ) -> dict[str, list[tuple[Any, ...]]]:
    """The rows the tracker writes per new recommendation, by table (TRACKER_COLUMNS): its
    row as the tracker builds it, one assignment per agency named and its history entry
    (naming the assignments it created)."""
    return {
        "recommendations": [
            tuple(row[c] for c in RECOMMENDATION_COLUMNS) for row in
            (recommendation_row(e, now) for e in events)],
        "assignments": [
            (uuid.uuid4(), e.recommendation_id, uuid.uuid4(), x.role.value, "not_started",
             date(2031, 12, 31), date(2031, 1, 1), 1, now, now, None)
            for e in events for x in e.executors],
        "history": [
            ("recommendation", e.recommendation_id, "created", "bench",
             json.dumps({"version": 1, "content_hash": e.content_hash,
                         "event_id": str(e.event_id), "assignments": {
                             str(uuid.uuid4()): {"agency_id": str(uuid.uuid4()),
                                                 "role": x.role.value, "named_as": x.name}
                             for x in e.executors}}), now)
            for e in events],
    }


async def raw_database(pool: asyncpg.Pool, events: list[RecommendationEvent], *,
                       tables: tuple[str, ...] = RAW_TABLES, like_tracker: bool = True) -> float:
    """Recommendations/s that asyncpg executemany stores, one transaction, of the rows the
    tracker writes per new recommendation (tracker_rows), or of the `tables` given of
    these. `like_tracker`: into tables with the tracker's columns, indexes and logging;
    otherwise into unlogged tables without indexes (what this machine can do with no index
    or WAL to maintain)."""
    rows = tracker_rows(events, datetime.now(UTC))
    inserts = {table: f"INSERT INTO bench_{table} ({', '.join(columns)}) VALUES ("
                      + ", ".join(f"${i}" for i in range(1, len(columns) + 1)) + ")"
               for table, columns in TRACKER_COLUMNS.items()}
    async with pool.acquire() as conn:
        kind, like = ("TABLE", "INCLUDING ALL") if like_tracker else ("UNLOGGED TABLE", "")
        for table in tables:
            await conn.execute(f"DROP TABLE IF EXISTS bench_{table}")
            await conn.execute(f"CREATE {kind} bench_{table} (LIKE tracker.{table} {like})")
        started = time.perf_counter()
        async with conn.transaction():
            for table in tables:
                await conn.executemany(inserts[table], rows[table])
        elapsed = time.perf_counter() - started
        for table in tables:
            await conn.execute(f"DROP TABLE bench_{table}")
    return len(events) / elapsed


async def notifier_caught_up(pool: asyncpg.Pool, assignments: int) -> float:
    """Seconds until the notifier's view holds every assignment the tracker has."""
    started = time.perf_counter()
    while await pool.fetchval("SELECT count(*) FROM notifier.assignments") < assignments:
        if time.perf_counter() - started > 600:
            raise TimeoutError("the notifier did not catch up within 10 minutes")
        await asyncio.sleep(1)
    return time.perf_counter() - started


# A group join takes about half the session timeout (6 s here); twice that, to be sure
# the partitions are shared before the clock starts.
REBALANCE_SECONDS = 12.0


async def start_trackers(stack: DevStack, wanted: int) -> None:
    """Scale the tracker out to ``wanted`` processes in its consumer group, and let the
    group settle: each join makes every member rejoin and share the partitions anew."""
    if wanted <= 1:
        return
    for _ in range(wanted - 1):
        stack.start_replica("tracker")
    print(f"  DIAGNOSTIC: {wanted} tracker processes share the recommendations' partitions")
    await asyncio.sleep(REBALANCE_SECONDS)


@contextlib.contextmanager
def paused(pid: int | None) -> Iterator[None]:
    """SIGSTOP the process for the block, then SIGCONT (None: nothing to pause)."""
    if pid is None:
        yield
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run(args: argparse.Namespace, stack: DevStack) -> dict[str, float]:
    run_id = uuid.uuid4().hex[:6]
    items, expected = make_items(args.n, run_id)
    pool = await asyncpg.create_pool(asyncpg_dsn(stack.info()["database_url"]), min_size=1,
                                     max_size=4)
    try:
        await start_trackers(stack, args.trackers)
        with PeakMemory(service_pids(stack)) as memory:
            cpu = PeakMemory(all_pids(stack))
            cpu_before = cpu.cpu_seconds()
            print(f"pipeline: pushing {args.n} recommendations ({expected} assignments) "
                  f"in batches of {args.batch}, {args.concurrency} at a time")
            if args.pause_notifier:
                print("  DIAGNOSTIC: the notifier is stopped (SIGSTOP) during the push; these "
                      "figures are the intake-tracker path alone, not the target's")
            with paused(service_pids(stack)["notifier"] if args.pause_notifier else None):
                result = await push_all(stack, items, expected, args.batch, args.concurrency,
                                        pool)
            print(f"  {result.rec_per_s:,.0f} recommendations/s, "
                  f"{result.assignments_per_s:,.0f} assignments/s end to end "
                  f"({result.recommendations} recommendations, {result.assignments} "
                  f"assignments, {result.rejected} rejected, {result.seconds:.1f}s)")
            cpu_after = cpu.cpu_seconds()
            print("  CPU seconds used during the push: " + ", ".join(
                f"{name} {cpu_after[name] - cpu_before.get(name, 0):.1f}" for name in cpu_after))
            # The notifier is downstream of the tracker and still working through the
            # assignment events; the single-item latency is taken at a steady state.
            waited = await notifier_caught_up(pool, result.assignments)
            print(f"  the notifier held every assignment {waited:.1f}s after the tracker did")
            samples = await latency(stack, args.rate, args.latency_seconds, pool, run_id)
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(f"  latency POST -> tracked at {args.rate:.0f}/s: p50 {p50:.1f} ms, "
              f"p99 {p99:.1f} ms, max {max(samples):.1f} ms ({len(samples)} samples, "
              f"mean {statistics.mean(samples):.1f} ms)")
        print("  peak resident memory: " + ", ".join(
            f"{name} {mb:.0f} MB" for name, mb in memory.peak_mb.items()))
        raw_n = min(args.n, args.raw_n)
        events = recommendation_events(items[:raw_n])
        payloads = event_payloads(events)
        produce, consume = await raw_kafka(stack.info()["kafka_bootstrap"], payloads)
        database = await raw_database(pool, events)
        core = await raw_database(pool, events, tables=("recommendations", "assignments"))
        bare = await raw_database(pool, events, tables=("recommendations", "assignments"),
                                  like_tracker=False)
    finally:
        await pool.close()
    lowest = min(produce, consume, database)
    ratio = result.rec_per_s / lowest
    print(f"  raw limits ({raw_n} of the same payloads/rows): aiokafka produce "
          f"{produce:,.0f} msg/s, consume {consume:,.0f} msg/s; asyncpg executemany into "
          f"tables like the tracker's of every row it writes per new recommendation (its "
          f"row, assignments, history) {database:,.0f} recommendations/s")
    print(f"    of the recommendation and assignment rows only: {core:,.0f}/s into tables "
          f"like the tracker's, {bare:,.0f}/s into unlogged tables without indexes")
    print(f"  ratio end-to-end / lowest raw limit: {ratio:.2f} (against the recommendation "
          f"and assignment rows only: {result.rec_per_s / core:.2f}; into unlogged tables "
          f"without indexes: {result.rec_per_s / bare:.2f})")
    return {"rec_per_s": result.rec_per_s, "ratio": ratio, "p99_ms": p99}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=float, default=50.0, help="latency phase requests/s")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--raw-n", type=int, default=50_000)
    parser.add_argument(
        "--pause-notifier", action="store_true",
        help="diagnostic: stop the notifier process during the push (it resumes and catches "
             "up before the latency phase), to see what intake and the tracker do without "
             "it competing for the same cores; not a measure of the target")
    parser.add_argument(
        "--trackers", type=int, default=1,
        help="diagnostic: run this many tracker processes in its consumer group (the first "
             "serves HTTP too), to see whether scaling the tracker out raises the rate on "
             "this machine; not a measure of the target")


def summary(args: argparse.Namespace, figures: dict[str, float]) -> str:
    """The pipeline's part of the one-line summary (labelled when it was a diagnostic)."""
    diagnostics = (["notifier paused"] if args.pause_notifier else []) + (
        [f"{args.trackers} trackers"] if args.trackers > 1 else [])
    label = f"pipeline ({', '.join(diagnostics)})" if diagnostics else "pipeline"
    return (f"{label}: {figures['rec_per_s']:.0f} rec/s, ratio {figures['ratio']:.2f}, "
            f"p99 {figures['p99_ms']:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    args = parser.parse_args()
    print(machine())
    with fresh_stack() as stack:
        figures = asyncio.run(run(args, stack))
    print(summary(args, figures))


if __name__ == "__main__":
    main()
