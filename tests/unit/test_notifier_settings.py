"""The notifier's settings: the reminder policy from the environment or a file."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from services.notifier.settings import NotifierSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("HRTRACK_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = NotifierSettings().policy
    assert policy.before_days == (30, 14, 7, 1)
    assert (policy.overdue_first_day, policy.overdue_every_days) == (1, 7)
    assert (policy.escalate_agency_after_days, policy.escalate_coordinators_after_days) == (14, 30)
    assert policy.report_due_day == 10 and policy.remind_partners is False


def test_every_policy_value_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "HRTRACK_POLICY__BEFORE_DAYS": "[60,30,1]",
        "HRTRACK_POLICY__OVERDUE_FIRST_DAY": "2",
        "HRTRACK_POLICY__OVERDUE_EVERY_DAYS": "3",
        "HRTRACK_POLICY__ESCALATE_AGENCY_AFTER_DAYS": "10",
        "HRTRACK_POLICY__ESCALATE_COORDINATORS_AFTER_DAYS": "20",
        "HRTRACK_POLICY__OVERDUE_HORIZON_DAYS": "90",
        "HRTRACK_POLICY__REPORT_DUE_DAY": "15",
        "HRTRACK_POLICY__REPORT_HORIZON_DAYS": "365",
        "HRTRACK_POLICY__REMIND_PARTNERS": "true",
        "HRTRACK_POLICY__CLOSED_STATUSES": "implemented,cancelled",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    p = NotifierSettings().policy
    assert p.before_days == (60, 30, 1)
    assert (p.overdue_first_day, p.overdue_every_days) == (2, 3)
    assert (p.escalate_agency_after_days, p.escalate_coordinators_after_days) == (10, 20)
    assert (p.overdue_horizon_days, p.report_due_day, p.report_horizon_days) == (90, 15, 365)
    assert p.remind_partners is True
    assert p.closed_statuses == frozenset({"implemented", "cancelled"})


def test_comma_lists_and_a_whole_json_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HRTRACK_POLICY__BEFORE_DAYS", "7, 30")
    assert NotifierSettings().policy.before_days == (30, 7)
    monkeypatch.delenv("HRTRACK_POLICY__BEFORE_DAYS")
    monkeypatch.setenv("HRTRACK_POLICY", '{"before_days": [5], "report_due_day": 20}')
    policy = NotifierSettings().policy
    assert (policy.before_days, policy.report_due_day) == ((5,), 20)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_policy_file_with_environment_on_top(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             suffix: str) -> None:
    path = tmp_path / f"policy{suffix}"
    if suffix == ".toml":
        path.write_text("[policy]\nbefore_days = [45, 3]\nremind_partners = true\n"
                        "overdue_every_days = 5\n")
    else:
        path.write_text('{"before_days": [45, 3], "remind_partners": true, '
                        '"overdue_every_days": 5}')
    monkeypatch.setenv("HRTRACK_POLICY_FILE", str(path))
    monkeypatch.setenv("HRTRACK_POLICY__OVERDUE_EVERY_DAYS", "2")
    policy = NotifierSettings().policy
    assert policy.before_days == (45, 3)
    assert policy.remind_partners is True
    assert policy.overdue_every_days == 2  # the environment wins over the file
    assert policy.escalate_agency_after_days == 14  # defaults for the rest


def test_policy_file_errors_name_the_file(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("HRTRACK_POLICY_FILE", str(tmp_path / "missing.json"))
    with pytest.raises(pydantic.ValidationError, match="missing.json"):
        NotifierSettings()
    bad = tmp_path / "bad.toml"
    bad.write_text("before_days = [")
    monkeypatch.setenv("HRTRACK_POLICY_FILE", str(bad))
    with pytest.raises(pydantic.ValidationError, match="bad.toml"):
        NotifierSettings()


def test_invalid_policy_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HRTRACK_POLICY__OVERDUE_EVERY_DAYS", "0")
    with pytest.raises(pydantic.ValidationError, match="overdue_every_days"):
        NotifierSettings()


def test_constructor_values_still_work() -> None:
    settings = NotifierSettings(policy={"before_days": [2]}, coordinator_emails=["c@x.kz"])
    assert settings.policy.before_days == (2,)
    assert settings.coordinator_emails == ["c@x.kz"]


def test_smtp_password_is_not_in_the_repr() -> None:
    settings = NotifierSettings(smtp_password="s3cret-value")
    assert "s3cret-value" not in repr(settings)
