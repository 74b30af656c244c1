"""`hrtrack push FILE`: post a JSON, CSV or plan-text file to intake, in chunks, with a
progress bar, waiting out 503s (Retry-After) a bounded number of times.

JSON: a list of recommendations, {"items": [...]} or one recommendation, posted to
/v1/recommendations. CSV: posted to /v1/imports/csv in chunks of rows, each with the header;
rejected rows are reported with their row number in the whole file (header = row 1).
Text (.txt): a National Plan document, posted whole to /v1/imports/plan.

Exit status: 0 all accepted, 1 some items or rows rejected, 2 the push could not finish.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import httpx
from tqdm import tqdm

SOURCES = ("upr", "treaty_body", "plan")
MAX_ATTEMPTS = 8
MAX_WAIT_SECONDS = 60.0


class PushError(Exception):
    """The push cannot go on (bad token, unreadable file, broker away for too long)."""


@dataclass
class Summary:
    accepted: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)


@dataclass
class Chunk:
    """One request's worth: the body and how to name its items in the whole file."""

    body: bytes
    size: int
    where: Callable[[dict[str, Any]], str]
    split: Callable[[], list[Chunk]] | None = None


# --- sending ----------------------------------------------------------------------------------


def _wait_seconds(response: httpx.Response | None, attempt: int) -> float:
    header = response.headers.get("retry-after") if response is not None else None
    if header and header.strip().isdigit():
        return min(float(header), MAX_WAIT_SECONDS)
    return min(2.0 ** attempt, MAX_WAIT_SECONDS)


def post_with_retries(
    client: httpx.Client, path: str, chunk: Chunk, *, params: dict[str, str] | None = None,
    content_type: str, sleep: Callable[[float], None] = time.sleep,
    attempts: int = MAX_ATTEMPTS,
) -> httpx.Response:
    """POST; on 503 or a connection failure wait (Retry-After) and try again, `attempts` times."""
    last: str = ""
    for attempt in range(attempts):
        response: httpx.Response | None = None
        try:
            response = client.post(path, params=params, content=chunk.body,
                                   headers={"content-type": content_type})
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code != 503:
                return response
            last = "503 " + _detail(response)
        if attempt + 1 < attempts:
            sleep(_wait_seconds(response, attempt))
    raise PushError(f"intake still unavailable after {attempts} attempts: {last}")


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:300]
    return detail if isinstance(detail, str) else json.dumps(detail)[:300]


def send(client: httpx.Client, path: str, chunk: Chunk, summary: Summary, bar: Any, *,
         params: dict[str, str] | None, content_type: str,
         sleep: Callable[[float], None]) -> None:
    response = post_with_retries(client, path, chunk, params=params,
                                 content_type=content_type, sleep=sleep)
    if response.status_code == 413 and chunk.split is not None and chunk.size > 1:
        for half in chunk.split():  # too big for one request: two smaller ones
            send(client, path, half, summary, bar, params=params, content_type=content_type,
                 sleep=sleep)
        return
    if response.status_code not in (202, 422):
        raise PushError(f"intake answered {response.status_code}: {_detail(response)}")
    answer = response.json()
    if response.status_code == 422 and "rejected" not in answer:
        raise PushError(f"intake answered 422: {_detail(response)}")
    summary.accepted += answer.get("accepted", [])
    summary.rejected += [(chunk.where(r), r.get("reason", "")) for r in answer.get("rejected", [])]
    bar.update(chunk.size)


# --- files ------------------------------------------------------------------------------------


def json_items(data: Any, source: str | None) -> list[Any]:
    if isinstance(data, dict) and "items" in data and "source" not in data:
        items = data["items"]
        if not isinstance(items, list):
            raise PushError('"items" must be a list')
    elif isinstance(data, list):
        items = data
    else:
        items = [data]
    if source:  # --source fills in items that do not say theirs
        items = [{**i, "source": source} if isinstance(i, dict) and "source" not in i else i
                 for i in items]
    return items


def _item_at(offset: int, rejection: dict[str, Any]) -> str:
    return f"item {offset + int(rejection.get('index', 0))}"


def _row_at(first_row: int, rejection: dict[str, Any]) -> str:
    # intake numbers a chunk's rows from 2 (its header is row 1)
    return f"row {first_row + int(rejection.get('row', 2)) - 2}"


def json_chunks(items: list[Any], batch_size: int, first: int = 0) -> list[Chunk]:
    chunks = []
    for start in range(0, len(items), batch_size):
        part = items[start:start + batch_size]
        offset = first + start
        chunks.append(Chunk(
            body=json.dumps({"items": part}, ensure_ascii=False).encode(),
            size=len(part),
            where=partial(_item_at, offset),
            split=partial(json_chunks, part, max(1, len(part) // 2), offset)
            if len(part) > 1 else None,
        ))
    return chunks


def decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PushError(f"{path} is not UTF-8: byte 0x{data[exc.start]:02x} at offset "
                        f"{exc.start} (line {line})") from exc


def csv_rows(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and records (a blank line is a record too, as intake counts rows)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise PushError("the CSV file is empty")
    return header, list(reader)


def csv_chunks(header: list[str], rows: list[list[str]], batch_size: int,
               first_row: int = 2) -> list[Chunk]:
    """Chunks of rows, each with the header; `first_row` is the file row of rows[0]."""
    chunks = []
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows([header, *part])
        file_row = first_row + start
        chunks.append(Chunk(
            body=out.getvalue().encode(),
            size=len(part),
            where=partial(_row_at, file_row),
            split=partial(csv_chunks, header, part, max(1, len(part) // 2), file_row)
            if len(part) > 1 else None,
        ))
    return chunks


def csv_source(path: Path, header: list[str], rows: list[list[str]]) -> str:
    """The source of a CSV file: its `source` column, else its name (upr_*.csv, ...)."""
    names = [h.strip().casefold() for h in header]
    if "source" in names:
        column = names.index("source")
        values = {r[column].strip() for r in rows if len(r) > column and r[column].strip()}
        if len(values) == 1 and (value := values.pop()) in SOURCES:
            return value
    stem = path.stem.casefold()
    for source, hints in (("treaty_body", ("treaty", "tb", "concluding")),
                          ("upr", ("upr",)), ("plan", ("plan", "nhrap"))):
        if any(hint in stem for hint in hints):
            return source
    raise PushError(f"cannot tell the source of {path.name}: give --source upr|treaty_body|plan")


def _plan_action(rejection: dict[str, Any]) -> str:
    return (f"action {rejection.get('index')} ({rejection.get('chapter')} "
            f"{rejection.get('number')})")


# --- the command ------------------------------------------------------------------------------


def push_file(path: Path, *, url: str, token: str, source: str | None = None,
              batch_size: int = 1000, out: TextIO | None = None,
              transport: httpx.BaseTransport | None = None,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """Push one file to intake; print a summary; 0 all accepted, 1 rejections, 2 failure."""
    out = out or sys.stdout
    summary = Summary()
    batch_size = max(1, batch_size)
    try:
        data = path.read_bytes()
        suffix = path.suffix.casefold()
        if suffix == ".csv":
            header, rows = csv_rows(decode(data, path))
            params = {"source": source or csv_source(path, header, rows)}
            chunks = csv_chunks(header, rows, batch_size)
            endpoint, content_type = "/v1/imports/csv", "text/csv; charset=utf-8"
        elif suffix == ".json":
            try:
                items = json_items(json.loads(decode(data, path)), source)
            except json.JSONDecodeError as exc:
                raise PushError(f"{path} is not JSON: {exc}") from exc
            params, chunks = None, json_chunks(items, batch_size)
            endpoint, content_type = "/v1/recommendations", "application/json"
        elif suffix in (".txt", ".text"):
            decode(data, path)
            params = None
            chunks = [Chunk(data, 1, _plan_action)]
            endpoint, content_type = "/v1/imports/plan", "text/plain; charset=utf-8"
        else:
            raise PushError(f"{path.name}: expected a .json, .csv or .txt (plan) file")
        total = sum(c.size for c in chunks)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=300, transport=transport) as client, \
                tqdm(total=total, unit="item", desc=path.name, file=sys.stderr) as bar:
            for chunk in chunks:
                send(client, endpoint, chunk, summary, bar, params=params,
                     content_type=content_type, sleep=sleep)
    except (PushError, OSError) as exc:
        _print_summary(summary, out)
        print(f"error: {exc}", file=out)
        return 2
    _print_summary(summary, out)
    return 1 if summary.rejected else 0


def _print_summary(summary: Summary, out: TextIO) -> None:
    print(f"accepted: {len(summary.accepted)}, rejected: {len(summary.rejected)}", file=out)
    for where, reason in summary.rejected:
        print(f"  {where}: {reason}", file=out)
