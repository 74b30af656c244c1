"""The agency directory: the shipped seed, create/update over HTTP, review of unknown names,
and `hrtrack agencies load` entries."""

from __future__ import annotations

from typing import Any

from hrtrack.agencies import load_entries, parse_text
from services.tracker.agencies import read_directory, seed_directory
from services.tracker.models import AgencyCreate
from services.tracker.repository import TrackerRepository
from services.tracker.settings import DEFAULT_DIRECTORY
from tests.conftest import unique
from tests.helpers import eventually
from tests.integration.tracker.conftest import Tracker
from tests.integration.tracker.support import (
    agency_by_name,
    assignments_of,
    encoded,
    plan_event,
    produce,
)


async def seed(tracker: Tracker, entries: list[AgencyCreate]) -> Any:
    async with tracker.sessions() as session, session.begin():
        repo = TrackerRepository(session, tracker.app.state.topics)
        result = await seed_directory(repo, entries)
        await repo.flush()
    return result


async def test_the_directory_is_seeded_at_startup(tracker: Tracker) -> None:
    agencies = {a["name"]: a for a in (await tracker.client.get("/v1/agencies")).json()}
    for entry in read_directory(DEFAULT_DIRECTORY):
        assert entry.name in agencies, entry.name
        assert set(entry.aliases) <= set(agencies[entry.name]["aliases"])
        assert agencies[entry.name]["needs_review"] is False
    # Seeding again (another replica, a restart) changes nothing.
    result = await seed(tracker, read_directory(DEFAULT_DIRECTORY))
    assert (result.created, result.updated) == ([], [])


async def test_seed_never_overwrites_contacts(tracker: Tracker) -> None:
    name = f"Ministry of {unique()}"
    entry = AgencyCreate(name=name, aliases=[f"{name} of RK"], emails=["seed@example.kz"])
    assert (await seed(tracker, [entry])).created == [name]
    agency = await agency_by_name(tracker.sessions, f"the {name} of RK")
    assert agency is not None and agency["emails"] == ["seed@example.kz"]
    changed = await tracker.client.put(f"/v1/agencies/{agency['id']}",
                                       json={"emails": ["desk@example.kz"]})
    assert changed.status_code == 200
    more = AgencyCreate(name=name, aliases=[f"{name} of RK", f"{name} (new alias)"],
                        emails=["seed@example.kz"])
    result = await seed(tracker, [more])
    assert result.updated == [name]
    agency = await agency_by_name(tracker.sessions, f"{name} (new alias)")
    assert agency is not None and agency["emails"] == ["desk@example.kz"]


async def test_unknown_executor_is_reviewed_then_confirmed_by_the_directory(
        tracker: Tracker) -> None:
    canonical = f"Agency for {unique()}"
    as_written = f"{canonical} of RK"
    event = plan_event(unique("plan"), "1", as_written)
    await produce(tracker.infra.bootstrap, tracker.settings.recommendations_topic,
                  encoded([event]))

    async def flagged() -> list[dict[str, Any]]:
        listed = (await tracker.client.get("/v1/agencies", params={"needs_review": "true"}))
        return [a for a in listed.json() if a["name"] == as_written]
    (first,) = await eventually(flagged, what="flagged agency listed")

    result = await seed(tracker, [AgencyCreate(name=canonical, aliases=[as_written])])
    assert result.updated == [canonical]
    agencies = {a["id"]: a for a in (await tracker.client.get("/v1/agencies")).json()}
    assert agencies[first["id"]]["name"] == canonical
    assert agencies[first["id"]]["needs_review"] is False
    (assignment,) = await assignments_of(tracker.sessions, [event.recommendation_id])
    assert str(assignment["agency_id"]) == first["id"], "the assignment keeps its agency"


async def test_post_creates_or_updates_and_validates(tracker: Tracker) -> None:
    name = f"Committee on {unique()}"
    created = await tracker.client.post("/v1/agencies", json={
        "name": name, "aliases": [f"{name} of RK"], "emails": ["one@example.kz"],
        "language": "ru", "escalation_email": "head@example.kz"})
    assert created.status_code == 201, created.text
    agency = created.json()
    assert agency["needs_review"] is False and agency["language"] == "ru"

    # Posting under an alias updates the same agency: given fields only, aliases added.
    again = await tracker.client.post("/v1/agencies", json={
        "name": f"the {name.upper()} of RK", "aliases": ["CoX"], "emails": ["two@example.kz"]})
    assert again.status_code == 200, again.text
    updated = again.json()
    assert updated["id"] == agency["id"]
    assert updated["emails"] == ["two@example.kz"]
    assert (updated["language"], updated["escalation_email"]) == ("ru", "head@example.kz")
    assert set(updated["aliases"]) == {f"{name} of RK", "CoX"}

    # PUT replaces the aliases: a removed alias no longer resolves to it.
    put = await tracker.client.put(f"/v1/agencies/{agency['id']}", json={"aliases": ["CoX"]})
    assert put.status_code == 200 and put.json()["aliases"] == ["CoX"]
    assert await agency_by_name(tracker.sessions, f"{name} of RK") is None
    assert (await agency_by_name(tracker.sessions, "cox") or {}).get("name") == name

    taken = await tracker.client.post("/v1/agencies", json={
        "name": f"Other {unique()}", "aliases": ["Ministry of Justice"]})
    assert taken.status_code == 200, "an alias that resolves means: update that agency"
    conflict = await tracker.client.put(f"/v1/agencies/{agency['id']}",
                                        json={"aliases": ["Supreme Court"]})
    assert conflict.status_code == 409
    assert conflict.json()["errors"][0]["field"] == "aliases"
    assert "supreme court" in conflict.json()["detail"]

    for body, field in [({"name": "x", "emails": ["not-an-email"]}, "emails[0]"),
                        ({"name": "x", "language": "fr"}, "language"),
                        ({"name": ""}, "name"),
                        ({"name": "!!!"}, "name")]:
        response = await tracker.client.post("/v1/agencies", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in [e["field"] for e in response.json()["errors"]], body
    missing = await tracker.client.put("/v1/agencies/6d1c0e3e-0000-4000-8000-000000000001",
                                       json={"language": "kk"})
    assert missing.status_code == 404


async def test_load_entries_reports_created_updated_failed(tracker: Tracker) -> None:
    u = unique()
    text = ("name,aliases,emails,language\n"
            f"Agency One {u},One {u};A1 {u},one@example.kz,kk\n"
            f"Agency Two {u},,two@example.kz,\n"
            f"One {u},,,ru\n"  # an alias of the first: an update
            f"Agency Three {u},,not-an-email,en\n")
    report = await load_entries(tracker.client, parse_text(text, json_format=False))
    assert len(report.created) == 2
    assert len(report.updated) == 1
    assert len(report.failed) == 1 and "line 5" in report.failed[0]
    assert "emails" in report.failed[0]
    one = await agency_by_name(tracker.sessions, f"A1 {u}")
    assert one is not None
    assert (one["name"], one["language"], one["emails"]) == (
        f"Agency One {u}", "ru", ["one@example.kz"])
