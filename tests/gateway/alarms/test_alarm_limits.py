"""Limit profiles, sanity checks, rule overrides and the [alarms] configuration."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from drivers.readings import PHYSIOLOGICAL, Condition, Priority
from gateway.alarms.limits import METRICS, PROFILES, LimitError, Limits, apply_changes, check
from gateway.alarms.model import Kind
from gateway.alarms.rules import ALWAYS_HIGH, EVENT_RULES, RuleError, event_rules
from gateway.config import ConfigError, load

SHIPPED = Path(__file__).resolve().parents[3] / "config.toml"


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_default_profile_is_sane_and_complete(name: str) -> None:
    assert set(PROFILES[name]) == set(METRICS)
    for metric, limits in PROFILES[name].items():
        check(METRICS[metric], limits)


def test_profiles_differ_where_patients_do() -> None:
    assert PROFILES["neonatal"]["heart_rate"].low == 100
    assert PROFILES["neonatal"]["spo2"].high == 95  # hyperoxia in the newborn
    assert PROFILES["adult"]["spo2"].high is None


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (Limits(low=101), "sane range"),
        (Limits(low=float("nan")), "sane range"),
        (Limits(low=95, high=94), "below"),
        (Limits(low=90, extreme_low=90), "below"),
        (Limits(low=90, delay=61), "delay"),
        (Limits(low=90, delay=-1), "delay"),
    ],
)
def test_insane_limits_are_refused_with_a_reason(limits: Limits, reason: str) -> None:
    with pytest.raises(LimitError, match=reason):
        check(METRICS["spo2"], limits)


def test_changes_apply_all_or_nothing() -> None:
    current = dict(PROFILES["adult"])
    with pytest.raises(LimitError):
        apply_changes(current, {"spo2": {"low": 92}, "heart_rate": {"high": 400}})
    assert current == dict(PROFILES["adult"])
    new = apply_changes(current, {"spo2": {"extreme_low": None}, "heart_rate": {"high": 130}})
    assert new["spo2"].extreme_low is None and new["heart_rate"].high == 130
    with pytest.raises(LimitError, match="unknown field"):
        apply_changes(current, {"spo2": {"lo": 92}})
    with pytest.raises(LimitError, match="number"):
        apply_changes(current, {"spo2": {"delay": None}})


def test_rules_rate_every_condition_and_keep_lethal_rhythms_high() -> None:
    assert set(EVENT_RULES) == set(Condition)
    for condition, rule in EVENT_RULES.items():
        expected = Kind.PHYSIOLOGICAL if condition in PHYSIOLOGICAL else Kind.TECHNICAL
        assert rule.kind is expected, condition
    for condition in ALWAYS_HIGH:
        assert EVENT_RULES[condition].priority is Priority.HIGH
        with pytest.raises(RuleError, match="cannot be re-rated"):
            event_rules({condition.value: "low"})
    with pytest.raises(RuleError, match="cannot be re-rated"):
        event_rules({"sensor_off": "off"})
    with pytest.raises(RuleError, match="not one of"):
        event_rules({"afib": "loud"})
    assert event_rules({"afib": "off"})[Condition.ATRIAL_FIBRILLATION].priority is None


CONFIG = """
[gateway]
id = "t"

[alarms]
{alarms}

[[beds]]
id = "bed-1"
{bed}
"""


def write(tmp_path: Path, alarms: str = "", bed: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(CONFIG.format(alarms=alarms, bed=bed)))
    return path


def test_alarms_section_and_per_bed_limits_are_read(tmp_path: Path) -> None:
    bed = '[beds.alarms]\nprofile = "neonatal"\nlimits = { spo2 = { low = 86, delay = 15 } }'
    config = load(write(tmp_path, 'escalate_after_seconds = 0\npriorities = { afib = "low" }', bed))
    assert config.alarms.escalate_after is None
    assert config.alarms.priorities == (("afib", "low"),)
    (only,) = config.beds
    assert only.limit_profile == "neonatal"
    assert only.limits is not None
    assert only.limits["spo2"] == Limits(low=86, high=95, extreme_low=80, delay=15)


@pytest.mark.parametrize(
    ("alarms", "bed", "message"),
    [
        ('profile = "martian"', "", "alarms.profile: unknown limit profile 'martian'"),
        ("", '[beds.alarms]\nprofile = "giant"', "beds[0].alarms.profile: unknown limit"),
        ("", "[beds.alarms]\nlimits = { spo2 = { low = 20 } }", "beds[0].alarms.limits: spo2.low"),
        ("", "[beds.alarms]\nlimits = { glucose = { low = 3 } }", "unknown metric 'glucose'"),
        ('priorities = { vf = "low" }', "", "alarms.priorities: 'vf' cannot be re-rated"),
        ("self_check_timeout = 1", "", "alarms.self_check_timeout: must be at least"),
        ("stale_data_seconds = 0", "", "alarms.stale_data_seconds"),
    ],
)
def test_wrong_alarm_config_names_the_field(
    tmp_path: Path, alarms: str, bed: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, alarms, bed))
    assert any(message in line for line in caught.value.problems), caught.value.problems


def test_shipped_config_sets_the_demo_desaturation_limit() -> None:
    config = load(SHIPPED)
    bed2 = next(b for b in config.beds if b.id == "bed-2")
    assert bed2.limits is not None and bed2.limits["spo2"].low == 95
    assert config.alarms.stale_data_after == 30
