"""The agency directory: create, update, seed and resolve agencies with their aliases.

Every change writes an AgencyEvent to the outbox in the same transaction, so the
notifier always learns an agency's current contacts.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.tracker.models import AgencyCreate, AgencyUpdate, utcnow
from services.tracker.repository import AGENCIES, ALIASES, TrackerRepository
from shared.executors import agency_key
from shared.ids import agency_id as make_agency_id

log = logging.getLogger(__name__)
SEED_LOCK_ID = 0x6872_7464  # "hrtd": one replica seeds at a time
CONTACT_FIELDS = ("emails", "language", "escalation_email")


class AliasConflict(Exception):
    def __init__(self, alias: str, other: uuid.UUID) -> None:
        super().__init__(f"alias {alias!r} already belongs to agency {other}")


class NoUsableName(ValueError):
    pass


def alias_keys(names: list[str]) -> set[str]:
    return {k for k in (agency_key(n) for n in names) if k}


async def find_agency(repo: TrackerRepository, name: str) -> dict[str, Any] | None:
    found = await repo.agencies_by_key([agency_key(name)])
    return next(iter(found.values()), None)


async def _set_aliases(repo: TrackerRepository, agency: uuid.UUID, names: list[str]) -> None:
    keys = alias_keys(names)
    if not keys:
        return
    taken = (await repo.session.execute(
        select(ALIASES.c.key, ALIASES.c.agency_id).where(ALIASES.c.key.in_(keys)))).all()
    for key, owner in taken:
        if owner != agency:
            raise AliasConflict(key, owner)
    await repo.session.execute(
        pg_insert(ALIASES).values([{"key": k, "agency_id": agency} for k in sorted(keys)])
        .on_conflict_do_nothing())


def _merged(existing: list[str] | None, more: list[str]) -> list[str]:
    """Display aliases: every spelling known, once."""
    return sorted(set(existing or []) | {a.strip() for a in more if agency_key(a)})


async def create_agency(repo: TrackerRepository, data: AgencyCreate, actor: str, *,
                        action: str = "created") -> dict[str, Any]:
    key = agency_key(data.name)
    if not key:
        raise NoUsableName(f"name {data.name!r} has no letters or digits")
    now = utcnow()
    row: dict[str, Any] = {
        "id": make_agency_id(key), "key": key, "name": data.name.strip(),
        "emails": [str(e) for e in data.emails], "language": data.language,
        "escalation_email": str(data.escalation_email) if data.escalation_email else None,
        "aliases": _merged([], data.aliases), "needs_review": False,
        "created_at": now, "updated_at": now,
    }
    await repo.session.execute(pg_insert(AGENCIES).values(row))
    await _set_aliases(repo, row["id"], [data.name, *data.aliases])  # a conflict rolls back
    repo.announce_agency(row)
    repo.add_history("agency", row["id"], action, actor, {"name": row["name"]})
    return row


async def upsert_agency(repo: TrackerRepository, data: AgencyCreate, actor: str,
                        ) -> tuple[dict[str, Any], bool]:
    """Create the agency, or update the one its name or an alias already resolves to.

    Only the fields given are changed; aliases are added to the known ones (PUT replaces
    them). Loading an entry confirms the agency, so it no longer needs review.
    Returns (row, created).
    """
    existing = await find_agency(repo, data.name)
    for alias in data.aliases:
        existing = existing or await find_agency(repo, alias)
    if existing is None:
        return await create_agency(repo, data, actor), True
    given = data.model_dump(include=set(CONTACT_FIELDS) & data.model_fields_set)
    # The name as posted resolves to this agency from now on, like its aliases.
    known = alias_keys([existing["name"], *(existing["aliases"] or [])])
    names = [*data.aliases, *([data.name] if agency_key(data.name) not in known else [])]
    changes = AgencyUpdate.model_validate(
        {**given, "aliases": _merged(existing["aliases"], names), "needs_review": False})
    row = await update_agency(repo, existing["id"], changes, actor)
    assert row is not None
    return row, False


async def update_agency(repo: TrackerRepository, agency: uuid.UUID, data: AgencyUpdate,
                        actor: str) -> dict[str, Any] | None:
    current = (await repo.session.execute(
        select(AGENCIES).where(AGENCIES.c.id == agency).with_for_update())).mappings().first()
    if current is None:
        return None
    changes = data.model_dump(exclude_unset=True, mode="json")
    if changes.get("name") is not None and not agency_key(changes["name"]):
        raise NoUsableName(f"name {changes['name']!r} has no letters or digits")
    if "aliases" in changes:
        aliases = changes["aliases"] or []
        # Replace: keep only the agency's own key and (new) name, then the given aliases.
        await repo.session.execute(delete(ALIASES).where(
            ALIASES.c.agency_id == agency, ALIASES.c.key != current["key"]))
        await _set_aliases(repo, agency, [changes.get("name") or current["name"], *aliases])
        changes["aliases"] = _merged([], aliases)
    if changes.get("name"):
        await _set_aliases(repo, agency, [changes["name"]])
    changes = {k: v for k, v in changes.items() if v is not None or k == "escalation_email"}
    changed = {k: v for k, v in changes.items() if current[k] != v}
    row = {**dict(current), **changes}
    if not changed:
        return row  # nothing new: no event, no history entry
    row["updated_at"] = utcnow()
    await repo.session.execute(AGENCIES.update().where(AGENCIES.c.id == agency).values(
        **changed, updated_at=row["updated_at"]))
    repo.announce_agency(row)
    repo.add_history("agency", agency, "updated", actor, changed)
    return row


# --- the directory seed ---------------------------------------------------------------------


def read_directory(path: Path) -> list[AgencyCreate]:
    """The seed file: a JSON array of {name, aliases, emails?, language?, escalation_email?}."""
    entries = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(entries, dict):
        entries = entries.get("agencies", [])
    adapter = TypeAdapter(list[AgencyCreate])
    return adapter.validate_python(entries)


@dataclass
class SeedResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


async def seed_directory(repo: TrackerRepository, entries: list[AgencyCreate],
                         actor: str = "directory-seed") -> SeedResult:
    """Insert missing agencies and aliases; never overwrite contacts someone maintains.

    An agency first created from an unknown executor name that the seed knows is
    confirmed: it takes the canonical name and no longer needs review.
    """
    await repo.session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": SEED_LOCK_ID})
    result = SeedResult()
    for entry in entries:
        names = [entry.name, *entry.aliases]
        keys = alias_keys(names)
        found = await repo.agencies_by_key(keys)
        owners = {a["id"]: a for a in found.values()}
        own = found.get(agency_key(entry.name))
        if own is None and len(owners) == 1 and next(iter(owners.values()))["needs_review"]:
            own = next(iter(owners.values()))  # first seen as an executor under an alias
        conflicts = sorted(k for k, a in found.items() if own is None or a["id"] != own["id"])
        if conflicts:
            result.conflicts += conflicts
            log.warning("directory seed: %s: aliases %s belong to other agencies",
                        entry.name, ", ".join(conflicts))
        if own is None:
            usable = [a for a in entry.aliases if agency_key(a) not in conflicts]
            await create_agency(repo, entry.model_copy(update={"aliases": usable}), actor,
                                action="seeded")
            result.created.append(entry.name)
            continue
        missing = keys - set(found)
        changes: dict[str, Any] = {}
        aliases = _merged(own["aliases"], entry.aliases)
        if aliases != sorted(own["aliases"] or []):
            changes["aliases"] = aliases
        if own["needs_review"]:
            changes.update(needs_review=False, name=entry.name)
        if missing:
            await repo.session.execute(pg_insert(ALIASES).values(
                [{"key": k, "agency_id": own["id"]} for k in sorted(missing)])
                .on_conflict_do_nothing())
        if changes:
            row = {**own, **changes, "updated_at": utcnow()}
            await repo.session.execute(AGENCIES.update().where(AGENCIES.c.id == own["id"])
                                       .values(**changes, updated_at=row["updated_at"]))
            if "needs_review" in changes:
                repo.announce_agency(row)  # renamed and confirmed: the notifier shows it
            repo.add_history("agency", own["id"], "seeded", actor, changes)
            result.updated.append(entry.name)
    return result
