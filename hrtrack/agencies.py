"""`hrtrack agencies load FILE`: create or update agency directory entries from CSV or JSON.

Each entry goes to the tracker's agency endpoints: with an `id`, `PUT /v1/agencies/{id}`
(the given fields replace the stored ones, aliases included); without, `POST /v1/agencies`,
which creates the agency or updates the one its name or an alias already resolves to
(given fields only; aliases are added). Empty cells change nothing. See docs/tracker.md.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

FIELDS = ("name", "aliases", "emails", "language", "escalation_email")
LIST_FIELDS = ("aliases", "emails")
LIST_SEPARATOR = ";"  # names contain commas ("Akimats of Almaty, Zhambyl ... regions")


class AgencyFileError(ValueError):
    pass


@dataclass
class Entry:
    where: str  # "line 3" / "item 2": for messages
    body: dict[str, Any]
    agency_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.where} ({self.body.get('name') or self.agency_id})"


@dataclass
class LoadReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(LIST_SEPARATOR) if v.strip()]


def _entry(raw: dict[str, Any], where: str) -> Entry:
    """Keep the known fields that have a value; an empty cell means "leave as it is"."""
    if not isinstance(raw, dict):
        raise AgencyFileError(f"{where}: expected an object with a name")
    data = {str(k).strip().lower(): v for k, v in raw.items() if k is not None}
    body: dict[str, Any] = {}
    for name in FIELDS:
        value = data.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        body[name] = _as_list(value) if name in LIST_FIELDS else str(value).strip()
    agency_id = str(data.get("id") or "").strip() or None
    if not agency_id and not body.get("name"):
        raise AgencyFileError(f"{where}: name is required (or an id to update)")
    return Entry(where, body, agency_id)


def parse_text(text: str, *, json_format: bool) -> list[Entry]:
    if json_format:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AgencyFileError(f"not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            data = data.get("agencies", [data] if "name" in data else [])
        if not isinstance(data, list):
            raise AgencyFileError("expected a JSON array of agencies")
        return [_entry(item, f"item {i}") for i, item in enumerate(data, start=1)]
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.strip().lower() for c in reader.fieldnames or []}
    if "name" not in columns and "id" not in columns:
        raise AgencyFileError(f"CSV needs a header with a name column (columns: "
                              f"id, {', '.join(FIELDS)})")
    # Line numbers count the header as line 1.
    return [_entry(row, f"line {i}") for i, row in enumerate(reader, start=2)
            if any((v or "").strip() for v in row.values() if isinstance(v, str))]


def parse_file(path: Path) -> list[Entry]:
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    json_format = suffix == ".json" or (suffix != ".csv" and text.lstrip()[:1] in ("[", "{"))
    return parse_text(text, json_format=json_format)


def _reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    return f"HTTP {response.status_code}: {detail}"


async def load_entries(client: httpx.AsyncClient, entries: list[Entry]) -> LoadReport:
    """Send each entry to the tracker; one failure does not stop the others."""
    report = LoadReport()
    for entry in entries:
        try:
            if entry.agency_id:
                response = await client.put(f"/v1/agencies/{entry.agency_id}", json=entry.body)
            else:
                response = await client.post("/v1/agencies", json=entry.body)
        except httpx.HTTPError as exc:
            report.failed.append(f"{entry.label}: {type(exc).__name__}: {exc}")
            continue
        if response.status_code == 201:
            report.created.append(entry.label)
        elif response.status_code == 200:
            report.updated.append(entry.label)
        else:
            report.failed.append(f"{entry.label}: {_reason(response)}")
    return report


async def _load(path: Path, url: str, token: str) -> LoadReport:
    entries = parse_file(path)
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        return await load_entries(client, entries)


def load_file(path: Path, *, url: str, token: str) -> int:
    """Load a CSV or JSON file into the directory; prints what happened, returns the exit code."""
    try:
        report = asyncio.run(_load(path, url, token))
    except (OSError, UnicodeDecodeError, AgencyFileError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    for failure in report.failed:
        print(f"failed: {failure}", file=sys.stderr)
    print(f"agencies: {len(report.created)} created, {len(report.updated)} updated, "
          f"{len(report.failed)} failed")
    return 1 if report.failed else 0
