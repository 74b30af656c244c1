"""`hrtrack agencies load`: reading CSV and JSON directory files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hrtrack.agencies import AgencyFileError, parse_file, parse_text
from services.tracker.agencies import read_directory
from services.tracker.settings import DEFAULT_DIRECTORY

CSV = """name,aliases,emails,language,escalation_email
Ministry of Justice,The Ministry of Justice;MoJ,moj@example.kz; boss@example.kz,ru,head@example.kz
"Akimats of Almaty, Zhambyl, Karaganda and Pavlodar regions",,,,
,,,,
"""


def test_csv_lists_are_split_on_semicolons_and_empty_cells_are_left_out() -> None:
    first, second = parse_text(CSV, json_format=False)
    assert first.body == {
        "name": "Ministry of Justice", "aliases": ["The Ministry of Justice", "MoJ"],
        "emails": ["moj@example.kz", "boss@example.kz"], "language": "ru",
        "escalation_email": "head@example.kz"}
    assert first.where == "line 2" and first.agency_id is None
    # Commas stay inside a name; empty cells change nothing (so nothing is sent).
    assert second.body == {"name": "Akimats of Almaty, Zhambyl, Karaganda and Pavlodar regions"}


def test_csv_with_an_id_column_updates_that_agency() -> None:
    (entry,) = parse_text("id,emails\n6d1c0e3e-0000-4000-8000-000000000001,a@example.kz\n",
                          json_format=False)
    assert entry.agency_id == "6d1c0e3e-0000-4000-8000-000000000001"
    assert entry.body == {"emails": ["a@example.kz"]}


def test_json_array_or_object_with_agencies_and_unknown_keys_ignored() -> None:
    entries = parse_text('[{"name": "NGOs", "aliases": ["NGO"], "kind": "ngo", '
                         '"voluntary": true}]', json_format=True)
    assert [e.body for e in entries] == [{"name": "NGOs", "aliases": ["NGO"]}]
    wrapped = parse_text('{"agencies": [{"name": "A", "emails": "a@x.kz;b@x.kz"}]}',
                         json_format=True)
    assert wrapped[0].body == {"name": "A", "emails": ["a@x.kz", "b@x.kz"]}


@pytest.mark.parametrize(("text", "json_format", "message"), [
    ("[{\"aliases\": [\"x\"]}]", True, "item 1: name is required"),
    ("aliases,emails\nx,y\n", False, "needs a header with a name column"),
    ("{not json", True, "not valid JSON"),
    ("[1]", True, "item 1: expected an object"),
])
def test_bad_files_say_what_and_where(text: str, json_format: bool, message: str) -> None:
    with pytest.raises(AgencyFileError, match=message):
        parse_text(text, json_format=json_format)


def test_format_from_suffix_or_content(tmp_path: Path) -> None:
    as_json = tmp_path / "agencies.txt"
    as_json.write_text('[{"name": "A"}]')
    as_csv = tmp_path / "agencies"
    as_csv.write_text("name\nA\n")
    assert parse_file(as_json)[0].body == parse_file(as_csv)[0].body == {"name": "A"}


def test_the_shipped_directory_loads_with_both_readers() -> None:
    seed = read_directory(DEFAULT_DIRECTORY)
    entries = parse_file(DEFAULT_DIRECTORY)
    assert len(seed) == len(entries) >= 29
    names = {e.name for e in seed}
    assert {"Ministry of Justice", "Ministry of Internal Affairs", "Prosecutor General",
            "Ministry of Culture and Information"} <= names
    moj = next(e for e in seed if e.name == "Ministry of Justice")
    assert {"The Ministry of Justice", "Ministry of justice"} <= set(moj.aliases)
