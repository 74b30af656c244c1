"""One recommendation end to end: `hrtrack dev` runs the three services as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hrtrack.stack import port_open
from tests.helpers import mails_to, plain_text

PLAN_EXAMPLE = {
    "source": "plan", "plan": "NHRAP-2009-2012", "chapter": "The Right to Privacy",
    "number": "3", "text": "Draft and adopt a law on the protection of personal data",
    "deadline": "4th quarter of 2009",
    "executors": "Ministry of Justice with the participation of the Prosecutor General",
}


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("dev")
    env = {**os.environ, "HRTRACK_DATA_DIR": str(data_dir), "HRTRACK_CLOCK": "2009-12-01"}
    process = subprocess.Popen([sys.executable, "-m", "hrtrack.cli", "dev"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if "hrtrack ready" in line:
            break
    else:
        process.kill()
    assert any("hrtrack ready" in line for line in lines), "".join(lines)
    info = json.loads((data_dir / "dev.json").read_text())
    info["process"] = process
    try:
        yield info
    finally:
        if process.poll() is None:
            process.kill()


def test_dev_json_has_every_setting(dev_stack: dict[str, Any]) -> None:
    for key in ("intake_url", "tracker_url", "notifier_url", "coordinator_token", "mail_dir",
                "kafka_bootstrap", "database_url"):
        assert dev_stack[key], key
    assert dev_stack["clock"] == "2009-12-01"


def test_one_plan_action_end_to_end(dev_stack: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {dev_stack['coordinator_token']}"}
    with httpx.Client(headers=auth, timeout=30) as http:
        agency = http.post(f"{dev_stack['tracker_url']}/v1/agencies", json={
            "name": "Ministry of Justice", "emails": ["moj@justice.example.kz"],
            "language": "en"})
        assert agency.status_code in (200, 201), agency.text

        posted = http.post(f"{dev_stack['intake_url']}/v1/recommendations", json=PLAN_EXAMPLE)
        assert posted.status_code == 202, posted.text
        rec_id = posted.json()["accepted"][0]

        deadline = time.monotonic() + 15
        assignments: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            got = http.get(f"{dev_stack['tracker_url']}/v1/recommendations/{rec_id}")
            if got.status_code == 200 and len(got.json()["assignments"]) == 2:
                assignments = got.json()["assignments"]
                break
            time.sleep(0.2)
        roles = {a["agency_name"]: a["role"] for a in assignments}
        assert roles == {"Ministry of Justice": "lead", "Prosecutor General": "co"}
        assert {a["due"] for a in assignments} == {"2009-12-31"}

        # The notifier learns of the assignment and the agency contact through Kafka.
        mail_dir = Path(dev_stack["mail_dir"])
        deadline = time.monotonic() + 20
        sent: list[Any] = []
        while time.monotonic() < deadline and not sent:
            ran = http.post(f"{dev_stack['notifier_url']}/v1/reminders/run",
                            params={"as_of": "2009-12-01"})
            assert ran.status_code == 200, ran.text
            sent = mails_to(mail_dir, "moj@justice.example.kz")
            if not sent:
                time.sleep(0.5)

    assert len(sent) == 1, "exactly one digest for the ministry"
    mail = sent[0]
    body = plain_text(mail)
    assert "Ministry of Justice" in str(mail["Subject"])
    assert "personal data" in body
    assert "31 December 2009" in body
    assert mail["X-Hrtrack-As-Of"] == "2009-12-01"


def test_sigint_stops_every_process(dev_stack: dict[str, Any]) -> None:
    process: subprocess.Popen[str] = dev_stack["process"]
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    ports = [int(url.rsplit(":", 1)[1]) for url in
             (dev_stack["intake_url"], dev_stack["tracker_url"], dev_stack["notifier_url"])]
    ports += [v for v in dev_stack["ports"].values() if v]
    still_open = [p for p in ports if port_open(p)]
    assert still_open == []
