"""Executor agencies as written in recommendations, with their roles (DESIGN.md section 3).

`Ministry of Justice, Prosecutor General, with the participation of the Supreme Court,
NGOs (per agreement)` becomes lead / co / co / partner. Names stay as written (minus page
debris, line breaks, a leading "the" and the voluntary marker); the tracker resolves them
to agencies through aliases keyed by `agency_key`.

Also home of `join_pdf_lines`, the PDF clean-up shared with the plan parser.
"""

from __future__ import annotations

import functools
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
    if text.isascii():  # nothing Cyrillic to replace (a constant-time check)
        return text
    return _CYRILLIC_ABBREVIATION.sub(lambda m: m.group().translate(_LOOKALIKES), text)


_PAGE_NUMBER = re.compile(r"^\s*[\d\ufffd]{1,3}\s*$")  # years have four digits, pages fewer
# "law-\nenforcement" keeps its hyphen; "recom-\nmendations" is one word broken at the margin.
_KEEP_HYPHEN = _words(
    "law agency non self co well anti multi socio state cross long short full part inter "
    "high low semi post pre re ex vice"
)


_HYPHENATED = re.compile(r"([A-Za-z]+)-$")
_SPACES = re.compile(r"\s+")


def _collapse(text: str) -> str:
    r"""Whitespace runs as one space, none at the ends: `re.sub(r"\s+", " ", text).strip()`
    (str.split and re's \s know the same whitespace), without a substitution per space."""
    return " ".join(text.split())


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
            fragment = _HYPHENATED.search(out)
            if fragment and fragment.group(1).casefold() not in _KEEP_HYPHEN:
                out = out[:-1] + line
                continue
            out += line
            continue
        out = f"{out} {line}" if out else line
    return _collapse(out)


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
_BODY_TERMS = _BODY_WORDS | _BODY_ACRONYMS
_HEAD_CUT = re.compile(r"\s(?:of|in|under|for|to|at|on)\s|\(|,")
_LEADING_THE = re.compile(r"^(?:the)\s+", re.I)
_WORD = re.compile(r"[\w']+")


def _head_phrase(text: str) -> str:
    text = _LEADING_THE.sub("", text.strip())
    return _HEAD_CUT.split(text, maxsplit=1)[0]


def _has_body_word(phrase: str) -> bool:
    return any(w.casefold() in _BODY_TERMS for w in _WORD.findall(phrase))


def is_body_name(text: str) -> bool:
    """Whether `text` starts a body's name ("the Supreme Court", "MCI RK"), not a place."""
    return _is_body(text)


# Executor texts repeat the same few dozen names in ever new combinations, so the pure
# per-name steps are cached by the name as written (bounded: plans are finite).
@functools.lru_cache(maxsize=8192)
def _is_body(text: str) -> bool:
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
# ("Prosecutor General NGOs", "regions\nMCI RK") still separates two bodies. (`\s\s*` is
# `\s+` written so that the regex engine skips ahead to the next whitespace.)
_STRONG_HEAD = re.compile(
    r"\s\s*(?=(?:Ministry|Akimats?|Maslikhats?|MCI|MFA|Prosecutor|NGOs|UNDP|OSCE|UNESCO"
    r"|Supreme\s+Court)\b)"
)
_CONNECTORS = _words("of the and in for under with to on by at rights human per a an its")
_NON_BODY_PREFIX = re.compile(r"\bof\s+")
_WITH = re.compile("with", re.I)  # in every phrase _CO_INTRO knows: a quick first look
# The last word or sign of a text, read from its end (the text reversed).
_LAST_TOKEN_REVERSED = re.compile(r"\s*([\w']+|[^\w\s])")


def _strip_marker(text: str) -> tuple[str, bool]:
    stripped, count = _MARKER.subn(" ", text)
    return _collapse(stripped), count > 0


def _insert_missing_commas(text: str) -> str:
    parts: list[str] = []
    last = 0
    for m in _STRONG_HEAD.finditer(text):
        before = text[last : m.start()]
        token = _LAST_TOKEN_REVERSED.match(text[m.start() - 1 :: -1]) if m.start() else None
        previous = token.group(1)[::-1].casefold() if token else ""
        if previous and previous[0].isalnum() and previous not in _CONNECTORS:
            parts.append(before + ", ")
        else:
            parts.append(before + m.group())
        last = m.end()
    parts.append(text[last:])
    return "".join(parts)


# Outside parentheses: the next parenthesis or separator (`[()]|\s*[,;]\s*|\s+and\s+`,
# written to start with its first character so that the regex engine skips ahead to it);
# inside: the next parenthesis.
_SEPARATOR_OR_PAREN = re.compile(
    r"[(),;\s](?:(?<=[()])|(?<=[,;])\s*|(?<=\s)(?:\s*[,;]\s*|\s*and\s+))", re.I)
_PAREN = re.compile(r"[()]")


def _split_top_level(text: str) -> list[tuple[str, str]]:
    """(separator before, segment) at commas, semicolons and " and " outside parentheses."""
    out: list[tuple[str, str]] = []
    depth, start, sep = 0, 0, ""
    i = 0
    while True:
        m = (_SEPARATOR_OR_PAREN if depth == 0 else _PAREN).search(text, i)
        if m is None:
            break
        if m.group() == "(":
            depth += 1
        elif m.group() == ")":
            depth = max(0, depth - 1)
        else:
            out.append((sep, text[start : m.start()]))
            sep, start = m.group(), m.end()
        i = m.end()
    out.append((sep, text[start:]))
    return out


def _bodies(part: str) -> list[str]:
    """Split one run of bodies; pieces that are no body ("EKA", "Pavlodar regions") stay
    with the body before them ("Akimats of Almaty, Zhambyl, Karaganda and Pavlodar regions")."""
    names: list[str] = []
    for sep, segment in _split_top_level(_insert_missing_commas(part)):
        if not segment.strip(" .,;:"):
            continue
        if names and not _is_body(segment):
            names[-1] += sep + segment
        else:
            names.append(segment)
    return names


_THE = re.compile(r"^the\s+", re.I)


def _clean_name(name: str) -> str:
    name = _SPACES.sub(" ", name).strip(" .,;:")
    name = _THE.sub("", name)
    if not _has_body_word(_head_phrase(name)):
        # "Normative decisions of Maslikhats of regions ...": the body is after "of".
        for m in _NON_BODY_PREFIX.finditer(name):
            rest = name[m.end() :]
            if _is_body(rest) and not _has_body_word(name[: m.start()]):
                name = _THE.sub("", rest)
                break
    return name


@functools.lru_cache(maxsize=8192)
def _named(raw: str) -> tuple[str, bool, str]:
    """(name, voluntary, agency key) of one body as written."""
    bare, voluntary = _strip_marker(raw)
    name = _clean_name(bare)
    return name, voluntary, agency_key(name)


@functools.lru_cache(maxsize=8192)
def _executor(name: str, role: ExecutorRole) -> Executor:
    return Executor(name=name, role=role)  # frozen: one instance serves every parse


def parse_executors(text: str) -> list[Executor]:
    """Executors in the order written, each with its role (lead, co or partner)."""
    flat = join_pdf_lines(text or "")
    if not flat:
        return []
    pieces = _CO_INTRO.split(flat) if _WITH.search(flat) else [flat]
    executors: list[Executor] = []
    seen: set[str] = set()
    has_lead = False
    for piece in pieces:
        for raw in _bodies(piece):
            name, voluntary, key = _named(raw)
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
            executors.append(_executor(name, role))
    return executors


_NOT_WORDS = re.compile(r"[\W_]+")
_LOWER_THE = re.compile(r"^the\s+")


@functools.lru_cache(maxsize=16_384)  # a plan names the same few hundred bodies again and again
def agency_key(name: str) -> str:
    """Key for alias lookup: "The Ministry of Justice" and "Ministry of justice" are equal."""
    text = _latin_abbreviations(unicodedata.normalize("NFKC", name)).casefold()
    text = text.replace("&", " and ")
    text = _NOT_WORDS.sub(" ", text).strip()
    return _LOWER_THE.sub("", text)
