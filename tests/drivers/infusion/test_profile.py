"""Register-map profiles: the shipped ones, block planning, and refusal of bad files."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drivers import registry
from drivers.infusion.profile import (
    SHIPPED_DIR,
    Field,
    ProfileError,
    PumpState,
    ReadBlock,
    Role,
    Table,
    load_profile,
    parse_profile,
    plan_blocks,
    shipped_profiles,
)
from drivers.readings import Condition, Priority

GENERIC = tomllib.loads((SHIPPED_DIR / "generic.toml").read_text())


def test_shipped_profiles_load_and_differ_in_word_order_and_scaling() -> None:
    assert {"generic", "cdab-tenths"} <= set(shipped_profiles())
    generic, cdab = load_profile("generic"), load_profile("cdab-tenths")
    assert generic.numerics[Role.RATE].word_order == "big"
    assert cdab.numerics[Role.RATE].word_order == "little"
    assert generic.numerics[Role.RATE].scale == pytest.approx(0.01)
    assert cdab.numerics[Role.RATE].scale == pytest.approx(0.1)
    assert generic.numerics[Role.RATE].table is Table.INPUT
    assert cdab.numerics[Role.RATE].table is Table.HOLDING


def test_generic_profile_follows_protocols_md_6_4() -> None:
    p = load_profile("generic")
    assert p.magic.address == 0 and p.magic_value == 0x50554D50
    assert p.numerics[Role.RATE].address == 11
    assert p.numerics[Role.VTBI].missing == {0xFFFFFFFF, 0xFFFFFFFE}
    assert p.states[3] is PumpState.RUNNING and p.states[5] is PumpState.KVO
    by_bit = {b.bit: (b.condition, b.priority) for b in p.alarm_bits}
    assert by_bit[0] == (Condition.OCCLUSION, Priority.HIGH)
    assert by_bit[2] == (Condition.AIR_IN_LINE, Priority.HIGH)
    assert by_bit[4] == (Condition.RESERVOIR_EMPTY, Priority.HIGH)
    assert by_bit[5] == (Condition.DOOR_OPEN, Priority.HIGH)
    assert p.drug_name is not None and p.drug_name.words == 16


def test_generic_profile_is_read_in_one_request_and_cdab_in_two() -> None:
    assert load_profile("generic").plan() == (ReadBlock(Table.INPUT, 0, 61),)
    assert load_profile("cdab-tenths").plan() == (
        ReadBlock(Table.HOLDING, 100, 13),
        ReadBlock(Table.HOLDING, 200, 10),
    )


def _field(table: Table, address: int, words: int) -> Field:
    return Field(f"f{address}", table, address, "u16", words, "big", "big")


def test_plan_merges_small_gaps_splits_large_ones_tables_and_long_blocks() -> None:
    fields = [_field(Table.INPUT, 0, 2), _field(Table.INPUT, 5, 1), _field(Table.INPUT, 40, 2)]
    fields.append(_field(Table.HOLDING, 5, 1))
    assert plan_blocks(fields, max_block=125, max_gap=3) == (
        ReadBlock(Table.HOLDING, 5, 1),
        ReadBlock(Table.INPUT, 0, 6),
        ReadBlock(Table.INPUT, 40, 2),
    )
    long = [_field(Table.INPUT, a, 1) for a in range(0, 200)]
    assert plan_blocks(long, max_block=125, max_gap=0) == (
        ReadBlock(Table.INPUT, 0, 125),
        ReadBlock(Table.INPUT, 125, 75),
    )


def _broken(path: list[str], value: Any) -> dict[str, Any]:
    raw = tomllib.loads((SHIPPED_DIR / "generic.toml").read_text())
    node = raw
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "key", "reason"),
    [
        (["values", "rate", "type"], "u64", "values.rate.type", "'u64' is not one of"),
        (["values", "rate", "unit"], "mmHg", "values.rate.unit", "not a unit for rate"),
        (["values", "rate", "scale"], 0, "values.rate.scale", "non-zero number"),
        (["values", "rate", "address"], 70000, "values.rate.address", "0..65535"),
        (["values", "rate", "writable"], True, "values.rate.writable", "unknown key"),
        (["values", "flow"], {"address": 3, "type": "u16"}, "values.flow", "unknown value"),
        (["values", "rate"], _DELETE, "values.rate", "required"),
        (["values", "battery", "address"], 12, "values.battery", "also used by"),
        (["state", "values", "3"], "flying", "state.values.3", "not a state"),
        (["alarms", "bits", "40"], {"condition": "occlusion"}, "alarms.bits.40", "outside"),
        (
            ["alarms", "bits", "0"],
            {"condition": "asystole"},
            "alarms.bits.0.condition",
            "not a pump",
        ),
        (
            ["alarms", "bits", "0"],
            {"condition": "occlusion", "priority": "urgent"},
            "alarms.bits.0.priority",
            "high, medium or low",
        ),
        (["text", "drug_name", "type"], "u16", "text.drug_name.type", "string"),
        (["identify"], _DELETE, "identify", "required"),
        (["profile", "table"], "coils", "profile.table", "'coils' is not one of"),
    ],
)
def test_bad_profile_is_refused_naming_file_key_and_reason(
    path: list[str], value: Any, key: str, reason: str
) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_profile(_broken(path, value), source="/site/pumps/bad.toml")
    message = str(caught.value)
    assert message.startswith(f"profile /site/pumps/bad.toml: {key}: "), message
    assert reason in message


def test_user_profile_folder_comes_first_and_bad_toml_names_the_file(tmp_path: Path) -> None:
    text = (SHIPPED_DIR / "generic.toml").read_text().replace('name = "generic"', 'name = "site"')
    (tmp_path / "generic.toml").write_text(text)
    assert load_profile("generic", tmp_path).name == "site"
    assert load_profile("generic").name == "generic"
    (tmp_path / "broken.toml").write_text("[profile\n")
    with pytest.raises(ProfileError, match=r"broken\.toml: not valid TOML"):
        load_profile("broken", tmp_path)
    with pytest.raises(ProfileError, match=r"no file .*missing\.toml; use a shipped profile"):
        load_profile("missing", tmp_path)


def test_driver_settings_refuse_a_bad_profile_at_validation(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        (SHIPPED_DIR / "generic.toml")
        .read_text()
        .replace(
            'type = "u32"\nscale = 0.01\nunit = "mL/h"',
            'type = "u128"\nscale = 0.01\nunit = "mL/h"',
        )
    )
    spec = registry.get("modbus-pump-tcp")
    with pytest.raises(ValidationError) as caught:
        spec.settings.model_validate({"profile": "bad", "profile_dir": str(tmp_path)})
    assert f"profile {tmp_path / 'bad.toml'}: values.rate.type: 'u128'" in str(caught.value)
    with pytest.raises(ValidationError, match="must be an absolute path"):
        spec.settings.model_validate({"profile_dir": "relative/dir"})
    with pytest.raises(ValidationError, match="extra"):
        spec.settings.model_validate({"write_enable": True})
