"""`hrtrack dev`: the whole system on one machine, from wheels only.

Starts the broker, PostgreSQL and the SMTP sink, creates the topics, runs the
migrations, starts intake, tracker and notifier as separate processes, waits until
each is ready, writes DATA_DIR/dev.json and prints `hrtrack ready`. SIGINT or SIGTERM
stops every process it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from hrtrack.stack import (
    Broker,
    ManagedProcess,
    Postgres,
    SmtpSink,
    free_port,
    service_process,
)
from shared.auth import Role, create_token

SERVICES = ("intake", "tracker", "notifier")
ROOT = Path(__file__).resolve().parent.parent


def load_secret(data_dir: Path) -> str:
    """The token secret of this data dir: made once, kept private, never printed."""
    path = data_dir / "secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def migrations_dir(service: str) -> Path:
    return ROOT / "services" / service / "migrations"


def migrate(database_url: str) -> None:
    from shared.db import upgrade

    for service in ("tracker", "notifier"):
        upgrade(migrations_dir(service), database_url)


def instances(service: str, running: Iterable[str]) -> list[str]:
    """The ``running`` names that are ``service`` or one of its replicas (``service-2``...)."""
    return [name for name in running if name == service or name.startswith(f"{service}-")]


def replica_name(service: str, running: Iterable[str]) -> str:
    """The name of the next instance of ``service`` among the ``running`` ones."""
    return f"{service}-{len(instances(service, running)) + 1}"


@dataclass
class DevStack:
    data_dir: Path
    clock: date | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    broker: Broker | None = None
    postgres: Postgres | None = None
    smtp: SmtpSink | None = None
    services: dict[str, ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    def start_infrastructure(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.broker = Broker(free_port(), self.logs / "broker.log")
        self.broker.start()
        self.postgres = Postgres(self.data_dir / "pg", free_port(), self.logs / "postgres.log")
        self.postgres.start()
        self.smtp = SmtpSink(free_port(), self.mail_dir, self.logs / "smtp.log")
        self.smtp.start()
        from shared.kafka import wait_for_broker

        asyncio.run(wait_for_broker(self.broker.bootstrap))
        migrate(self.postgres.url)

    def service_env(self, service: str) -> dict[str, str]:
        assert self.broker and self.postgres and self.smtp
        env = {
            **os.environ,
            "HRTRACK_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "HRTRACK_DATABASE_URL": self.postgres.url,
            "HRTRACK_TOKEN_SECRET": load_secret(self.data_dir),
            "HRTRACK_SMTP_HOST": "127.0.0.1",
            "HRTRACK_SMTP_PORT": str(self.smtp.port),
            "HRTRACK_TRACKER_URL": f"http://127.0.0.1:{self.ports['tracker']}",
            "HRTRACK_COORDINATOR_EMAILS": '["coordinators@hrtrack.local"]',
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        if self.clock:
            env["HRTRACK_CLOCK"] = self.clock.isoformat()
        return env

    def start_service(self, service: str, name: str | None = None) -> None:
        """Start ``service`` as ``name`` (its port, log and entry here; default: itself)."""
        name = name or service
        port = self.ports.setdefault(name, free_port())
        process = service_process(service, port, self.logs / f"{name}.log",
                                  self.service_env(service))
        process.start()
        self.services[name] = process

    def start_replica(self, service: str) -> str:
        """One more instance of ``service`` (its own port and log; the same broker group
        and database), ready: its name, ``service-2``, ``service-3``, ..."""
        name = replica_name(service, self.services)
        self.start_service(service, name)
        self.wait_ready((name,))
        return name

    def __enter__(self) -> DevStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def wait_ready(self, services: tuple[str, ...] = SERVICES, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(services)
        while pending:
            service = pending[0]
            process = self.services[service]
            if not process.running:
                raise RuntimeError(f"{service} exited; see {process.log_path}")
            try:
                if httpx.get(self.url(service) + "/readyz", timeout=2).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} not ready after {timeout}s; see {process.log_path}")
            time.sleep(0.2)

    def start(self) -> None:
        self.start_infrastructure()
        for service in SERVICES:
            self.ports.setdefault(service, free_port())
        for service in SERVICES:
            self.start_service(service)
        self.wait_ready()
        self.write_info()

    def info(self) -> dict[str, Any]:
        assert self.broker and self.postgres
        return {
            "intake_url": self.url("intake"),
            "tracker_url": self.url("tracker"),
            "notifier_url": self.url("notifier"),
            "coordinator_token": create_token(load_secret(self.data_dir), Role.COORDINATOR,
                                              subject="dev-coordinator"),
            "mail_dir": str(self.mail_dir.resolve()),
            "kafka_bootstrap": self.broker.bootstrap,
            "database_url": self.postgres.url,
            "clock": self.clock.isoformat() if self.clock else None,
            "pid": os.getpid(),
            "ports": {"broker": self.broker.port, "postgres": self.postgres.port,
                      "smtp": self.smtp.port if self.smtp else None, **self.ports},
        }

    def write_info(self) -> None:
        path = self.data_dir / "dev.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.info(), handle, indent=2)
        tmp.replace(path)

    def stop(self) -> None:
        for process in self.services.values():
            process.send_signal(signal.SIGTERM)
        for process in self.services.values():
            process.stop(timeout=15)
        for part in (self.smtp, self.broker, self.postgres):
            if part is not None:
                part.stop()


def run_dev(data_dir: Path, clock: date | None) -> int:
    stack = DevStack(data_dir.resolve(), clock)
    stop = threading.Event()
    parent = os.getppid()
    started = False

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()
        if not started:
            # Still starting up: interrupt whatever wait is under way, then clean up.
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start()
        started = True
        info = stack.info()
        print(f"hrtrack ready: intake {info['intake_url']}, tracker {info['tracker_url']}, "
              f"notifier {info['notifier_url']}; mail in {info['mail_dir']}; "
              f"settings in {data_dir / 'dev.json'}", flush=True)
        while not stop.wait(1.0):
            if os.getppid() != parent:
                # Whoever started us (e.g. `make run`) is gone: do not outlive it.
                print("hrtrack: parent process exited", file=sys.stderr, flush=True)
                break
            for name, process in stack.services.items():
                if not process.running:
                    print(f"hrtrack: {name} exited unexpectedly, restarting "
                          f"(log: {process.log_path})", file=sys.stderr, flush=True)
                    stack.start_service(name)
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - reported, then everything is stopped
        print(f"hrtrack dev failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("hrtrack: stopping", flush=True)
        stack.stop()
