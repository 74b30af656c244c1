"""`hrtrack push` against a real intake (served by uvicorn on a free port) and the real broker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from hrtrack.cli import main
from hrtrack.stack import free_port
from services.intake.main import build_app
from services.intake.settings import IntakeSettings
from tests.conftest import Infra, unique

SAMPLES = Path(__file__).resolve().parents[3] / "data" / "samples"


@pytest.fixture(scope="module")
def intake_url(infra: Infra) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(IntakeSettings(**infra.env())),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        raise AssertionError("intake did not get ready")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_push_a_plan_csv_with_a_bad_row(intake_url: str, infra: Infra, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    plan = unique("PUSH")
    text = (SAMPLES / "plan.csv").read_text(encoding="utf-8").replace("SAMPLE-2009-2012", plan)
    text += f"{plan},,2012-2009,The Right to Life,9,Bad period,2011,Ministry of Justice\r\n"
    path = tmp_path / "plan_actions.csv"  # the source from the name
    path.write_text(text, encoding="utf-8")
    code = main(["push", str(path), "--url", intake_url, "--token", infra.coordinator_token(),
                 "--batch-size", "2"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.splitlines()[0] == "accepted: 3, rejected: 1"
    assert "  row 5: plan_period: must be [first year, last year]" in out


def test_push_a_json_batch(intake_url: str, infra: Infra, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    plan = unique("PUSH")
    items = [{"source": "plan", "plan": plan, "chapter": "C", "number": str(n), "text": "t",
              "deadline": "2010"} for n in range(1, 6)]
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"items": items}))
    code = main(["push", str(path), "--url", intake_url, "--token", infra.coordinator_token(),
                 "--batch-size", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip() == "accepted: 5, rejected: 0"


def test_push_with_a_bad_token_fails(intake_url: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"source": "plan", "text": "t"}))
    code = main(["push", str(path), "--url", intake_url, "--token", "nope"])
    assert code == 2
    assert "error: intake answered 401: invalid token" in capsys.readouterr().out
