"""Request examples for the OpenAPI document, one per source (shown in /docs)."""

from __future__ import annotations

from typing import Any

UPR_EXAMPLE: dict[str, Any] = {
    "source": "upr",
    "state": "KAZ",
    "cycle": 1,
    "session": 7,
    "review_date": "2010-02-12",
    "symbol": "A/HRC/14/10",
    "paragraph": "97.12",
    "text": "Consider ratifying the Optional Protocol to the Convention against Torture.",
    "recommending_states": ["Germany", "Czech Republic"],
    "response": "supported",
    "themes": ["torture", "international instruments"],
    "affected_groups": ["detainees"],
    "sdgs": [16],
    "executors": [{"name": "Ministry of Foreign Affairs", "role": "lead"},
                  {"name": "Ministry of Justice", "role": "co"}],
}

TREATY_BODY_EXAMPLE: dict[str, Any] = {
    "source": "treaty_body",
    "state": "KAZ",
    "committee": "CAT",
    "symbol": "CAT/C/KAZ/CO/3",
    "paragraph": "15",
    "sub_paragraph": "a",
    "adopted": "2014-11-21",
    "text": "Ensure that all allegations of torture are investigated promptly and impartially.",
    "follow_up": True,
    "follow_up_due": "2015-11-28",
    "follow_up_grade": "B",
    "themes": ["torture"],
    "executors": "Ministry of Internal Affairs, Prosecutor General",
}

PLAN_ACTION_EXAMPLE: dict[str, Any] = {
    "source": "plan",
    "plan": "NHRAP-2009-2012",
    "plan_title": "National Human Rights Action Plan of Kazakhstan for 2009-2012",
    "plan_period": [2009, 2012],
    "chapter": "The Right to Privacy",
    "number": "3",
    "text": "Draft and adopt a law on the protection of personal data",
    "deadline": "2nd quarter 2010",
    "executors": "Ministry of Justice with the participation of the Prosecutor General, "
                 "NGOs (per agreement)",
}

RECOMMENDATION_EXAMPLES: dict[str, dict[str, Any]] = {
    "upr": {"summary": "UPR recommendation", "value": UPR_EXAMPLE},
    "treaty_body": {"summary": "Treaty-body concluding observation (with follow-up)",
                    "value": TREATY_BODY_EXAMPLE},
    "plan": {"summary": "National Plan action", "value": PLAN_ACTION_EXAMPLE},
    "batch": {"summary": "A batch (up to 10,000 items)",
              "value": {"items": [UPR_EXAMPLE, TREATY_BODY_EXAMPLE, PLAN_ACTION_EXAMPLE]}},
}

PLAN_EXAMPLE = """National Human Rights Action Plan of Kazakhstan for 2009-2012

The Right to Life

No. Action Deadline Executors
1. Study the question of the full
abolition of the death penalty

2011 Ministry of Justice, Prosecutor
General, Supreme Court
"""

CSV_EXAMPLES: dict[str, dict[str, Any]] = {
    "upr": {
        "summary": "UPR (UPR Info database columns)",
        "value": "State under Review,Cycle,Session,Review date,Document,Paragraph,"
                 "Recommendation,Recommending State,Response,Issues,SDGs\r\n"
                 "KAZ,1,7,2010-02-12,A/HRC/14/10,97.12,\"Consider ratifying OP-CAT\","
                 "Germany;Czech Republic,Supported,Torture|International instruments,16\r\n",
    },
    "treaty_body": {
        "summary": "Treaty body (our field names)",
        "value": "state,committee,symbol,paragraph,sub_paragraph,adopted,text,follow_up,"
                 "follow_up_due,executors\r\n"
                 "KAZ,CAT,CAT/C/KAZ/CO/3,15,a,2014-11-21,\"Investigate all allegations of "
                 "torture\",yes,2015-11-28,\"Ministry of Internal Affairs, Prosecutor "
                 "General\"\r\n",
    },
    "plan": {
        "summary": "National Plan actions",
        "value": "plan,plan_period,chapter,number,action,deadline,executors\r\n"
                 "NHRAP-2009-2012,2009-2012,The Right to Privacy,3,\"Draft a law on personal "
                 "data\",2nd quarter 2010,\"Ministry of Justice with the participation of the "
                 "Prosecutor General\"\r\n",
    },
}
