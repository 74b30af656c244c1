"""What both benchmarks need: a fresh dev stack and process memory sampling."""

from __future__ import annotations

import contextlib
import platform
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil

from hrtrack.devstack import DevStack


@contextlib.contextmanager
def fresh_stack(extra_env: dict[str, str] | None = None) -> Iterator[DevStack]:
    with tempfile.TemporaryDirectory(prefix="hrtrack-bench-") as tmp, \
            DevStack(Path(tmp), extra_env=extra_env or {}) as stack:
        yield stack


class PeakMemory:
    """Samples the resident memory of each service process (with its children)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_mb: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each process (with its children)."""
        used: dict[str, float] = {}
        for name, pid in self.pids.items():
            try:
                proc = psutil.Process(pid)
                procs = [proc, *proc.children(recursive=True)]
                used[name] = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
            except psutil.Error:
                used[name] = 0.0
        return used

    def _rss(self, pid: int) -> float:
        try:
            proc = psutil.Process(pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total / 1024 / 1024
        except psutil.Error:
            return 0.0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, pid in self.pids.items():
                self.peak_mb[name] = max(self.peak_mb[name], self._rss(pid))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine() -> str:
    freq = psutil.cpu_freq()
    return (f"{platform.node()}: {psutil.cpu_count()} cores"
            f"{f' @ {freq.current:.0f} MHz' if freq else ''}, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()} "
            f"(from {sys.base_prefix})")


def service_pids(stack: DevStack) -> dict[str, int]:
    return {name: p.proc.pid for name, p in stack.services.items() if p.proc}


def all_pids(stack: DevStack) -> dict[str, int]:
    """The services and the parts under them (broker, PostgreSQL)."""
    pids = service_pids(stack)
    for name, part in (("broker", stack.broker), ("postgres", stack.postgres)):
        if part is not None and part.process is not None and part.process.proc is not None:
            pids[name] = part.process.proc.pid
    return pids
