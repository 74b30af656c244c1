"""Input the edges refuse with the field named, before it goes further.

- Text PostgreSQL cannot store: its UTF-8 text refuses NUL characters, and UTF-8 has no lone
  surrogates (JSON can spell both: "\\u0000", "\\ud800"). Refused at the edges (HTTP bodies
  and parameters, recommendation payloads) instead of failing deep in the database as a 500
  or a dead letter.
- Dates written as anything but YYYY-MM-DD: pydantic's lax mode would read `0` or "0" as
  1970-01-01 (a Unix timestamp), which no one posting a date means.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from pydantic import BeforeValidator

Path = tuple[str | int, ...]


def text_problem(text: str) -> str | None:
    """Why this text cannot be stored, or None."""
    position = text.find("\x00")
    if position >= 0:
        return f"must not contain NUL characters (\\u0000, first at position {position})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"is not valid Unicode: lone surrogate \\u{ord(text[exc.start]):04x} "
                f"at position {exc.start}")
    return None


def unstorable(value: Any, limit: int = 20) -> list[tuple[Path, str]]:
    """(path, reason) of each unstorable string in a JSON-like value, object keys included,
    in document order; at most `limit` of them."""
    found: list[tuple[Path, str]] = []
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack and len(found) < limit:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                found.append((path, problem))
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                key_problem = text_problem(key) if isinstance(key, str) else None
                if key_problem:
                    found.append((path, f"an object key {key_problem}"))
                    continue
                children.append(((*path, key), child))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([((*path, i), child) for i, child in enumerate(item)]))
    return found[:limit]


def dotted(path: Path) -> str:
    """('executors', 0, 'name') -> 'executors[0].name'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date(value: Any) -> Any:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError(f"must be a date written YYYY-MM-DD (got {value!r:.40})")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


def utf8_text(body: bytes, what: str = "body") -> str:
    """The body as text; ValueError naming the first byte that is not UTF-8 and its line."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{what} is not UTF-8: byte 0x{body[exc.start]:02x} at offset "
                         f"{exc.start} (line {line})") from exc
    return text.removeprefix("\ufeff")  # a byte-order mark is not content


_CONTAINERS = (dict, list)  # a tuple: isinstance checks it faster than dict | list


def json_depth_exceeded(value: Any, limit: int) -> bool:
    """Deeper than `limit` levels of objects and arrays (checked without recursion)."""
    # Only objects and arrays are stacked: scalars, most of a document, cost one type check.
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, _CONTAINERS) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
    return False
