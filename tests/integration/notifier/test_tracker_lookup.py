"""An assignment whose agency the notifier has not heard of yet: the pass asks the tracker's
directory (the real tracker app) rather than telling the coordinators it has no contact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hrtrack.stack import free_port
from services.notifier.main import build_app
from services.notifier.tracker_client import TrackerClient
from services.tracker.main import build_app as build_tracker
from services.tracker.settings import TrackerSettings
from tests.conftest import Infra, running, unique
from tests.integration.notifier.support import (
    Agency,
    Assignment,
    notifier_settings,
    publish,
    read_mails,
    wait_stored,
)


@pytest.fixture(scope="module")
async def engine(infra: Infra) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(infra.database_url)
    yield engine
    await engine.dispose()


async def test_unknown_agency_is_looked_up_at_the_tracker(infra: Infra,
                                                          engine: AsyncEngine) -> None:
    tag = unique("lookup")
    token = infra.coordinator_token()
    tracker_app = build_tracker(TrackerSettings(
        **infra.env(), consumer_group=f"tracker-{tag}", recommendations_topic=f"rec-{tag}",
        assignments_topic=f"asg-{tag}", agencies_topic=f"agn-{tag}", directory_file=""))
    async with running(tracker_app, token) as tracker:
        created = await tracker.post("/v1/agencies", json={
            "name": f"Ministry of Ecology {tag}", "emails": [f"eco-{tag}@example.kz"],
            "language": "ru"})
        assert created.status_code == 201, created.text
        agency = Agency(created.json()["name"], [], id=created.json()["id"])

        settings = notifier_settings(infra, tag, tracker_lookup=True)
        app = build_app(settings)
        app.state.reminders.tracker = TrackerClient(
            "http://tracker", infra.secret, transport=httpx.ASGITransport(app=tracker_app))
        async with running(app, token) as notifier:
            work = Assignment(agency, date(2053, 3, 31), date(2053, 1, 1))
            # Only the assignment: the notifier never sees the agency's event.
            await publish(infra, settings.assignments_topic, [work.event()])
            await wait_stored(engine, [work])
            report = (await notifier.post("/v1/reminders/run",
                                          params={"as_of": "2053-03-01"})).json()
    assert [d["recipient"] for d in report["sent"]
            if d["recipient"].endswith(("example.kz", tag + "@hrtrack.test"))] == [
        f"eco-{tag}@example.kz"]
    mail = read_mails(infra.mail_dir, [f"eco-{tag}@example.kz"])[0]
    assert mail.message["Content-Language"] == "ru"


async def test_tracker_unreachable_the_coordinators_hear_of_it(infra: Infra,
                                                                engine: AsyncEngine) -> None:
    tag = unique("lookup-down")
    settings = notifier_settings(infra, tag, tracker_lookup=True,
                                 coordinator_emails=[f"coordinators-{tag}@example.kz"])
    app = build_app(settings)
    app.state.reminders.tracker = TrackerClient(f"http://127.0.0.1:{free_port()}", infra.secret,
                                                timeout=2)
    async with running(app, infra.coordinator_token()) as notifier:
        work = Assignment(Agency(f"Akimat {tag}", []), date(2053, 9, 30), date(2053, 7, 1))
        await publish(infra, settings.assignments_topic, [work.event()])
        await wait_stored(engine, [work])
        answer = await notifier.post("/v1/reminders/run", params={"as_of": "2053-08-31"})
        assert answer.status_code == 200, answer.text
    mails = read_mails(infra.mail_dir, settings.coordinator_emails)
    assert len(mails) == 1 and "has no contact address on file" in mails[0].text
