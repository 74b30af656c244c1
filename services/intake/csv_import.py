"""CSV files as recommendations: column mapping per source, cell conversion, row numbers.

Pure: text in, posted-style item dicts (and what is wrong with the file) out. Columns are
our own field names or common spreadsheet headers (UPR Info's database export for UPR);
header matching ignores case, spaces, punctuation and a trailing "(s)". Multi-valued cells
are separated by ";" or "|". Rows are numbered as a spreadsheet shows them: the header is
row 1, the first data row is row 2, a quoted cell over several lines is still one row.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.intake.domain import BadRequest

# --- columns ----------------------------------------------------------------------------------

_COMMON = {
    "source": ["source"],
    "text": ["text", "recommendation", "recommendation_text", "observation"],
    "executors": ["executors", "executor", "responsible", "responsible_agencies",
                  "implementing_agencies", "agencies"],
    "deadline": ["deadline", "due", "timeline", "term"],
    "themes": ["themes", "theme", "issues", "issue", "topics", "topic"],
    "affected_groups": ["affected_groups", "affected_group", "affected_persons", "groups"],
}

COLUMNS: dict[str, dict[str, list[str]]] = {
    "upr": {
        **_COMMON,
        "state": ["state", "state_under_review", "sur", "country"],
        "cycle": ["cycle", "upr_cycle"],
        "session": ["session", "upr_session", "wg_session"],
        "review_date": ["review_date", "date_of_review", "review", "date"],
        "symbol": ["symbol", "report_symbol", "document", "document_symbol", "report"],
        "paragraph": ["paragraph", "para", "paragraph_number", "recommendation_number"],
        "recommending_states": ["recommending_states", "recommending_state",
                                "recommending_country", "recommending_countries", "from"],
        "response": ["response", "position", "response_to_recommendation"],
        "sdgs": ["sdgs", "sdg", "goals", "sustainable_development_goals"],
    },
    "treaty_body": {
        **_COMMON,
        "state": ["state", "state_party", "country"],
        "committee": ["committee", "treaty_body", "treaty", "body"],
        "symbol": ["symbol", "document", "document_symbol", "concluding_observations"],
        "paragraph": ["paragraph", "para", "paragraph_number"],
        "sub_paragraph": ["sub_paragraph", "subparagraph", "sub_para", "subpara"],
        "adopted": ["adopted", "adoption_date", "date_adopted", "date"],
        "follow_up": ["follow_up", "followup", "follow_up_paragraph"],
        "follow_up_due": ["follow_up_due", "follow_up_date", "follow_up_deadline"],
        "follow_up_grade": ["follow_up_grade", "grade", "assessment"],
        "next_report_due": ["next_report_due", "next_report", "next_periodic_report"],
    },
    "plan": {
        **_COMMON,
        "text": [*_COMMON["text"], "action", "action_text"],
        "plan": ["plan", "plan_id"],
        "plan_title": ["plan_title", "title"],
        "plan_period": ["plan_period", "period"],
        "chapter": ["chapter", "right"],
        "section": ["section"],
        "subsection": ["subsection", "list"],
        "number": ["number", "no", "nr", "num", "action_number"],
    },
}

# Fields whose cells hold several values.
LIST_FIELDS = frozenset({"themes", "affected_groups", "recommending_states", "sdgs"})


def normalize_header(name: str) -> str:
    """'Recommending State(s)' -> 'recommending_state'; 'No.' -> 'no'."""
    text = name.strip().removeprefix("\ufeff").casefold().replace("(s)", "")
    return re.sub(r"[^0-9a-z]+", "_", text).strip("_")


def _aliases(source: str) -> dict[str, str]:
    return {normalize_header(alias): name
            for name, aliases in COLUMNS[source].items() for alias in aliases}


def fields_of(source: str) -> list[str]:
    return list(COLUMNS[source])


# --- cells ------------------------------------------------------------------------------------

_SPLIT = re.compile(r"\s*[;|]\s*")
_RESPONSES = {
    "supported": "supported", "accepted": "supported", "accept": "supported",
    "support": "supported", "supported_in_part": "supported_in_part",
    "partially_supported": "supported_in_part", "supported_partially": "supported_in_part",
    "partially_accepted": "supported_in_part", "accepted_in_part": "supported_in_part",
    "supported_noted": "supported_in_part", "noted": "noted", "rejected": "noted",
    "not_supported": "noted", "not_accepted": "noted",
}
_TRUE = frozenset({"yes", "y", "true", "t", "1", "x"})
_FALSE = frozenset({"no", "n", "false", "f", "0"})


def _split(cell: str) -> list[str]:
    return [v for v in _SPLIT.split(cell.strip()) if v]


def _sdg(value: str) -> Any:
    m = re.fullmatch(r"(?:sdg|goal)?\s*(\d{1,2})(?:\.\d+)*", value.strip(), re.I)
    return int(m[1]) if m else value  # not a goal number: left for validation to name


def _number(value: str) -> Any:
    m = re.fullmatch(r"\D*?(\d+)\s*(?:st|nd|rd|th)?\D*", value.strip(), re.I)
    return int(m[1]) if m else value


def _response(value: str) -> str:
    return _RESPONSES.get(normalize_header(value), value)


def _boolean(value: str) -> Any:
    word = value.strip().casefold()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return value


def _period(value: str) -> Any:
    m = re.fullmatch(r"\s*(\d{4})\s*[-\u2013\u2014/]\s*(\d{4})\s*", value)
    return [int(m[1]), int(m[2])] if m else value


_CONVERT: dict[str, Callable[[str], Any]] = {
    "cycle": _number,
    "session": _number,
    "response": _response,
    "follow_up": _boolean,
    "plan_period": _period,
    "state": str.upper,
    "committee": str.upper,
    "follow_up_grade": str.upper,
}


def cell_value(name: str, cell: str) -> Any:
    if name in LIST_FIELDS:
        values = _split(cell)
        return [_sdg(v) for v in values] if name == "sdgs" else values
    convert = _CONVERT.get(name)
    return convert(cell.strip()) if convert else cell.strip()


# --- files ------------------------------------------------------------------------------------


@dataclass
class CsvRow:
    row: int
    item: dict[str, Any]


@dataclass
class CsvProblem:
    row: int
    message: str


@dataclass
class CsvFile:
    rows: list[CsvRow] = field(default_factory=list)
    problems: list[CsvProblem] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # field -> header as written
    ignored_columns: list[str] = field(default_factory=list)


def map_header(header: list[str], source: str) -> tuple[dict[int, str], dict[str, str], list[str]]:
    """(cell index -> field, field -> header as written, ignored headers)."""
    aliases = _aliases(source)
    by_index: dict[int, str] = {}
    written: dict[str, str] = {}
    ignored: list[str] = []
    for index, name in enumerate(header):
        key = normalize_header(name)
        if not key:
            continue
        target = aliases.get(key)
        if target is None:
            ignored.append(name.strip())
            continue
        if target in written:
            raise BadRequest(
                f"header: columns {written[target]!r} and {name.strip()!r} both give {target}"
            )
        by_index[index] = target
        written[target] = name.strip()
    if "text" not in written:
        raise BadRequest(
            f"header: no text column (one of {', '.join(COLUMNS[source]['text'])}); "
            f"found {', '.join(repr(h) for h in header)}"
        )
    return by_index, written, ignored


def read_csv(
    text: str, source: str, *, defaults: Mapping[str, Any] | None = None, max_rows: int
) -> CsvFile:
    """Rows as items of `source`; `defaults` fill fields no column (or an empty cell) gives.

    Raises BadRequest for a file that cannot be read at all and RowLimit past max_rows.
    """
    if source not in COLUMNS:
        raise BadRequest(f"source: must be one of {', '.join(COLUMNS)}")
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    row = 0
    try:
        header = next(reader, None)
        row = 1
        if header is None or not any(c.strip() for c in header):
            raise BadRequest("CSV is empty: the first row must name the columns")
        by_index, written, ignored = map_header(header, source)
        result = CsvFile(columns=written, ignored_columns=ignored)
        for cells in reader:
            row += 1
            if not any(c.strip() for c in cells):
                continue  # a blank line still counts as a row, as in a spreadsheet
            if len(result.rows) + len(result.problems) >= max_rows:
                raise RowLimit(max_rows)
            if len(cells) > len(header):
                result.problems.append(CsvProblem(
                    row, f"has {len(cells)} cells but the header names {len(header)} columns"))
                continue
            item: dict[str, Any] = {"source": source}
            for name, value in (defaults or {}).items():
                item[name] = cell_value(name, str(value))
            for index, cell in enumerate(cells):
                target = by_index.get(index)
                if target is not None and cell.strip():
                    item[target] = cell_value(target, cell)
            if item["source"] != source:
                result.problems.append(CsvProblem(
                    row, f"source: {item['source']!r} in a {source} import"))
                continue
            result.rows.append(CsvRow(row, item))
    except csv.Error as exc:
        raise BadRequest(f"CSV unreadable at row {row + 1}: {exc}") from exc
    if not result.rows and not result.problems:
        raise BadRequest("CSV has a header but no rows")
    return result


class RowLimit(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} rows per request")
        self.limit = limit
