"""The agency directory: create, update and load agencies with their aliases."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.tracker.models import AgencyCreate, AgencyUpdate, utcnow
from services.tracker.repository import AGENCIES, ALIASES, TrackerRepository
from shared.executors import agency_key
from shared.ids import agency_id as make_agency_id
from shared.settings import TOPIC_AGENCIES


class AliasConflict(Exception):
    def __init__(self, alias: str, other: uuid.UUID) -> None:
        super().__init__(f"alias {alias!r} already belongs to agency {other}")


async def find_agency(repo: TrackerRepository, name: str) -> dict[str, Any] | None:
    found = await repo._agencies_by_key([agency_key(name)])  # noqa: SLF001
    return next(iter(found.values()), None)


async def _set_aliases(repo: TrackerRepository, agency: uuid.UUID, names: list[str]) -> None:
    keys = {agency_key(n) for n in names if agency_key(n)}
    taken = (await repo.session.execute(
        select(ALIASES.c.key, ALIASES.c.agency_id).where(ALIASES.c.key.in_(keys)))).all()
    for key, owner in taken:
        if owner != agency:
            raise AliasConflict(key, owner)
    await repo.session.execute(
        pg_insert(ALIASES).values([{"key": k, "agency_id": agency} for k in keys])
        .on_conflict_do_nothing())


async def upsert_agency(repo: TrackerRepository, data: AgencyCreate, actor: str,
                        ) -> tuple[dict[str, Any], bool]:
    """Create the agency, or update it when its name or an alias is already known.

    Returns (row, created).
    """
    existing = await find_agency(repo, data.name)
    for alias in data.aliases:
        existing = existing or await find_agency(repo, alias)
    if existing is not None:
        row = await update_agency(repo, existing["id"], AgencyUpdate(
            emails=data.emails, language=data.language, escalation_email=data.escalation_email,
            aliases=data.aliases, needs_review=False), actor)
        assert row is not None
        return row, False
    key = agency_key(data.name)
    now = utcnow()
    row = {"id": make_agency_id(key), "key": key, "name": data.name,
           "emails": [str(e) for e in data.emails], "language": data.language,
           "escalation_email": str(data.escalation_email) if data.escalation_email else None,
           "aliases": sorted(set(data.aliases)), "needs_review": False,
           "created_at": now, "updated_at": now}
    await repo.session.execute(pg_insert(AGENCIES).values(row))
    await _set_aliases(repo, row["id"], [data.name, *data.aliases])
    repo.add_event(TOPIC_AGENCIES, row["id"], repo.agency_event(row))
    repo.add_history("agency", row["id"], "created", actor, {"name": data.name})
    return row, True


async def update_agency(repo: TrackerRepository, agency: uuid.UUID, data: AgencyUpdate,
                        actor: str) -> dict[str, Any] | None:
    current = (await repo.session.execute(
        select(AGENCIES).where(AGENCIES.c.id == agency).with_for_update())).mappings().first()
    if current is None:
        return None
    changes = data.model_dump(exclude_unset=True, mode="json")
    if "aliases" in changes:
        await repo.session.execute(delete(ALIASES).where(
            ALIASES.c.agency_id == agency, ALIASES.c.key != current["key"]))
        await _set_aliases(repo, agency, [current["name"], *changes["aliases"]])
        changes["aliases"] = sorted(set(changes["aliases"]))
    if "name" in changes:
        await _set_aliases(repo, agency, [changes["name"]])
    row = {**dict(current), **changes, "updated_at": utcnow()}
    await repo.session.execute(AGENCIES.update().where(AGENCIES.c.id == agency).values(
        **{k: row[k] for k in (*changes.keys(), "updated_at")}))
    repo.add_event(TOPIC_AGENCIES, agency, repo.agency_event(row))
    repo.add_history("agency", agency, "updated", actor, changes)
    return row
