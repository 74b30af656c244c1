"""Executor parsing and roles (DESIGN.md section 3), with the plan's real cells."""

from __future__ import annotations

import pytest

from shared.executors import Executor, ExecutorRole, agency_key, join_pdf_lines, parse_executors

LEAD, CO, PARTNER = ExecutorRole.LEAD, ExecutorRole.CO, ExecutorRole.PARTNER


def _pairs(text: str) -> list[tuple[str, ExecutorRole]]:
    return [(e.name, e.role) for e in parse_executors(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Ministry of Justice, Prosecutor General, with the participation of the Supreme "
            "Court, NGOs (per agreement)",
            [
                ("Ministry of Justice", LEAD),
                ("Prosecutor General", CO),
                ("Supreme Court", CO),
                ("NGOs", PARTNER),
            ],
            id="design-example",
        ),
        pytest.param(
            "Ministry of Justice,\nMinistry of Foreign Affairs, \nwith the participation of \n"
            "the Prosecutor General, the \nSupreme Court and the Human \nRights Commission",
            [
                ("Ministry of Justice", LEAD),
                ("Ministry of Foreign Affairs", CO),
                ("Prosecutor General", CO),
                ("Supreme Court", CO),
                ("Human Rights Commission", CO),
            ],
            id="with-the-participation-of-and-split-over-lines",
        ),
        pytest.param(
            "Ministry of Justice with participation of NGOs, religious\nassociations "
            "(per agreement)",
            [("Ministry of Justice", LEAD), ("NGOs", CO), ("religious associations", PARTNER)],
            id="with-participation-of",
        ),
        pytest.param(
            "The Ministry of Justice with the\nassistance of the Supreme Court\nand the "
            "Prosecutor General of\nRK",
            [
                ("Ministry of Justice", LEAD),
                ("Supreme Court", CO),
                ("Prosecutor General of RK", CO),
            ],
            id="with-the-assistance-of",
        ),
        pytest.param(
            "The Ministry of Justice,\nHuman Rights Commission,\nHuman Rights Commissioner\n"
            "with assistance of human rights\nNGOs",
            [
                ("Ministry of Justice", LEAD),
                ("Human Rights Commission", CO),
                ("Human Rights Commissioner", CO),
                ("human rights NGOs", CO),
            ],
            id="with-assistance-of",
        ),
        pytest.param(
            "Ministry of Justice with the\ninvolvement of Human Rights\nNGOs (per agreement)",
            [("Ministry of Justice", LEAD), ("Human Rights NGOs", PARTNER)],
            id="with-the-involvement-of",
        ),
        pytest.param(
            "Ministry of Culture and Information jointly with the Human Rights Commission",
            [("Ministry of Culture and Information", LEAD), ("Human Rights Commission", CO)],
            id="jointly-with",
        ),
        pytest.param(
            "Ministry of the Interior, UNDP in\nKazakhstan\n(in coordination),\nOSCE in "
            "Kazakhstan\n(in coordination)",
            [
                ("Ministry of the Interior", LEAD),
                ("UNDP in Kazakhstan", PARTNER),
                ("OSCE in Kazakhstan", PARTNER),
            ],
            id="in-coordination",
        ),
        pytest.param(
            "Ministry of Justice, UNICEF (as agreed)",
            [("Ministry of Justice", LEAD), ("UNICEF", PARTNER)],
            id="as-agreed",
        ),
        pytest.param(
            "OSCE Center in Astana (per \nagreement)",
            [("OSCE Center in Astana", PARTNER)],
            id="marker-split-over-lines-only-partner",
        ),
        pytest.param(
            "Ministry of Labour and Social Protection of Population and Ministry of Justice",
            [
                ("Ministry of Labour and Social Protection of Population", LEAD),
                ("Ministry of Justice", CO),
            ],
            id="and-inside-and-between-names",
        ),
        pytest.param(
            "Ministry of Culture and \nInformation,\nMinistry of Education and \nScience,\n"
            "Committee for Religious Affairs",
            [
                ("Ministry of Culture and Information", LEAD),
                ("Ministry of Education and Science", CO),
                ("Committee for Religious Affairs", CO),
            ],
            id="and-inside-names",
        ),
        pytest.param(
            "Ministry of Justice, Prosecutor\nGeneral NGOs (per agreement)",
            [("Ministry of Justice", LEAD), ("Prosecutor General", CO), ("NGOs", PARTNER)],
            id="missing-comma",
        ),
        pytest.param(
            "Akimats of Almaty, Zhambyl,\nKaraganda and Pavlodar regions,\nMCI RK, Human "
            "Rights\nCommission, UNDP, UNESCO\nCluster Office in Almaty (per\nagreement).",
            [
                ("Akimats of Almaty, Zhambyl, Karaganda and Pavlodar regions", LEAD),
                ("MCI RK", CO),
                ("Human Rights Commission", CO),
                ("UNDP", CO),
                ("UNESCO Cluster Office in Almaty", PARTNER),
            ],
            id="place-lists-stay-in-one-name",
        ),
        pytest.param(
            "Akimats of Atyrau, Western\nKazakhstan and Mangistau\nregions\nMCI RK",
            [("Akimats of Atyrau, Western Kazakhstan and Mangistau regions", LEAD), ("MCI RK", CO)],
            id="missing-comma-at-line-break",
        ),
        pytest.param(
            "The Ministry of Justice with the\nassistance of the Ministry of the\nInterior of "
            "RK, the Agency\nof RK for Combat Against\nEconomic and Corruption\nCrimes "
            "(financial police)",
            [
                ("Ministry of Justice", LEAD),
                ("Ministry of the Interior of RK", CO),
                (
                    "Agency of RK for Combat Against Economic and Corruption Crimes "
                    "(financial police)",
                    CO,
                ),
            ],
            id="and-inside-name-with-parenthesis",
        ),
        pytest.param(
            "Normative decisions of\nMaslikhats of regions and the\ncities of Astana and Almaty",
            [("Maslikhats of regions and the cities of Astana and Almaty", LEAD)],
            id="non-body-prefix-dropped",
        ),
        pytest.param(
            "Ministry of Justice;\n107\nSupreme Court of \u0420\u041a",
            [("Ministry of Justice", LEAD), ("Supreme Court of RK", CO)],
            id="page-number-and-cyrillic-debris",
        ),
        pytest.param("", [], id="empty"),
    ],
)
def test_parse_executors(text: str, expected: list[tuple[str, ExecutorRole]]) -> None:
    assert _pairs(text) == expected


def test_executor_is_frozen_and_serializes_role_as_text() -> None:
    executor = Executor(name="Ministry of Justice", role=ExecutorRole.LEAD)
    assert executor.model_dump(mode="json") == {"name": "Ministry of Justice", "role": "lead"}
    with pytest.raises(ValueError):
        executor.name = "x"  # type: ignore[misc]


def test_repeated_body_is_listed_once() -> None:
    assert _pairs("Ministry of Justice, the Ministry of Justice") == [("Ministry of Justice", LEAD)]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("The Ministry of Justice", "Ministry of justice"),
        ("Ministry  of\nJustice.", "ministry of justice"),
        ("Prosecutor General\u2019s Office", "Prosecutor General's Office"),
        ("Supreme Court of \u0420\u041a", "Supreme Court of RK"),
    ],
)
def test_agency_key_equal(a: str, b: str) -> None:
    assert agency_key(a) == agency_key(b)


def test_agency_key_keeps_different_bodies_apart() -> None:
    assert agency_key("Ministry of Justice") != agency_key("Ministry of Finance")
    assert agency_key("Theatre Committee") == "theatre committee"


@pytest.mark.parametrize(
    ("lines", "joined"),
    [
        ("recom-\nmendations of the", "recommendations of the"),
        ("officers of law-\nenforcement agencies", "officers of law-enforcement agencies"),
        ("agency-\nlevel material", "agency-level material"),
        ("first page\n\ufffd07\n\nsecond page", "first page second page"),
    ],
)
def test_join_pdf_lines(lines: str, joined: str) -> None:
    assert join_pdf_lines(lines) == joined
