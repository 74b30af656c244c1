"""CSV files as recommendations: columns, cells, row numbers, what is wrong with a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.intake.csv_import import RowLimit, normalize_header, read_csv
from services.intake.domain import BadRequest, decode_utf8, validate_items

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"

UPR_INFO = (
    "State under Review,Cycle,Session,Review date,Document,Paragraph,Recommendation,"
    "Recommending State(s),Response,Issues,Action Category,SDGs\r\n"
    'KAZ,Cycle 1,7,2010-02-12,A/HRC/14/10,97.12,"Ratify OP-CAT, promptly",'
    "Germany; Czech Republic,Supported,Torture|Detention,4,SDG 16;5\r\n"
)


def test_header_names_are_normalized() -> None:
    assert normalize_header(" Recommending State(s) ") == "recommending_state"
    assert normalize_header("No.") == "no"
    assert normalize_header("\ufeffreview_date") == "review_date"


def test_upr_info_columns_and_cells() -> None:
    parsed = read_csv(UPR_INFO, "upr", max_rows=10)
    assert parsed.ignored_columns == ["Action Category"]
    [row] = parsed.rows
    assert row.row == 2
    assert row.item == {
        "source": "upr", "state": "KAZ", "cycle": 1, "session": 7,
        "review_date": "2010-02-12", "symbol": "A/HRC/14/10", "paragraph": "97.12",
        "text": "Ratify OP-CAT, promptly", "recommending_states": ["Germany", "Czech Republic"],
        "response": "supported", "themes": ["Torture", "Detention"], "sdgs": [16, 5],
    }
    events, rejections = validate_items([row.item], submitted_by="t")
    assert rejections == [] and events[0].reference == "KAZ / cycle 1 / 97.12"


@pytest.mark.parametrize(
    ("written", "response"),
    [("Supported", "supported"), ("Noted", "noted"), ("Rejected", "noted"),
     ("Partially supported", "supported_in_part"), ("supported_in_part", "supported_in_part"),
     ("Maybe", "Maybe")],  # not a response: left for validation to name
)
def test_upr_responses(written: str, response: str) -> None:
    text = f"state,cycle,review_date,paragraph,text,response\nKAZ,1,2010-02-12,1,t,{written}\n"
    assert read_csv(text, "upr", max_rows=10).rows[0].item["response"] == response


def test_treaty_body_our_own_field_names() -> None:
    text = ("state,committee,symbol,paragraph,sub_paragraph,adopted,text,follow_up,"
            "follow_up_due,follow_up_grade\n"
            "kaz,cat,CAT/C/KAZ/CO/3,15,a,2014-11-21,Investigate,yes,2015-11-28,b\n"
            "KAZ,CEDAW,CEDAW/C/KAZ/CO/4,12,,2014-11-07,Adopt,no,,\n")
    rows = read_csv(text, "treaty_body", max_rows=10).rows
    assert rows[0].item["follow_up"] is True and rows[0].item["committee"] == "CAT"
    assert rows[0].item["state"] == "KAZ" and rows[0].item["follow_up_grade"] == "B"
    assert rows[1].item["follow_up"] is False and "sub_paragraph" not in rows[1].item
    events, rejections = validate_items([r.item for r in rows], submitted_by="t")
    assert rejections == [] and len(events) == 2


def test_plan_columns() -> None:
    text = ("Plan,Plan period,Chapter,No.,Action,Deadline,Executors\n"
            'P-1,2009-2012,The Right to Life,1,Study,Yearly,"Ministry of Justice, NGOs '
            '(per agreement)"\n')
    [row] = read_csv(text, "plan", max_rows=10).rows
    assert row.item["plan_period"] == [2009, 2012]
    assert row.item["number"] == "1" and row.item["text"] == "Study"
    events, _ = validate_items([row.item], submitted_by="t")
    assert len(events[0].due_dates) == 4  # yearly over 2009-2012


def test_bom_crlf_blank_lines_and_multiline_cells_keep_spreadsheet_row_numbers() -> None:
    text = ("\ufeffstate,cycle,review_date,paragraph,text\r\n"
            "KAZ,1,2010-02-12,1,\"first line\r\nsecond line\"\r\n"
            "\r\n"
            "KAZ,1,2010-02-12,2,third\r\n")
    rows = read_csv(text, "upr", max_rows=10).rows
    assert [r.row for r in rows] == [2, 4]
    assert rows[0].item["text"] == "first line\r\nsecond line"


def test_defaults_fill_missing_columns_and_empty_cells() -> None:
    text = "paragraph,text,cycle\n97.1,a,\n97.2,b,2\n"
    rows = read_csv(text, "upr", max_rows=10,
                    defaults={"state": "KAZ", "cycle": "1", "review_date": "2010-02-12"}).rows
    assert [(r.item["state"], r.item["cycle"]) for r in rows] == [("KAZ", 1), ("KAZ", 2)]


def test_bad_rows_are_reported_with_their_number() -> None:
    text = ("state,cycle,review_date,paragraph,text\n"
            "KAZ,1,2010-02-12,1,fine\n"
            "KAZ,1,2010-02-30,2,bad date\n"
            "KAZ,1,2010-02-12,3,too,many\n")
    parsed = read_csv(text, "upr", max_rows=10)
    assert [p.row for p in parsed.problems] == [4]
    assert "has 6 cells but the header names 5 columns" in parsed.problems[0].message
    _, rejections = validate_items([r.item for r in parsed.rows], submitted_by="t", prefix="")
    assert [parsed.rows[r.index].row for r in rejections] == [3]
    assert rejections[0].errors[0]["field"] == "review_date"


def test_a_source_column_must_match_the_import() -> None:
    text = "source,plan,chapter,number,text\nupr,P,C,1,t\n"
    parsed = read_csv(text, "plan", max_rows=10)
    assert parsed.rows == [] and "'upr' in a plan import" in parsed.problems[0].message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "CSV is empty"),
        ("state,cycle\nKAZ,1\n", "header: no text column"),
        ("text,Recommendation\na,b\n", "columns 'text' and 'Recommendation' both give text"),
        ("text\n", "header but no rows"),
    ],
)
def test_unusable_files(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        read_csv(text, "upr", max_rows=10)


def test_row_limit() -> None:
    text = "text\n" + "a\n" * 11
    with pytest.raises(RowLimit, match="at most 10 rows"):
        read_csv(text, "upr", max_rows=10)


def test_non_utf8_names_the_byte_and_line() -> None:
    with pytest.raises(BadRequest, match=r"CSV is not UTF-8: byte 0xe9 at offset 8 \(line 2\)"):
        decode_utf8("text\nCaf\u00e9\n".encode("latin-1"), "CSV")


@pytest.mark.parametrize(
    ("name", "source", "count"),
    [("upr.csv", "upr", 5), ("treaty_body.csv", "treaty_body", 4),
     ("plan.csv", "plan", 3)],
)
def test_sample_files_are_valid(name: str, source: str, count: int) -> None:
    text = decode_utf8((SAMPLES / name).read_bytes())
    parsed = read_csv(text, source, max_rows=100)
    events, rejections = validate_items([r.item for r in parsed.rows], submitted_by="t")
    assert (len(events), rejections, parsed.problems) == (count, [], [])
