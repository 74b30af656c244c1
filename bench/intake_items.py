"""bench/intake_items: intake's CPU per recommendation, stage by stage and for the handler.

Stages, each over the same N items of bench.pipeline.make_items (CPU time, us per item):
decode (the batch body's JSON), validate (the payload models), to_event (ids, hash,
deadlines, executors, due dates: the event intake publishes), serialize (the records the
publisher sends: key, JSON, headers). Then the whole `POST /v1/recommendations` handler,
in-process, on N other items (batches of --batch, against a real broker: a private tansu
is started unless --bootstrap is given); its CPU includes the in-process HTTP client's.

    .venv/bin/python -m bench.intake_items --n 20000 [--profile validate|to_event|handler]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench.pipeline import make_items
from hrtrack.stack import Broker, free_port
from services.intake.domain import Submission, parse_json_body
from services.intake.main import build_app
from services.intake.publisher import encode_records
from services.intake.settings import IntakeSettings
from shared.auth import Role, create_token
from shared.kafka import wait_for_broker
from shared.recommendations import RECOMMENDATION_ADAPTER, event_content
from shared.web import tune_garbage_collector


def cpu_per_item(what: str, n: int, work: Callable[[], Any],
                 profile: str | None) -> tuple[float, Any]:
    profiler = cProfile.Profile() if profile == what else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    result = work()
    if profiler:
        profiler.disable()
    us = (time.process_time() - started) / n * 1e6
    print(f"  {what:<10} {us:7.1f} us/item")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return us, result


def stages(items: list[dict[str, Any]], batch: int, profile: str | None) -> dict[str, float]:
    n = len(items)
    bodies = [json.dumps({"items": items[i:i + batch]}).encode()
              for i in range(0, n, batch)]
    out: dict[str, float] = {}
    out["decode"], _ = cpu_per_item(
        "decode", n, lambda: [parse_json_body(b) for b in bodies], profile)
    out["validate"], recs = cpu_per_item(
        "validate", n, lambda: [RECOMMENDATION_ADAPTER.validate_python(i) for i in items],
        profile)
    out["to_event"], events = cpu_per_item(
        "to_event", n,
        lambda: [Submission(**event_content(r), submitted_by="bench") for r in recs], profile)
    out["serialize"], _ = cpu_per_item(
        "serialize", n, lambda: encode_records(events), profile)
    return out


async def handler(items: list[dict[str, Any]], bootstrap: str, batch: int,
                  profile: str | None) -> float:
    secret = secrets.token_urlsafe(32)
    settings = IntakeSettings(kafka_bootstrap=bootstrap, token_secret=secret,
                              log_level="WARNING",
                              recommendations_topic=f"bench.intake.{uuid.uuid4().hex[:8]}")
    app = build_app(settings)
    token = create_token(secret, Role.COORDINATOR, subject="bench")
    bodies = [json.dumps({"items": items[i:i + batch]}).encode()
              for i in range(0, len(items), batch)]
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=120,
            headers={"Authorization": f"Bearer {token}",
                     "content-type": "application/json"}) as client:
        for _ in range(600):  # ready once connected to the broker
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        # One warm-up request (metadata, connections, caches of the first batch).
        assert (await client.post("/v1/recommendations", content=bodies[0])).status_code == 202
        profiler = cProfile.Profile() if profile == "handler" else None
        started, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for body in bodies:
            answer = await client.post("/v1/recommendations", content=body)
            assert answer.status_code == 202, answer.text[:500]
        if profiler:
            profiler.disable()
        us = (time.process_time() - started) / len(items) * 1e6
        wall_s = time.perf_counter() - wall
    print(f"  {'handler':<10} {us:7.1f} us/item CPU, {len(items) / wall_s:,.0f} items/s wall "
          f"(batches of {batch}, in-process, real broker)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return us


async def with_broker(items: list[dict[str, Any]], args: argparse.Namespace) -> float:
    if args.bootstrap:
        return await handler(items, args.bootstrap, args.batch, args.profile)
    with tempfile.TemporaryDirectory(prefix="hrtrack-bench-") as tmp:
        broker = Broker(free_port(), Path(tmp) / "broker.log")
        broker.start()
        try:
            await wait_for_broker(broker.bootstrap)
            return await handler(items, broker.bootstrap, args.batch, args.profile)
        finally:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--bootstrap", help="a running broker (default: start one)")
    parser.add_argument("--profile", choices=["decode", "validate", "to_event", "serialize",
                                              "handler"])
    parser.add_argument("--no-handler", action="store_true")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    items, _ = make_items(args.n, uuid.uuid4().hex[:6])
    tune_garbage_collector()  # as every service does in its lifespan
    print(f"intake, {args.n} items of bench.pipeline.make_items:")
    stages(items, args.batch, args.profile)
    if not args.no_handler:
        # Other items than the stages': texts no cache has seen yet, as in a real stack.
        fresh, _ = make_items(args.n, uuid.uuid4().hex[:6], seed=8)
        uvloop.run(with_broker(fresh, args))


if __name__ == "__main__":
    main()
