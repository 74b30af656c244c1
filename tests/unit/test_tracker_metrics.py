"""The tracker's gauge refresh counts whole tables: how often it runs must follow its cost."""

from __future__ import annotations

import asyncio
from datetime import date
from types import SimpleNamespace
from typing import Any

import pytest

from services.tracker import metrics
from shared.clock import Clock


def test_a_quick_refresh_waits_the_configured_interval() -> None:
    assert metrics.pause_after(15.0, 0.05) == 15.0
    assert metrics.pause_after(15.0, 0.75) == 15.0


def test_a_slow_refresh_waits_in_proportion_to_its_cost() -> None:
    assert metrics.pause_after(15.0, 2.0) == 40.0
    assert metrics.pause_after(1.0, 0.5) == 10.0


class _StopLoop(Exception):
    pass


async def _pauses_of(monkeypatch: pytest.MonkeyPatch, durations: list[float],
                     fail: bool = False) -> list[float]:
    """The pauses refresh_forever takes after refreshes lasting ``durations`` seconds."""
    clock_readings = iter(t for d in durations for t in (0.0, d))
    # The module's own names are replaced, not the asyncio and time modules everyone shares.
    monkeypatch.setattr(metrics, "time", SimpleNamespace(perf_counter=lambda: next(clock_readings)))

    async def refresh(engine: Any, today: date) -> None:
        if fail:
            raise RuntimeError("the database is away")

    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == len(durations):
            raise _StopLoop

    monkeypatch.setattr(metrics, "refresh", refresh)
    monkeypatch.setattr(metrics, "asyncio", SimpleNamespace(
        sleep=sleep, CancelledError=asyncio.CancelledError))
    with pytest.raises(_StopLoop):
        await metrics.refresh_forever(None, Clock(date(2026, 11, 22)),  # type: ignore[arg-type]
                                      interval=15.0)
    return pauses


async def test_the_loop_pauses_after_each_refresh_by_its_measured_cost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _pauses_of(monkeypatch, [0.1, 3.0, 0.2]) == [15.0, 60.0, 15.0]


async def test_a_failed_refresh_is_paced_like_any_other(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert await _pauses_of(monkeypatch, [5.0, 0.1], fail=True) == [100.0, 15.0]


def test_the_loop_stops_when_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refresh(engine: Any, today: date) -> None:
        await asyncio.Event().wait()  # a refresh in progress

    monkeypatch.setattr(metrics, "refresh", refresh)

    async def run() -> None:
        task = asyncio.create_task(metrics.refresh_forever(
            None, Clock(date(2026, 11, 22)), 15.0))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
