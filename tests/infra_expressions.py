"""Every PromQL expression of the Grafana dashboards and the Prometheus alerts.

Shared by tests/unit/test_infra_files.py (static checks) and by tests that run the
expressions against a live Prometheus:

    from tests.infra_expressions import all_promql_expressions
    for source, expr in all_promql_expressions():        # `$__rate_interval` -> 1m
        ...query Prometheus with expr...

(When `tests` is not importable as a package, load this file by path; see
`load_infra_expressions()` in tests/unit/test_infra_files.py.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = REPO_ROOT / "infra" / "grafana" / "dashboards"
ALERTS_FILE = REPO_ROOT / "infra" / "prometheus" / "alerts.yml"

# Grafana's global variables a panel expression may use; nothing else starting with `$`.
ALLOWED_GRAFANA_VARIABLES = ("$__rate_interval",)

# Words of PromQL's grammar that look like identifiers but are not metric names.
_PROMQL_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "atan2",
        "inf",
        "nan",
        "start",
        "end",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including the panels nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def render(expr: str, rate_interval: str | None = "1m") -> str:
    """The expression as Prometheus takes it: Grafana's `$__rate_interval` replaced."""
    if rate_interval is None:
        return expr
    return expr.replace("$__rate_interval", rate_interval)


def dashboard_expressions(rate_interval: str | None = "1m") -> list[tuple[str, str]]:
    """(source, expr) for every target of every dashboard panel."""
    out: list[tuple[str, str]] = []
    for path in dashboard_files():
        for panel in iter_panels(load_dashboard(path)):
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if expr:
                    source = (
                        f"dashboard {path.name} panel {panel.get('id')} "
                        f"{panel.get('title', '')!r} ref {target.get('refId', '?')}"
                    )
                    out.append((source, render(expr, rate_interval)))
    return out


def alert_rules() -> list[dict[str, Any]]:
    with ALERTS_FILE.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return [rule for group in data.get("groups", []) for rule in group.get("rules", [])]


def alert_expressions() -> list[tuple[str, str]]:
    """(source, expr) for every alerting or recording rule in alerts.yml."""
    out: list[tuple[str, str]] = []
    for rule in alert_rules():
        name = rule.get("alert") or rule.get("record") or "?"
        out.append((f"alert {name}", " ".join(str(rule["expr"]).split())))
    return out


def all_promql_expressions(rate_interval: str | None = "1m") -> list[tuple[str, str]]:
    """(source, expr) for every dashboard target and every alert rule, as plain PromQL.

    `$__rate_interval` is replaced by `rate_interval` (None keeps it as written).
    Sources start with "dashboard " or "alert ". Alert expressions hold a threshold
    (e.g. `up == 0`) and so normally return nothing on a healthy stack.
    """
    return dashboard_expressions(rate_interval) + alert_expressions()


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (function and keyword names excluded)."""
    text = render(expr, "1m")
    text = _STRING.sub('""', text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        if word.lower() in _PROMQL_KEYWORDS:
            continue
        if re.match(r"\s*\(", text[match.end() :]):  # a function or aggregation call
            continue
        names.add(word)
    return names
