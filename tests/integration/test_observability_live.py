"""A real Prometheus scrapes a dev stack under traffic; every dashboard and alert expression
returns series.

Alert rules compare a signal with a threshold, and a healthy stack does not cross it, so
for alerts the signal (the expression without its final comparison) is what must return
series: that proves the metric names, labels and functions are right.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from hrtrack.devstack import DevStack
from hrtrack.stack import ManagedProcess, free_port, wait_for_port
from shared.settings import TOPIC_RECOMMENDATIONS
from tests.conftest import STACK_TEST_ENV
from tests.helpers import eventually
from tests.infra_expressions import alert_expressions, dashboard_expressions

COMPARISON = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[-+]?[\d.]+(e[-+]?\d+)?\s*$", re.IGNORECASE)


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        # The test installs Debian's package where it can, as .ci/run does.
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install "
                       "-y -qq --no-install-recommends prometheus", shell=True, check=False,
                       capture_output=True, timeout=600)
        found = shutil.which("prometheus")
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("prometheus is not installed (Debian package `prometheus`)")
    pytest.skip("prometheus is not installed and cannot be installed here")


def alert_signals() -> list[tuple[str, str]]:
    """Each alert's expression with its threshold comparisons removed (top-level `and` too)."""
    signals = []
    for source, expr in alert_expressions():
        for part in split_top_level_and(expr):
            signals.append((source, COMPARISON.sub("", part).strip()))
    return signals


def split_top_level_and(expr: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for match in re.finditer(r"[()]|\band\b", expr):
        token = match.group()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0:
            parts.append(expr[start:match.start()])
            start = match.end()
    parts.append(expr[start:])
    return [p.strip() for p in parts if p.strip()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    # Scheduled passes on, as in production.
    env = {**STACK_TEST_ENV, "HRTRACK_PASS_INTERVAL_SECONDS": "300"}
    with DevStack(tmp_path_factory.mktemp("obs"), extra_env=env) as dev:
        yield dev


@pytest.fixture(scope="module")
def prometheus(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = prometheus_binary()
    base = tmp_path_factory.mktemp("prom")
    rules = Path(__file__).resolve().parents[2] / "infra" / "prometheus" / "alerts.yml"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{stack.ports[name]}"]}]}
            for name in ("intake", "tracker", "notifier")
        ],
    }
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = ManagedProcess("prometheus", [
        binary, f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}"], base / "prometheus.log")
    process.start()
    try:
        wait_for_port(port, 60, process.proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


async def make_traffic(stack: DevStack) -> None:
    token = stack.info()["coordinator_token"]
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=auth, timeout=60) as http:
        created = await http.post(f"{stack.url('tracker')}/v1/agencies", json={
            "name": "Ministry of Justice", "emails": ["moj@obs.example"], "language": "ru"})
        assert created.status_code in (200, 201), created.text
        items = [{"source": "plan", "plan": "OBS-PLAN", "chapter": "Observability",
                  "number": str(n), "text": f"Action {n}", "deadline": "2nd quarter 2030",
                  "executors": "Ministry of Justice, Unknown Committee of Observation"}
                 for n in range(1, 21)]
        posted = await http.post(f"{stack.url('intake')}/v1/recommendations",
                                 json={"items": items})
        assert posted.status_code == 202, posted.text
        bad = await http.post(f"{stack.url('intake')}/v1/recommendations", json={"source": "x"})
        assert bad.status_code == 422
        assert (await httpx.AsyncClient().get(f"{stack.url('tracker')}/v1/agencies")
                ).status_code == 401

        producer = AIOKafkaProducer(bootstrap_servers=stack.info()["kafka_bootstrap"])
        await producer.start()
        try:
            await producer.send_and_wait(TOPIC_RECOMMENDATIONS, b"not json", key=b"poison")
        finally:
            await producer.stop()

        rec_id = posted.json()["accepted"][0]

        async def tracked() -> bool:
            got = await http.get(f"{stack.url('tracker')}/v1/recommendations/{rec_id}")
            return got.status_code == 200 and len(got.json()["assignments"]) == 2

        await eventually(tracked, what="recommendation tracked")
        # The notifier runs a pass as of 30 days before the deadline: a reminder goes out.
        ran = await http.post(f"{stack.url('notifier')}/v1/reminders/run",
                              params={"as_of": "2030-05-31"})
        assert ran.status_code == 200, ran.text


async def query(prom: str, expr: str) -> list[object]:
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(f"{prom}/api/v1/query", params={"query": expr})
    body = answer.json()
    assert body.get("status") == "success", f"{expr}: {body.get('error')}"
    result: list[object] = body["data"]["result"]
    return result


async def test_every_expression_returns_series(stack: DevStack, prometheus: str) -> None:
    await make_traffic(stack)

    async def all_up() -> bool:
        up = await query(prometheus, 'up{job=~"intake|tracker|notifier"} == 1')
        return len(up) == 3

    await eventually(all_up, timeout=60, what="three targets up")
    await asyncio.sleep(5)  # a few scrapes so rate() windows hold two samples after the traffic

    expressions = dashboard_expressions("1m") + alert_signals()
    assert len(expressions) > 40

    async def missing() -> list[str]:
        return [f"{source}: {expr}" for source, expr in expressions
                if not await query(prometheus, expr)]

    empty: list[str] = []
    for _ in range(20):  # lag probes and DB gauges refresh on their own intervals
        empty = await missing()
        if not empty:
            break
        await asyncio.sleep(2)
    assert empty == [], "expressions without series:\n" + "\n".join(empty)
