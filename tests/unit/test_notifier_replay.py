"""`hrtrack replay`: the per-day line and the day loop (its HTTP side runs against a real
notifier in tests/integration/notifier/test_crash.py)."""

from __future__ import annotations

import io
from datetime import date

import httpx

from hrtrack.replay import days, replay, summary


def test_days_inclusive() -> None:
    assert days(date(2009, 12, 30), date(2010, 1, 2)) == [
        date(2009, 12, 30), date(2009, 12, 31), date(2010, 1, 1), date(2010, 1, 2)]
    assert days(date(2010, 1, 2), date(2010, 1, 2)) == [date(2010, 1, 2)]


def test_summary_line() -> None:
    report = {"claimed": 5, "late": 1, "sent": [{"items": 3}, {"items": 2}],
              "failed": [{"items": 1}], "retrying": [], "pending_reminders": 1}
    assert summary(date(2009, 6, 1), report) == (
        "2009-06-01: 2 digests sent (5 reminders), 5 reminders claimed, 1 late (next digest), "
        "1 digests FAILED, 1 reminders pending delivery")
    assert summary(date(2009, 6, 2), {"claimed": 0, "sent": []}) == (
        "2009-06-02: 0 digests sent (0 reminders), 0 reminders claimed")


def test_a_day_the_notifier_cannot_run_is_tried_again() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        day = request.url.params["as_of"]
        calls.append(day)
        if calls.count(day) == 1 and day == "2009-06-02":
            return httpx.Response(503, json={"detail": "database unavailable"})
        return httpx.Response(200, json={"claimed": 1, "sent": [{"items": 1}]})

    out = io.StringIO()
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        code = replay(url="http://notifier", token="t", start=date(2009, 6, 1),
                      end=date(2009, 6, 3), out=out, client=client, sleep=lambda _s: None)
    assert code == 0
    assert calls == ["2009-06-01", "2009-06-02", "2009-06-02", "2009-06-03"]
    assert out.getvalue().splitlines()[-1] == (
        "replayed 3 days: 3 digests sent (3 reminders), 0 failed")


def test_a_refused_request_stops_the_replay() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"detail": "coordinator token required"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        assert replay(url="http://notifier", token="t", start=date(2009, 6, 1),
                      end=date(2009, 6, 3), out=io.StringIO(), client=client) == 1


def test_a_range_backwards_is_refused() -> None:
    assert replay(url="http://notifier", token="t", start=date(2009, 6, 3),
                  end=date(2009, 6, 1), out=io.StringIO()) == 2
