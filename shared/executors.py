"""Executor agencies as written in recommendations, with their roles (DESIGN.md section 3).

`Ministry of Justice, Prosecutor General, with the participation of the Supreme Court,
NGOs (per agreement)` becomes lead / co / co / partner. Names stay as written (minus page
debris, line breaks, a leading "the" and the voluntary marker); the tracker resolves them
to agencies through aliases keyed by `agency_key`.

Also home of `join_pdf_lines`, the PDF clean-up shared with the plan parser.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Executor",
    "ExecutorRole",
    "agency_key",
    "is_body_name",
    "is_page_debris",
    "join_pdf_lines",
    "parse_executors",
]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


class ExecutorRole(StrEnum):
    LEAD = "lead"
    CO = "co"
    PARTNER = "partner"


class Executor(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    role: ExecutorRole


# --- PDF text clean-up ----------------------------------------------------------------------

# Cyrillic abbreviations that PDF extraction leaves in English text ("Supreme Court of РК");
# only short all-capital tokens, so Russian prose is left alone.
_LOOKALIKES = str.maketrans(
    {
        "Р": "R",
        "К": "K",
        "А": "A",
        "Е": "E",
        "О": "O",
        "С": "S",
        "М": "M",
        "Т": "T",
        "Н": "N",
        "В": "V",
        "Х": "KH",
    }
)
_CYRILLIC_ABBREVIATION = re.compile(r"(?<!\w)[РКАЕОСМТНВХ]{2,3}(?!\w)")


def _latin_abbreviations(text: str) -> str:
    return _CYRILLIC_ABBREVIATION.sub(lambda m: m.group().translate(_LOOKALIKES), text)


_PAGE_NUMBER = re.compile(r"^\s*[\d\ufffd]{1,3}\s*$")  # years have four digits, pages fewer
# "law-\nenforcement" keeps its hyphen; "recom-\nmendations" is one word broken at the margin.
_KEEP_HYPHEN = _words(
    "law agency non self co well anti multi socio state cross long short full part inter "
    "high low semi post pre re ex vice"
)


def is_page_debris(line: str) -> bool:
    """A stray page number ("107", or "\ufffd07" with a digit lost in extraction)."""
    return bool(_PAGE_NUMBER.match(line))


def join_pdf_lines(lines: Iterable[str] | str) -> str:
    """Join PDF lines into one line: drop page numbers, undo margin hyphenation, collapse."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    out = ""
    for raw in lines:
        line = _latin_abbreviations(raw).strip()
        if not line or is_page_debris(line):
            continue
        if out.endswith("-") and line[:1].islower():
            fragment = re.search(r"([A-Za-z]+)-$", out)
            if fragment and fragment.group(1).casefold() not in _KEEP_HYPHEN:
                out = out[:-1] + line
                continue
            out += line
            continue
        out = f"{out} {line}" if out else line
    return re.sub(r"\s+", " ", out).strip()


# --- recognizing bodies ---------------------------------------------------------------------

_BODY_WORDS = _words(
    "ministry ministries agency agencies committee committees commission commissions "
    "commissioner commissioners council councils court courts prosecutor prosecutors "
    "procuracy procurator akimat akimats akimate maslikhat maslikhats ngo ngos "
    "organization organizations organisation organisations association associations "
    "programme program center centre centers centres office offices chamber parliament "
    "majilis mazhilis senate government service services police library union unions "
    "institute institutes academy department departments mission embassy fund foundation "
    "ombudsman secretariat administration administrations inspectorate bureau authority "
    "authorities body bodies society societies board bar delegation"
)
# Acronyms of bodies that occur alone ("MCI RK", "the MFA RK", "UNDP").
_BODY_ACRONYMS = _words(
    "undp unicef unesco unhcr unfpa unodc ohchr osce odihr iom ilo who eu mci mfa moj mia "
    "mvd mes mlsp moh mod mof cec hrc gpo knb nsc"
)
_HEAD_CUT = re.compile(r"\s(?:of|in|under|for|to|at|on)\s|\(|,")


def _head_phrase(text: str) -> str:
    text = re.sub(r"^(?:the)\s+", "", text.strip(), flags=re.I)
    return _HEAD_CUT.split(text, maxsplit=1)[0]


def _has_body_word(phrase: str) -> bool:
    words = [w.casefold() for w in re.findall(r"[\w']+", phrase)]
    return any(w in _BODY_WORDS or w in _BODY_ACRONYMS for w in words)


def is_body_name(text: str) -> bool:
    """Whether `text` starts a body's name ("the Supreme Court", "MCI RK"), not a place."""
    return _has_body_word(_head_phrase(_strip_marker(text)[0]))


# --- roles ----------------------------------------------------------------------------------

_CO_INTRO = re.compile(
    r",?\s*\b(?:together\s+with|jointly\s+with|in\s+(?:co-?operation|conjunction)\s+with"
    r"|with\s+(?:the\s+)?(?:participation|assistance|involvement|support|help|co-?operation"
    r"|engagement|collaboration)\s+of)\s+",
    re.I,
)
_MARKER = re.compile(
    r"\(\s*(?:(?:per|by|upon|on|under|subject\s+to)\s+agreement|in\s+coordination"
    r"|(?:as|if)\s+agreed|upon\s+consent|voluntar(?:y|ily)|on\s+a\s+voluntary\s+basis)"
    r"\s*\)\s*[.,;]?"
    r"|\b(?:per|by|upon)\s+agreement\b\.?|\bas\s+agreed\b\.?",
    re.I,
)
# Heads of bodies that never end another body's name: a missing comma before them
# ("Prosecutor General NGOs", "regions\nMCI RK") still separates two bodies.
_STRONG_HEAD = re.compile(
    r"\s+(?=(?:Ministry|Akimats?|Maslikhats?|MCI|MFA|Prosecutor|NGOs|UNDP|OSCE|UNESCO"
    r"|Supreme\s+Court)\b)"
)
_CONNECTORS = _words("of the and in for under with to on by at rights human per a an its")
_NON_BODY_PREFIX = re.compile(r"\bof\s+")


def _strip_marker(text: str) -> tuple[str, bool]:
    stripped, count = _MARKER.subn(" ", text)
    return re.sub(r"\s+", " ", stripped).strip(), count > 0


def _insert_missing_commas(text: str) -> str:
    parts: list[str] = []
    last = 0
    for m in _STRONG_HEAD.finditer(text):
        before = text[last : m.start()]
        words = re.findall(r"[\w']+|[^\w\s]", text[: m.start()])
        previous = words[-1].casefold() if words else ""
        if previous and previous[0].isalnum() and previous not in _CONNECTORS:
            parts.append(before + ", ")
        else:
            parts.append(before + m.group())
        last = m.end()
    parts.append(text[last:])
    return "".join(parts)


_SEPARATOR = re.compile(r"\s*[,;]\s*|\s+and\s+", re.I)


def _split_top_level(text: str) -> list[tuple[str, str]]:
    """(separator before, segment) at commas, semicolons and " and " outside parentheses."""
    out: list[tuple[str, str]] = []
    depth, start, sep = 0, 0, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            m = _SEPARATOR.match(text, i)
            if m and m.end() > m.start() and (ch in ",;" or ch.isspace()):
                out.append((sep, text[start:i]))
                sep, start, i = m.group(), m.end(), m.end()
                continue
        i += 1
    out.append((sep, text[start:]))
    return out


def _bodies(part: str) -> list[str]:
    """Split one run of bodies; pieces that are no body ("EKA", "Pavlodar regions") stay
    with the body before them ("Akimats of Almaty, Zhambyl, Karaganda and Pavlodar regions")."""
    names: list[str] = []
    for sep, segment in _split_top_level(_insert_missing_commas(part)):
        if not segment.strip(" .,;:"):
            continue
        if names and not is_body_name(segment):
            names[-1] += sep + segment
        else:
            names.append(segment)
    return names


def _clean_name(name: str) -> str:
    name = re.sub(r"\s+", " ", name).strip(" .,;:")
    name = re.sub(r"^the\s+", "", name, flags=re.I)
    if not _has_body_word(_head_phrase(name)):
        # "Normative decisions of Maslikhats of regions ...": the body is after "of".
        for m in _NON_BODY_PREFIX.finditer(name):
            rest = name[m.end() :]
            if is_body_name(rest) and not _has_body_word(name[: m.start()]):
                name = re.sub(r"^the\s+", "", rest, flags=re.I)
                break
    return name


def parse_executors(text: str) -> list[Executor]:
    """Executors in the order written, each with its role (lead, co or partner)."""
    flat = join_pdf_lines(text or "")
    if not flat:
        return []
    pieces = _CO_INTRO.split(flat)
    executors: list[Executor] = []
    seen: set[str] = set()
    has_lead = False
    for piece in pieces:
        for raw in _bodies(piece):
            bare, voluntary = _strip_marker(raw)
            name = _clean_name(bare)
            key = agency_key(name)
            if not key or key in seen:
                continue
            seen.add(key)
            # The lead is the first obligated body; bodies after "with the participation
            # of" are co-executors, voluntary ones partners wherever they stand.
            if voluntary:
                role = ExecutorRole.PARTNER
            elif not has_lead:
                role, has_lead = ExecutorRole.LEAD, True
            else:
                role = ExecutorRole.CO
            executors.append(Executor(name=name, role=role))
    return executors


def agency_key(name: str) -> str:
    """Key for alias lookup: "The Ministry of Justice" and "Ministry of justice" are equal."""
    text = _latin_abbreviations(unicodedata.normalize("NFKC", name)).casefold()
    text = text.replace("&", " and ")
    text = re.sub(r"[\W_]+", " ", text).strip()
    return re.sub(r"^the\s+", "", text)
