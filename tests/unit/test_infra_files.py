"""Static checks of the container and monitoring files.

docker-compose.yml, Dockerfile, .dockerignore, .env.example, infra/prometheus/*,
infra/grafana/**. promtool checks run when `promtool` is installed (Debian package
`prometheus`); under CI (environment variable CI set) a missing promtool fails.
The compose file is validated against the official Compose Specification schema.

METRICS below is the contract between the services and the dashboards/alerts: every
metric name an expression uses must be listed there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "infra" / "prometheus" / "prometheus.yml"
ALERTS_FILE = ROOT / "infra" / "prometheus" / "alerts.yml"
GRAFANA_DIR = ROOT / "infra" / "grafana"
DATASOURCE_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER_FILE = GRAFANA_DIR / "provisioning" / "dashboards" / "provider.yml"


def load_infra_expressions() -> ModuleType:
    """tests/infra_expressions.py, whether or not `tests` is importable as a package."""
    path = ROOT / "tests" / "infra_expressions.py"
    try:
        module = importlib.import_module("tests.infra_expressions")
        if Path(module.__file__ or "").resolve() == path:
            return module
    except ImportError:
        pass
    if "infra_expressions" in sys.modules:
        return sys.modules["infra_expressions"]
    spec = importlib.util.spec_from_file_location("infra_expressions", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ie = load_infra_expressions()

# --------------------------------------------------------------------------- contract
# name -> kind. Counters are listed with their exported `_total` name; histograms by
# their base name (expressions use `_bucket`, `_sum`, `_count`).
METRICS: dict[str, str] = {
    # Prometheus itself, per scrape target
    "up": "gauge",
    # every service
    "hrtrack_build_info": "gauge",
    "hrtrack_http_requests_total": "counter",
    "hrtrack_http_request_duration_seconds": "histogram",
    "hrtrack_kafka_received_messages_total": "counter",
    "hrtrack_kafka_received_processed_messages_total": "counter",
    "hrtrack_kafka_received_processed_messages_duration_seconds": "histogram",
    "hrtrack_kafka_received_processed_messages_exceptions_total": "counter",
    # what intake and the tracker's relay publish (shared.kafka.EventProducer)
    "hrtrack_events_published_total": "counter",
    "hrtrack_events_publish_duration_seconds": "histogram",
    "hrtrack_events_publish_errors_total": "counter",
    "hrtrack_kafka_consumer_lag": "gauge",
    "hrtrack_dead_letters_total": "counter",
    # intake
    "hrtrack_intake_items_total": "counter",
    "hrtrack_intake_broker_unavailable_total": "counter",
    # tracker
    "hrtrack_outbox_backlog": "gauge",
    "hrtrack_outbox_oldest_age_seconds": "gauge",
    "hrtrack_outbox_published_total": "counter",
    "hrtrack_recommendations_ingested_total": "counter",
    "hrtrack_recommendations": "gauge",
    "hrtrack_assignments": "gauge",
    "hrtrack_assignments_by_agency": "gauge",
    "hrtrack_assignments_overdue": "gauge",
    "hrtrack_assignments_due_this_quarter": "gauge",
    "hrtrack_reports_submitted_total": "counter",
    "hrtrack_agencies_needing_review": "gauge",
    # notifier
    "hrtrack_reminders_sent_total": "counter",
    "hrtrack_reminder_emails_total": "counter",
    "hrtrack_reminders_pending": "gauge",
    "hrtrack_smtp_send_duration_seconds": "histogram",
    "hrtrack_reminder_pass_duration_seconds": "histogram",
    "hrtrack_reminder_due_set_seconds": "histogram",
    "hrtrack_reminder_report_dates_extended_total": "counter",
}


def allowed_series_names() -> dict[str, str]:
    """Series name as used in PromQL -> contract metric."""
    names: dict[str, str] = {}
    for name, kind in METRICS.items():
        if kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[name + suffix] = name
        else:
            names[name] = name
    return names


SERVICES = ("intake", "tracker", "notifier")
ONE_SHOT = ("kafka-init", "migrate")
TOPICS = {
    "recommendations": 6,
    "assignments": 6,
    "agencies": 6,
    "recommendations.dlq": 1,
    "assignments.dlq": 1,
    "agencies.dlq": 1,
}
REQUIRED_SERVICE_ENV = (
    "HRTRACK_KAFKA_BOOTSTRAP",
    "HRTRACK_DATABASE_URL",
    "HRTRACK_TOKEN_SECRET",
    "HRTRACK_SMTP_HOST",
    "HRTRACK_SMTP_PORT",
    "HRTRACK_MAIL_FROM",
    "HRTRACK_TRACKER_URL",
    "HRTRACK_COORDINATOR_EMAILS",
)
# Variables that must come from the environment / .env, never with a default value.
SECRET_VARIABLES = ("POSTGRES_PASSWORD", "HRTRACK_TOKEN_SECRET", "GRAFANA_ADMIN_PASSWORD")
SECRET_KEY = re.compile(r"PASSWORD|SECRET|PRIVATE_KEY|API_KEY|_TOKEN$")
REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}$")

# --------------------------------------------------------------------------- helpers


def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose-style interpolation; unset required variables become `<NAME>`."""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        val = env.get(name)
        if op == ":-":
            return val if val else arg
        if op == "-":
            return val if val is not None else arg
        return val if val is not None else f"<{name}>"

    return _VARIABLE.sub(sub, value)


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            key, sep, val = str(item).partition("=")
            out[key] = val if sep else None
        return out
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def command_text(service: dict[str, Any]) -> str:
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if isinstance(value, list):
            parts.extend(str(v) for v in value)
        elif value is not None:
            parts.append(str(value))
    return " ".join(parts)


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def host_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, protocol) of every published port."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published"):
                out.append(
                    (
                        str(port.get("host_ip", "0.0.0.0")),
                        str(port["published"]),
                        str(port.get("protocol", "tcp")),
                    )
                )
            continue
        text = interpolate(str(port))
        text, _, proto = text.partition("/")
        pieces = text.rsplit(":", 2)
        if len(pieces) == 1:
            continue  # container port only: not published on a fixed host port
        host_ip = pieces[0] if len(pieces) == 3 else "0.0.0.0"
        out.append((host_ip, pieces[-2], proto or "tcp"))
    return out


def promtool_or_skip() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("promtool is missing under CI: install the Debian package `prometheus`")
    pytest.skip("promtool not installed (apt-get install --no-install-recommends prometheus)")


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)


# --------------------------------------------------------------------------- compose


def test_compose_has_the_stack() -> None:
    names = set(services())
    expected = {
        "kafka",
        "kafka-init",
        "postgres",
        "mailpit",
        "prometheus",
        "grafana",
        "migrate",
        *SERVICES,
    }
    assert expected <= names, f"missing services: {sorted(expected - names)}"


def test_build_contexts_and_dockerfiles_exist() -> None:
    built = 0
    for name, svc in services().items():
        build = svc.get("build")
        if build is None:
            assert svc.get("image"), f"{name}: neither build nor image"
            continue
        built += 1
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        ctx = (ROOT / interpolate(context)).resolve()
        assert ctx.is_dir(), f"{name}: build context {context} does not exist"
        assert (ctx / dockerfile).is_file(), f"{name}: {ctx / dockerfile} does not exist"
    assert built >= len(SERVICES) + 1  # the three services and migrate


def test_bind_mounts_exist_and_named_volumes_are_declared() -> None:
    declared = set((compose().get("volumes") or {}).keys())
    for name, svc in services().items():
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict):
                source, kind = vol.get("source"), vol.get("type")
            else:
                source = interpolate(str(vol)).split(":")[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "bind":
                path = (ROOT / str(source)).resolve()
                assert path.exists(), f"{name}: bind mount source {source} does not exist"
                assert ROOT in path.parents or path == ROOT, f"{name}: {source} is outside the repo"
            elif kind == "volume" and source:
                assert source in declared, f"{name}: named volume {source} not declared"


def test_commands_point_at_existing_code() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    modules_seen = set()
    for name, svc in services().items():
        text = command_text(svc)
        for module in re.findall(r"\b(services\.[A-Za-z_][\w.]*):\w+", text):
            modules_seen.add(module)
            path = ROOT / Path(*module.split("."))
            assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), (
                f"{name}: {module} does not exist"
            )
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd and cmd[0] == "hrtrack":
            assert "hrtrack" in scripts, "pyproject.toml declares no `hrtrack` console script"
    assert modules_seen == {f"services.{s}.main" for s in SERVICES}


def test_each_service_runs_its_own_app_on_port_8000() -> None:
    svcs = services()
    for name in SERVICES:
        cmd = svcs[name]["command"]
        assert cmd[:2] == ["uvicorn", f"services.{name}.main:app"], cmd
        assert "--host" in cmd and cmd[cmd.index("--host") + 1] == "0.0.0.0"
        assert "--port" in cmd and cmd[cmd.index("--port") + 1] == "8000"
    assert svcs["migrate"]["command"] == ["hrtrack", "db", "upgrade"]


def test_host_ports_are_unique_and_services_published_as_specified() -> None:
    seen: Counter[tuple[str, str]] = Counter()
    for svc in services().values():
        for _ip, port, proto in host_ports(svc):
            seen[(port, proto)] += 1
    duplicates = [key for key, count in seen.items() if count > 1]
    assert not duplicates, f"host ports published twice: {duplicates}"
    svcs = services()
    for name, port in zip(SERVICES, ("8001", "8002", "8003"), strict=True):
        assert [p for _ip, p, _ in host_ports(svcs[name])] == [port]
        assert any(str(p).endswith(f"{port}:8000") for p in svcs[name]["ports"])
    assert {p for _ip, p, _ in host_ports(svcs["mailpit"])} == {"1025", "8025"}


def test_depends_on_targets_exist_with_valid_conditions() -> None:
    svcs = services()
    for name, svc in svcs.items():
        for target, condition in depends_on(svc).items():
            assert target in svcs, f"{name} depends on unknown service {target}"
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }, condition
            if condition == "service_healthy":
                assert svcs[target].get("healthcheck"), f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for {target} to exit"
    for name in SERVICES:
        deps = depends_on(svcs[name])
        assert deps.get("kafka-init") == "service_completed_successfully", name
        assert deps.get("migrate") == "service_completed_successfully", name
        assert deps.get("postgres") == "service_healthy", name
        assert deps.get("kafka") == "service_healthy", name
    assert depends_on(svcs["notifier"]).get("mailpit") == "service_healthy"
    assert depends_on(svcs["migrate"]).get("postgres") == "service_healthy"
    assert depends_on(svcs["kafka-init"]).get("kafka") == "service_healthy"


def test_depends_on_has_no_cycle() -> None:
    graph = {name: set(depends_on(svc)) for name, svc in services().items()}
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str) -> None:
        assert node not in visiting, f"dependency cycle through {node}"
        if node in done:
            return
        visiting.add(node)
        for nxt in graph[node]:
            visit(nxt)
        visiting.discard(node)
        done.add(node)

    for node in graph:
        visit(node)


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in services().items():
        if name in ONE_SHOT:
            assert str(svc.get("restart", "no")) == "no", f"one-shot {name} must not restart"
            continue
        hc = svc.get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name} has no healthcheck"
    for name in SERVICES:
        test = " ".join(services()[name]["healthcheck"]["test"])
        assert "/readyz" in test and ":8000" in test


def test_no_literal_secrets_in_compose() -> None:
    raw = COMPOSE_FILE.read_text(encoding="utf-8")
    for var in SECRET_VARIABLES:
        refs = re.findall(r"\$\{" + var + r"([^}]*)\}", raw)
        assert refs, f"{var} is never referenced"
        for rest in refs:
            assert rest == "" or rest.startswith(("?", ":?")), (
                f"${{{var}{rest}}} gives a default value: secrets must come from the environment"
            )
    for name, svc in services().items():
        for key, value in environment(svc).items():
            if value is None:
                continue
            if SECRET_KEY.search(key):
                assert REQUIRED_REFERENCE.match(value), f"{name}: {key} has a literal value"
            for userinfo in re.findall(r"://[^/@\s]*:([^@\s]*)@", value):
                assert REQUIRED_REFERENCE.match(userinfo), (
                    f"{name}: {key} embeds a literal password in a URL"
                )


def test_service_environment() -> None:
    svcs = services()
    for name in (*SERVICES, "migrate"):
        env = environment(svcs[name])
        missing = [k for k in REQUIRED_SERVICE_ENV if k not in env]
        assert not missing, f"{name} lacks {missing}"
        assert env["HRTRACK_DATABASE_URL"] and env["HRTRACK_DATABASE_URL"].startswith(
            "postgresql+asyncpg://"
        )
        assert "@postgres:5432/" in str(env["HRTRACK_DATABASE_URL"])
        assert env["HRTRACK_KAFKA_BOOTSTRAP"] == "kafka:19092"
        assert env["HRTRACK_SMTP_HOST"] == "mailpit" and env["HRTRACK_SMTP_PORT"] == "1025"
        assert env["HRTRACK_TRACKER_URL"] == "http://tracker:8000"
    kafka_env = environment(svcs["kafka"])
    assert "INTERNAL://kafka:19092" in str(kafka_env["KAFKA_ADVERTISED_LISTENERS"])


def test_images_are_pinned_to_the_expected_products() -> None:
    svcs = services()
    images = {name: str(svc.get("image", "")) for name, svc in svcs.items()}
    assert images["kafka"].startswith("apache/kafka:")
    assert images["kafka-init"] == images["kafka"]
    assert re.fullmatch(r"postgres:17(\.\d+)?(-\w+)?", images["postgres"])
    assert images["mailpit"].startswith("axllent/mailpit:")
    assert images["prometheus"].startswith("prom/prometheus:")
    assert images["grafana"].startswith("grafana/grafana:")
    for name, image in images.items():
        assert not image.endswith(":latest"), f"{name} uses :latest"
    assert any("pgdata" in str(v) for v in svcs["postgres"]["volumes"])


def test_kafka_init_creates_the_topics() -> None:
    script = command_text(services()["kafka-init"])
    created = {
        topic: int(parts)
        for topic, parts in re.findall(r"--topic\s+([\w.]+)\s+--partitions\s+(\d+)", script)
    }
    assert created == TOPICS
    assert "--if-not-exists" in script
    assert "--bootstrap-server kafka:19092" in script


def test_monitoring_mounts() -> None:
    svcs = services()
    prom = [str(v) for v in svcs["prometheus"]["volumes"]]
    assert any(v.startswith("./infra/prometheus:/etc/prometheus") for v in prom), prom
    assert "--config.file=/etc/prometheus/prometheus.yml" in svcs["prometheus"]["command"]
    graf = [str(v) for v in svcs["grafana"]["volumes"]]
    assert any(v.startswith("./infra/grafana/provisioning:/etc/grafana/provisioning") for v in graf)
    dash_mount = [v for v in graf if v.startswith("./infra/grafana/dashboards:")]
    assert dash_mount, graf
    target = dash_mount[0].split(":")[1]
    provider = yaml.safe_load(PROVIDER_FILE.read_text())
    paths = [p["options"]["path"] for p in provider["providers"]]
    assert target in paths, f"provider paths {paths} do not match the mount {target}"


def test_env_example_lists_the_required_variables() -> None:
    raw = COMPOSE_FILE.read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", raw))
    assert set(SECRET_VARIABLES) <= required
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    values = dict(
        line.split("=", 1)
        for line in example.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    for var in required:
        assert var in values, f".env.example does not list {var}"
    for var in SECRET_VARIABLES:
        assert values[var].strip() == "", f".env.example must not carry a value for {var}"


def test_dotenv_is_not_committed() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert any(p in (".env", "/.env", ".env*", "*.env") for p in patterns), (
        ".gitignore must ignore .env (the secrets of docker-compose.yml)"
    )
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in dockerignore and ".git" in dockerignore and ".venv" in dockerignore


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "python:3.11-slim" in text
    assert re.search(r"pip install \.(\s|$)", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0")
    for line in re.findall(r"^(?:ENV|ARG)\s+(.*)$", text, re.MULTILINE):
        assert not SECRET_KEY.search(line.split("=")[0]), f"secret in Dockerfile: {line}"
    # Files the build copies must not be excluded by .dockerignore.
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("pyproject.toml", "README.md", "services", "shared", "hrtrack"):
        assert needed not in ignored, f".dockerignore excludes {needed}"


def test_compose_file_matches_the_compose_specification() -> None:
    """Validated against the official Compose Specification schema (no engine needed)."""
    import importlib.resources

    import jsonschema

    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json")
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


# --------------------------------------------------------------------------- prometheus


def test_prometheus_config() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", *SERVICES}
    svcs = services()
    for name in SERVICES:
        targets = [t for sc in jobs[name]["static_configs"] for t in sc["targets"]]
        assert targets == [f"{name}:8000"]
        assert name in svcs
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"


def test_promtool_check_config() -> None:
    promtool = promtool_or_skip()
    proc = run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_check_rules() -> None:
    promtool = promtool_or_skip()
    proc = run([promtool, "check", "rules", str(ALERTS_FILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_rules_shape() -> None:
    rules = ie.alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        assert "for" in rule, f"{rule['alert']}: no for:"
        assert rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
    exprs = " ".join(str(r["expr"]) for r in rules)
    for needle in (
        "up{",
        "hrtrack_kafka_consumer_lag",
        "hrtrack_outbox_oldest_age_seconds > 300",
        "increase(hrtrack_dead_letters_total[15m])",
        'increase(hrtrack_reminder_emails_total{outcome="failed"}[1h])',
        "delta(hrtrack_assignments_overdue[1h])",
        'status=~"5.."',
    ):
        assert needle in exprs, f"no alert uses {needle}"


# Input series and the alerts they must raise (promtool test rules). Annotations are
# stripped from the copy of alerts.yml under test, so only expressions, for: and labels
# are checked here.
ALERT_UNIT_TESTS: list[dict[str, Any]] = [
    {
        "interval": "1m",
        "input_series": [
            {"series": 'up{job="intake", instance="intake:8000"}', "values": "1 1 0 0 0 0"},
            {"series": 'up{job="tracker", instance="tracker:8000"}', "values": "1 1 1 1 1 1"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "HrtrackServiceDown", "exp_alerts": []},
            {
                "eval_time": "5m",
                "alertname": "HrtrackServiceDown",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "job": "intake",
                            "instance": "intake:8000",
                        }
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'hrtrack_http_requests_total{job="tracker", instance="tracker:8000", '
                'method="GET", route="/v1/agencies", status="500"}',
                "values": "0+10x15",
            },
            {
                "series": 'hrtrack_http_requests_total{job="tracker", instance="tracker:8000", '
                'method="GET", route="/v1/agencies", status="200"}',
                "values": "0+10x15",
            },
            {
                "series": 'hrtrack_http_requests_total{job="intake", instance="intake:8000", '
                'method="POST", route="/v1/recommendations", status="202"}',
                "values": "0+10x15",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "10m",
                "alertname": "HrtrackHighHttp5xxRatio",
                "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "tracker"}}],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'hrtrack_intake_broker_unavailable_total{job="intake", '
                'instance="intake:8000"}',
                "values": "0 0 0 1 1",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "HrtrackIntakeBrokerUnavailable", "exp_alerts": []},
            {
                "eval_time": "4m",
                "alertname": "HrtrackIntakeBrokerUnavailable",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "job": "intake",
                            "instance": "intake:8000",
                        }
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'hrtrack_kafka_consumer_lag{job="notifier", instance="notifier:8000", '
                'topic="assignments", group="notifier"}',
                "values": "2000+100x30",
            },
            {
                "series": 'hrtrack_kafka_consumer_lag{job="tracker", instance="tracker:8000", '
                'topic="recommendations", group="tracker"}',
                "values": "5000x30",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "25m",
                "alertname": "HrtrackConsumerLagGrowing",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "job": "notifier",
                            "instance": "notifier:8000",
                            "topic": "assignments",
                            "group": "notifier",
                        }
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": "hrtrack_outbox_oldest_age_seconds"
                '{job="tracker", instance="tracker:8000"}',
                "values": "0+60x12",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "HrtrackOutboxBacklogStale", "exp_alerts": []},
            {
                "eval_time": "10m",
                "alertname": "HrtrackOutboxBacklogStale",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "job": "tracker",
                            "instance": "tracker:8000",
                        }
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'hrtrack_dead_letters_total{job="tracker", instance="tracker:8000", '
                'topic="recommendations"}',
                "values": "0 0 0 1 1",
            },
            {
                "series": 'hrtrack_dead_letters_total{job="notifier", instance="notifier:8000", '
                'topic="assignments"}',
                "values": "0 0 0 0 0",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "4m",
                "alertname": "HrtrackDeadLetters",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "job": "tracker",
                            "topic": "recommendations",
                        }
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'hrtrack_kafka_received_processed_messages_total{job="tracker", '
                'instance="tracker:8000", app_name="tracker", broker="kafka", '
                'handler="recommendations", status="error"}',
                "values": "0+1x20",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "15m",
                "alertname": "HrtrackKafkaHandlerErrors",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "job": "tracker",
                            "handler": "recommendations",
                        }
                    }
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'hrtrack_reminder_emails_total{job="notifier", instance="notifier:8000", '
                'outcome="failed"}',
                "values": "0 0 0 1 1",
            },
            {
                "series": 'hrtrack_reminder_emails_total{job="notifier", instance="notifier:8000", '
                'outcome="sent"}',
                "values": "0+5x4",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "HrtrackReminderEmailsFailing", "exp_alerts": []},
            {
                "eval_time": "4m",
                "alertname": "HrtrackReminderEmailsFailing",
                "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "notifier"}}],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {
                "series": 'hrtrack_assignments_overdue{job="tracker", instance="tracker:8000"}',
                "values": "3x30 100x40",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "25m", "alertname": "HrtrackOverdueAssignmentsJump", "exp_alerts": []},
            {
                "eval_time": "65m",
                "alertname": "HrtrackOverdueAssignmentsJump",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "info",
                            "job": "tracker",
                            "instance": "tracker:8000",
                        }
                    }
                ],
            },
        ],
    },
]


def test_promtool_alert_unit_tests(tmp_path: Path) -> None:
    promtool = promtool_or_skip()
    rules = yaml.safe_load(ALERTS_FILE.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    tested = {t["alertname"] for case in ALERT_UNIT_TESTS for t in case["alert_rule_test"]}
    assert tested == {r["alert"] for r in ie.alert_rules()}, "every alert needs a unit test"
    tests_file = tmp_path / "alerts_test.yml"
    tests_file.write_text(
        yaml.safe_dump(
            {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": ALERT_UNIT_TESTS},
            sort_keys=False,
        )
    )
    proc = run([promtool, "test", "rules", str(tests_file)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    promtool = promtool_or_skip()
    rules = [
        {"record": f"hrtrack_dashboard_check:expr_{i}", "expr": expr}
        for i, (_source, expr) in enumerate(ie.dashboard_expressions())
    ]
    path = tmp_path / "dashboard_exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = run([promtool, "check", "rules", str(path)])
    sources = "\n".join(f"{i}: {s}" for i, (s, _e) in enumerate(ie.dashboard_expressions()))
    assert proc.returncode == 0, proc.stdout + proc.stderr + "\n" + sources


# --------------------------------------------------------------------------- grafana


def test_dashboards_are_valid_and_every_panel_queries() -> None:
    files = ie.dashboard_files()
    assert {f.name for f in files} == {"pipeline-health.json", "implementation-progress.json"}
    uids = []
    for path in files:
        dash = json.loads(path.read_text(encoding="utf-8"))
        assert dash.get("title") and dash.get("uid"), path.name
        uids.append(dash["uid"])
        ids = [p["id"] for p in ie.iter_panels(dash)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        queried = 0
        for panel in ie.iter_panels(dash):
            assert "gridPos" in panel, f"{path.name}: {panel.get('title')} has no gridPos"
            if panel.get("type") == "row":
                continue
            targets = panel.get("targets") or []
            assert any(t.get("expr", "").strip() for t in targets), (
                f"{path.name}: panel {panel.get('title')!r} has no query"
            )
            for target in targets:
                ds = target.get("datasource") or panel.get("datasource")
                assert ds == {"type": "prometheus", "uid": "prometheus"}, (
                    f"{path.name}: {panel.get('title')!r} uses datasource {ds}"
                )
            refs = [t.get("refId") for t in targets]
            assert len(refs) == len(set(refs)), f"{path.name}: duplicate refIds"
            queried += 1
        assert queried >= 8, f"{path.name}: only {queried} panels"
    assert len(uids) == len(set(uids))


def test_dashboard_expressions_are_plain_promql() -> None:
    for source, expr in ie.dashboard_expressions(rate_interval=None):
        rest = expr
        for var in ie.ALLOWED_GRAFANA_VARIABLES:
            rest = rest.replace(var, "")
        assert "$" not in rest and "[[" not in rest, f"{source}: template variable in {expr}"
        assert "__name__" not in expr, f"{source}: selects by __name__"


def test_every_expression_uses_only_contract_metrics() -> None:
    allowed = allowed_series_names()
    expressions = ie.all_promql_expressions()
    assert any(s.startswith("alert ") for s, _ in expressions)
    assert any(s.startswith("dashboard ") for s, _ in expressions)
    for source, expr in expressions:
        names = ie.metric_names(expr)
        assert names, f"{source}: no metric in {expr}"
        unknown = names - set(allowed)
        assert not unknown, f"{source}: {sorted(unknown)} not in the metrics contract ({expr})"


def test_dashboards_chart_every_service_metric() -> None:
    allowed = allowed_series_names()
    charted = {
        allowed[name]
        for _source, expr in ie.dashboard_expressions()
        for name in ie.metric_names(expr)
        if name in allowed
    }
    missing = set(METRICS) - charted
    assert not missing, f"no dashboard panel shows {sorted(missing)}"


def test_grafana_provisioning() -> None:
    datasources = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    prom = [d for d in datasources if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["uid"] == "prometheus"
    assert prom[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(PROVIDER_FILE.read_text())
    assert providers["apiVersion"] == 1
    assert all(p["type"] == "file" for p in providers["providers"])


def test_metric_names_parser() -> None:
    assert ie.metric_names(
        "histogram_quantile(0.99, sum by (le, job) "
        '(rate(a_bucket{x="b c", y=~"5.."}[$__rate_interval])))'
    ) == {"a_bucket"}
    expr = "sum(x_total) by (job) / ignoring(le) y or vector(0)"
    assert ie.metric_names(expr) == {"x_total", "y"}
    assert ie.metric_names("up == 0 and on(job) deriv(z[10m]) > 1e3 offset 5m") == {"up", "z"}
    assert ie.metric_names('count(q{job="and"}) without (instance)') == {"q"}
