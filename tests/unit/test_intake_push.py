"""`hrtrack push`'s own logic: chunks, row numbers in the whole file, retries on 503, 413
splitting, exit status. Intake is an in-memory stand-in here (httpx.MockTransport); the real
one is in tests/integration/intake/test_push.py."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from hrtrack.push import PushError, csv_source, push_file


class FakeIntake:
    """Accepts every item except those whose text is "bad"; can answer 503 or 413 first."""

    def __init__(self, unavailable: int = 0, max_items: int = 10_000) -> None:
        self.unavailable = unavailable
        self.max_items = max_items
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.unavailable:
            self.unavailable -= 1
            return httpx.Response(503, headers={"Retry-After": "3"},
                                  json={"detail": "broker away", "accepted": []})
        if request.url.path == "/v1/imports/csv":
            rows = list(csv.DictReader(io.StringIO(request.content.decode())))
            texts = [r.get("text", "") for r in rows]
            label, first = "row", 2
        else:
            texts = [i.get("text", "") for i in json.loads(request.content)["items"]]
            label, first = "index", 0
        if len(texts) > self.max_items:
            return httpx.Response(413, json={"detail": "too many"})
        accepted = [f"id-{t}" for t in texts if t != "bad"]
        rejected = [{label: first + n, "reason": "text: bad"}
                    for n, t in enumerate(texts) if t == "bad"]
        return httpx.Response(202 if accepted else 422,
                              json={"accepted": accepted, "rejected": rejected})


def push(path: Path, fake: FakeIntake, **kwargs: Any) -> tuple[int, str, list[float]]:
    out = io.StringIO()
    waits: list[float] = []
    code = push_file(path, url="http://intake", token="t", out=out,
                     transport=httpx.MockTransport(fake), sleep=waits.append, **kwargs)
    return code, out.getvalue(), waits


def test_json_list_in_chunks_with_indexes_in_the_whole_file(tmp_path: Path) -> None:
    items = [{"source": "plan", "text": "bad" if n in (1, 4) else f"t{n}"} for n in range(5)]
    path = tmp_path / "items.json"
    path.write_text(json.dumps(items))
    fake = FakeIntake()
    code, out, _ = push(path, fake, batch_size=2)
    assert code == 1
    assert len(fake.requests) == 3
    assert fake.requests[0].headers["authorization"] == "Bearer t"
    assert out.splitlines() == ["accepted: 3, rejected: 2", "  item 1: text: bad",
                                "  item 4: text: bad"]


@pytest.mark.parametrize("data", [{"items": [{"text": "a"}]}, {"text": "a"}, [{"text": "a"}]])
def test_json_shapes_and_source_filled_in(tmp_path: Path, data: Any) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps(data))
    fake = FakeIntake()
    assert push(path, fake, source="upr")[0] == 0
    assert json.loads(fake.requests[0].content) == {"items": [{"text": "a", "source": "upr"}]}


def test_csv_chunks_keep_the_header_and_file_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "recs.csv"
    path.write_bytes("\ufefftext,paragraph\r\na,1\r\n\"multi\r\nline\",2\r\nbad,3\r\n"
                     "d,4\r\nbad,5\r\n".encode())
    fake = FakeIntake()
    code, out, _ = push(path, fake, source="upr", batch_size=2)
    assert code == 1
    assert [r.url.params["source"] for r in fake.requests] == ["upr"] * 3
    assert all(r.content.startswith(b"text,paragraph\r\n") for r in fake.requests)
    assert "  row 4: text: bad" in out and "  row 6: text: bad" in out


def test_waits_out_503_honoring_retry_after(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text(json.dumps([{"text": "a"}]))
    code, out, waits = push(path, FakeIntake(unavailable=2))
    assert (code, waits) == (0, [3.0, 3.0])
    assert out.startswith("accepted: 1, rejected: 0")


def test_gives_up_after_a_bounded_number_of_attempts(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text(json.dumps([{"text": "a"}]))
    fake = FakeIntake(unavailable=100)
    code, out, waits = push(path, fake)
    assert code == 2 and len(fake.requests) == 8 and len(waits) == 7
    assert "error: intake still unavailable after 8 attempts: 503 broker away" in out


def test_a_chunk_too_large_is_split(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text(json.dumps([{"text": f"t{n}"} for n in range(8)]))
    fake = FakeIntake(max_items=3)
    code, out, _ = push(path, fake, batch_size=8)
    assert code == 0 and out.startswith("accepted: 8, rejected: 0")


def test_fatal_answers_stop_the_push(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text(json.dumps([{"text": "a"}]))

    def unauthorized(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "token expired"})

    out = io.StringIO()
    code = push_file(path, url="http://intake", token="t", out=out,
                     transport=httpx.MockTransport(unauthorized))
    assert code == 2 and "error: intake answered 401: token expired" in out.getvalue()


def test_unreadable_files(tmp_path: Path) -> None:
    latin = tmp_path / "upr.csv"
    latin.write_bytes("text\nCaf\u00e9\n".encode("latin-1"))
    code, out, _ = push(latin, FakeIntake())
    assert code == 2 and "is not UTF-8: byte 0xe9 at offset 8 (line 2)" in out
    other = tmp_path / "recs.xlsx"
    other.write_bytes(b"PK")
    assert "expected a .json, .csv or .txt" in push(other, FakeIntake())[1]


def test_csv_source_from_column_or_name(tmp_path: Path) -> None:
    assert csv_source(tmp_path / "x.csv", ["Source", "text"], [["plan", "a"]]) == "plan"
    assert csv_source(tmp_path / "kaz_upr_2010.csv", ["text"], []) == "upr"
    assert csv_source(tmp_path / "cat_treaty_body.csv", ["text"], []) == "treaty_body"
    with pytest.raises(PushError, match="give --source"):
        csv_source(tmp_path / "x.csv", ["text"], [])
