"""The pipeline benchmark's diagnostics (the notifier paused, more trackers) and its summary
line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from bench.pipeline import add_arguments, paused, summary
from hrtrack.devstack import instances, replica_name

FIGURES = {"rec_per_s": 3779.4, "ratio": 0.361, "p99_ms": 102.2}


def wait_for(pid: int, wanted: str) -> str:
    """The process's state once it is ``wanted`` (signals are delivered asynchronously),
    or the last one seen after two seconds."""
    status = ""
    for _ in range(200):
        status = str(psutil.Process(pid).status())
        if status == wanted:
            break
        time.sleep(0.01)
    return status


@pytest.fixture
def sleeper() -> Iterator[int]:
    """A child process that sleeps: its pid."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def test_the_process_is_stopped_within_the_block_and_runs_again_after_it(sleeper: int) -> None:
    with paused(sleeper):
        assert wait_for(sleeper, psutil.STATUS_STOPPED) == psutil.STATUS_STOPPED
    assert wait_for(sleeper, psutil.STATUS_SLEEPING) == psutil.STATUS_SLEEPING


def test_the_process_runs_again_when_the_block_fails(sleeper: int) -> None:
    with pytest.raises(TimeoutError), paused(sleeper):
        wait_for(sleeper, psutil.STATUS_STOPPED)
        raise TimeoutError("the push failed")
    assert wait_for(sleeper, psutil.STATUS_SLEEPING) == psutil.STATUS_SLEEPING


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_summary_of_a_normal_run_is_the_issue_s_line() -> None:
    assert summary(parse(), FIGURES) == "pipeline: 3779 rec/s, ratio 0.36, p99 102 ms"


def test_a_run_with_the_notifier_paused_says_so_in_its_summary() -> None:
    assert summary(parse("--pause-notifier"), FIGURES) == (
        "pipeline (notifier paused): 3779 rec/s, ratio 0.36, p99 102 ms")


def test_a_run_with_more_trackers_says_how_many_in_its_summary() -> None:
    assert summary(parse("--trackers", "2"), FIGURES) == (
        "pipeline (2 trackers): 3779 rec/s, ratio 0.36, p99 102 ms")
    assert summary(parse("--pause-notifier", "--trackers", "3"), FIGURES) == (
        "pipeline (notifier paused, 3 trackers): 3779 rec/s, ratio 0.36, p99 102 ms")


def test_replicas_are_numbered_after_the_instances_running() -> None:
    assert replica_name("tracker", ["intake", "tracker", "notifier"]) == "tracker-2"
    assert replica_name("tracker", ["tracker", "tracker-2"]) == "tracker-3"
    assert replica_name("notifier", ["tracker", "tracker-2", "notifier"]) == "notifier-2"


def test_a_services_instances_are_it_and_its_replicas() -> None:
    assert instances("tracker", ["intake", "tracker", "tracker-2", "notifier"]) == [
        "tracker", "tracker-2"]
    assert instances("notifier", ["tracker", "tracker-2"]) == []
