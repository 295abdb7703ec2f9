"""Register-map profiles: where a pump keeps each value, as a checked, frozen object.

A profile is a TOML file (shipped ones in ``drivers/infusion/profiles/``, user ones in a
configured folder) that says, for each quantity the driver knows (:class:`Role`), which
register table and address holds it, its data type, word and byte order, scale, unit and
"no value" sentinels; how the pump's state enumeration maps to :class:`PumpState`; which
alarm bit means which condition and with what priority; and a magic value that identifies
the map (used by ``scan``). See ``profiles/generic.toml`` for the documented format.

:func:`load_profile` refuses a bad file with :class:`ProfileError`, whose message names the
file, the key and the reason. :meth:`Profile.plan` groups every register the profile uses
into as few read requests as the map allows (contiguous blocks per table).
"""

from __future__ import annotations

import enum
import functools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

from drivers.readings import Condition, Priority

#: Folder of the profiles shipped with the driver.
SHIPPED_DIR: Final = Path(__file__).with_name("profiles")
#: Modbus allows at most 125 registers in one read (function codes 3 and 4).
MAX_READ_REGISTERS: Final = 125

DataType: TypeAlias = Literal["u16", "s16", "u32", "s32", "f32", "string"]
Order: TypeAlias = Literal["big", "little"]
DATA_TYPES: Final[tuple[DataType, ...]] = ("u16", "s16", "u32", "s32", "f32", "string")
#: Registers each numeric type occupies.
WIDTH: Final[Mapping[str, int]] = {"u16": 1, "s16": 1, "u32": 2, "s32": 2, "f32": 2}


class Table(enum.IntEnum):
    """Register tables a profile may read, valued by their Modbus *read* function code.

    Only the two register tables: the driver reads registers, and the read-only guarantee
    is easier to see when no other table exists here.
    """

    HOLDING = 3
    INPUT = 4


class Role(enum.Enum):
    """Numeric quantities a pump map can carry, with the canonical unit the driver emits."""

    RATE = "rate"  # current infusion rate, mL/h
    VOLUME_INFUSED = "volume_infused"  # this program, mL
    VTBI = "vtbi"  # volume to be infused (programmed), mL
    VTBI_REMAINING = "vtbi_remaining"  # mL
    BATTERY = "battery"  # charge, %
    CONCENTRATION = "concentration"  # drug concentration, mg/mL
    HEARTBEAT = "heartbeat"  # counter the pump advances on each refresh, 1


#: The driver's unit for each role, and the units a profile may declare for it with the
#: factor that converts a value in that unit to the canonical one.
CANONICAL_UNITS: Final[Mapping[Role, Mapping[str, float]]] = {
    Role.RATE: {"mL/h": 1.0, "mL/min": 60.0, "L/h": 1000.0},
    Role.VOLUME_INFUSED: {"mL": 1.0, "L": 1000.0, "uL": 0.001},
    Role.VTBI: {"mL": 1.0, "L": 1000.0, "uL": 0.001},
    Role.VTBI_REMAINING: {"mL": 1.0, "L": 1000.0, "uL": 0.001},
    Role.BATTERY: {"%": 1.0},
    Role.CONCENTRATION: {"mg/mL": 1.0, "ug/mL": 0.001},
    Role.HEARTBEAT: {"1": 1.0},
}


class PumpState(enum.IntEnum):
    """Operational state, valued as in protocols.md 6.4 (the generic map's enumeration).

    These numbers are what the driver publishes as ``MDC_PUMP_STAT``, whatever the raw
    value in a pump's own map.
    """

    OFF = 0
    STANDBY = 1
    STOPPED = 2
    RUNNING = 3
    PAUSED = 4
    KVO = 5
    BOLUS = 6
    COMPLETE = 7
    ALARM = 8
    PRIMING = 9


#: Conditions an alarm bit may raise, and the priority when the profile names none.
ALARM_CONDITIONS: Final[Mapping[Condition, Priority]] = {
    Condition.OCCLUSION: Priority.HIGH,
    Condition.AIR_IN_LINE: Priority.HIGH,
    Condition.RESERVOIR_EMPTY: Priority.HIGH,
    Condition.DOOR_OPEN: Priority.HIGH,
    Condition.NEAR_EMPTY: Priority.LOW,
    Condition.INFUSION_COMPLETE: Priority.MEDIUM,
    Condition.LOW_BATTERY: Priority.MEDIUM,
    Condition.PUMP_IDLE: Priority.LOW,
    Condition.DEVICE_MALFUNCTION: Priority.HIGH,
}


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file, the key and the reason."""


@dataclass(frozen=True, slots=True)
class Field:
    """Where one value lives and how its registers become a number or text.

    ``scale`` multiplies the raw integer (or float); ``factor`` then converts the declared
    unit to the role's canonical unit. ``missing`` lists raw values meaning "no value".
    ``words`` is the register count (strings: 2 characters per register).
    """

    key: str
    table: Table
    address: int
    type: DataType
    words: int
    word_order: Order
    byte_order: Order
    scale: float = 1.0
    factor: float = 1.0
    missing: frozenset[int] = frozenset()

    @property
    def end(self) -> int:
        return self.address + self.words


@dataclass(frozen=True, slots=True)
class AlarmBit:
    bit: int
    condition: Condition
    priority: Priority


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers from ``address`` of ``table``."""

    table: Table
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class Profile:
    """A checked register map. Build with :func:`load_profile` or :func:`parse_profile`."""

    name: str
    source: str  # file it came from, for messages
    description: str
    manufacturer: str
    model: str
    numerics: Mapping[Role, Field]
    state: Field | None
    states: Mapping[int, PumpState]
    alarms: Field | None
    alarm_bits: tuple[AlarmBit, ...]
    drug_name: Field | None
    serial: Field | None
    magic: Field
    magic_value: int
    max_block: int
    max_gap: int

    def fields(self) -> list[Field]:
        """Every field the profile reads, magic included."""
        out = [self.magic, *self.numerics.values()]
        out += [f for f in (self.state, self.alarms, self.drug_name, self.serial) if f]
        return out

    def plan(self) -> tuple[ReadBlock, ...]:
        """Fewest read requests covering every field: per table, fields sorted by address
        are merged while the gap between them is at most ``max_gap`` registers and the
        block stays within ``max_block``."""
        return plan_blocks(self.fields(), self.max_block, self.max_gap)


def plan_blocks(fields: list[Field], max_block: int, max_gap: int) -> tuple[ReadBlock, ...]:
    blocks: list[ReadBlock] = []
    for table in Table:
        spans = sorted((f.address, f.end) for f in fields if f.table is table)
        start: int | None = None
        end = 0
        for lo, hi in spans:
            if start is not None and lo - end <= max_gap and max(hi, end) - start <= max_block:
                end = max(end, hi)
                continue
            if start is not None:
                blocks.append(ReadBlock(table, start, end - start))
            start, end = lo, hi
        if start is not None:
            blocks.append(ReadBlock(table, start, end - start))
    return tuple(blocks)


# -- loading ------------------------------------------------------------------------------


def find_profile(name: str, user_dir: Path | None = None) -> Path:
    """The file for profile ``name``: ``user_dir/NAME.toml`` first, then the shipped one.

    A name containing a path separator or ending in ``.toml`` is taken as a path.
    """
    if "/" in name or name.endswith(".toml"):
        return Path(name)
    if user_dir is not None and (user_dir / f"{name}.toml").is_file():
        return user_dir / f"{name}.toml"
    return SHIPPED_DIR / f"{name}.toml"


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))


def load_profile(name: str, user_dir: Path | None = None) -> Profile:
    """Load and check profile ``name``; :class:`ProfileError` if missing or invalid."""
    path = find_profile(name, user_dir)
    try:
        stat = path.stat()
    except OSError:
        choices = ", ".join(shipped_profiles())
        where = f" or in {user_dir}" if user_dir is not None else ""
        raise ProfileError(
            f"profile {name!r}: no file {path}; use a shipped profile ({choices}){where}"
        ) from None
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _load_cached(path: str, _mtime: int, _size: int) -> Profile:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"profile {path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {path}: not valid TOML: {exc}") from None
    return parse_profile(raw, source=path)


def parse_profile(raw: Mapping[str, Any], *, source: str = "<profile>") -> Profile:
    """Check a profile's parsed TOML; raise :class:`ProfileError` at the first problem."""
    return _Parser(raw, source).profile()


_TOP_KEYS: Final = {"profile", "identify", "values", "state", "alarms", "text"}
_PROFILE_KEYS: Final = {
    "name",
    "description",
    "manufacturer",
    "model",
    "table",
    "word_order",
    "byte_order",
    "max_block",
    "max_gap",
}
_FIELD_KEYS: Final = {
    "table",
    "address",
    "type",
    "words",
    "word_order",
    "byte_order",
    "scale",
    "unit",
    "missing",
}


class _Parser:
    def __init__(self, raw: Mapping[str, Any], source: str) -> None:
        self.raw = raw
        self.source = source

    def fail(self, key: str, reason: str) -> ProfileError:
        return ProfileError(f"profile {self.source}: {key}: {reason}")

    def table_of(self, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table")
        return value

    def check_keys(self, raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in raw:
            if key not in allowed:
                raise self.fail(
                    f"{where}.{key}" if where else key,
                    f"unknown key; use one of: {', '.join(sorted(allowed))}",
                )

    def text(self, raw: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
        value = raw.get(key, default)
        if not isinstance(value, str):
            raise self.fail(f"{where}.{key}", f"expected a string, got {value!r}")
        return value

    def integer(
        self, raw: Mapping[str, Any], key: str, where: str, lo: int, hi: int, default: int | None
    ) -> int:
        value = raw.get(key, default)
        if value is None:
            raise self.fail(f"{where}.{key}", "required; add it")
        if type(value) is not int or not lo <= value <= hi:
            raise self.fail(f"{where}.{key}", f"expected a whole number {lo}..{hi}, got {value!r}")
        return value

    def choice(
        self, raw: Mapping[str, Any], key: str, where: str, options: tuple[str, ...], default: str
    ) -> str:
        value = raw.get(key, default)
        if value not in options:
            raise self.fail(f"{where}.{key}", f"{value!r} is not one of: {', '.join(options)}")
        return str(value)

    def profile(self) -> Profile:
        self.check_keys(self.raw, _TOP_KEYS, "")
        head = self.table_of(self.raw, "profile")
        self.check_keys(head, _PROFILE_KEYS, "profile")
        name = self.text(head, "name", "profile")
        if not name:
            raise self.fail("profile.name", "required; add it")
        defaults = {
            "table": self.choice(head, "table", "profile", ("input", "holding"), "input"),
            "word_order": self.choice(head, "word_order", "profile", ("big", "little"), "big"),
            "byte_order": self.choice(head, "byte_order", "profile", ("big", "little"), "big"),
        }
        max_block = self.integer(head, "max_block", "profile", 1, MAX_READ_REGISTERS, 125)
        max_gap = self.integer(head, "max_gap", "profile", 0, MAX_READ_REGISTERS, 8)

        identify = self.table_of(self.raw, "identify")
        if not identify:
            raise self.fail("identify", "required: the magic value that identifies the map")
        magic_raw = {k: v for k, v in identify.items() if k != "value"}
        magic = self.field(magic_raw, "identify", defaults, numeric_only=True)
        magic_value = self.integer(identify, "value", "identify", -(2**31), 2**32 - 1, None)

        values = self.table_of(self.raw, "values")
        numerics: dict[Role, Field] = {}
        for key, spec in values.items():
            where = f"values.{key}"
            try:
                role = Role(key)
            except ValueError:
                roles = ", ".join(r.value for r in Role)
                raise self.fail(where, f"unknown value; use one of: {roles}") from None
            if not isinstance(spec, dict):
                raise self.fail(where, "expected a table")
            numerics[role] = self.field(spec, where, defaults, numeric_only=True, role=role)
        if Role.RATE not in numerics:
            raise self.fail("values.rate", "required: every pump map must give the rate")

        state, states = self.state_section(defaults)
        alarms, bits = self.alarm_section(defaults)
        texts = self.table_of(self.raw, "text")
        self.check_keys(texts, {"drug_name", "serial"}, "text")
        drug = serial = None
        for key, spec in texts.items():
            if not isinstance(spec, dict):
                raise self.fail(f"text.{key}", "expected a table")
            made = self.field(spec, f"text.{key}", defaults, text_only=True)
            drug, serial = (made, serial) if key == "drug_name" else (drug, made)

        profile = Profile(
            name=name,
            source=self.source,
            description=self.text(head, "description", "profile"),
            manufacturer=self.text(head, "manufacturer", "profile"),
            model=self.text(head, "model", "profile"),
            numerics=numerics,
            state=state,
            states=states,
            alarms=alarms,
            alarm_bits=bits,
            drug_name=drug,
            serial=serial,
            magic=magic,
            magic_value=magic_value,
            max_block=max_block,
            max_gap=max_gap,
        )
        self.check_overlaps(profile)
        return profile

    def field(
        self,
        spec: Mapping[str, Any],
        where: str,
        defaults: Mapping[str, str],
        *,
        numeric_only: bool = False,
        text_only: bool = False,
        role: Role | None = None,
        integer_only: bool = False,
    ) -> Field:
        self.check_keys(spec, _FIELD_KEYS, where)
        table = Table[
            self.choice(spec, "table", where, ("input", "holding"), defaults["table"]).upper()
        ]
        address = self.integer(spec, "address", where, 0, 0xFFFF, None)
        kind: DataType = self.choice(spec, "type", where, DATA_TYPES, "")  # type: ignore[assignment]
        if numeric_only and kind == "string":
            raise self.fail(f"{where}.type", "a number is needed here, not a string")
        if text_only and kind != "string":
            raise self.fail(f"{where}.type", 'text needs type = "string"')
        if integer_only and kind == "f32":
            raise self.fail(f"{where}.type", "an integer type is needed here (bits or codes)")
        if kind == "string":
            words = self.integer(spec, "words", where, 1, MAX_READ_REGISTERS, None)
        else:
            if "words" in spec:
                raise self.fail(f"{where}.words", f"only for strings; {kind} has a fixed width")
            words = WIDTH[kind]
        scale = spec.get("scale", 1.0)
        if type(scale) not in (int, float) or not math.isfinite(scale) or scale == 0:
            raise self.fail(f"{where}.scale", f"expected a non-zero number, got {scale!r}")
        factor = 1.0
        if role is not None:
            allowed = CANONICAL_UNITS[role]
            default_unit = next(iter(allowed))
            unit = spec.get("unit", default_unit)
            if unit not in allowed:
                raise self.fail(
                    f"{where}.unit",
                    f"{unit!r} is not a unit for {role.value}; use one of: {', '.join(allowed)}",
                )
            factor = allowed[unit]
        elif "unit" in spec:
            raise self.fail(f"{where}.unit", "this field has no unit; remove it")
        missing = spec.get("missing", [])
        if not isinstance(missing, list) or any(type(m) is not int for m in missing):
            raise self.fail(f"{where}.missing", "expected a list of whole numbers (raw values)")
        return Field(
            key=where,
            table=table,
            address=address,
            type=kind,
            words=words,
            word_order=self.choice(
                spec, "word_order", where, ("big", "little"), defaults["word_order"]
            ),  # type: ignore[arg-type]
            byte_order=self.choice(
                spec, "byte_order", where, ("big", "little"), defaults["byte_order"]
            ),  # type: ignore[arg-type]
            scale=float(scale),
            factor=factor,
            missing=frozenset(missing),
        )

    def state_section(
        self, defaults: Mapping[str, str]
    ) -> tuple[Field | None, dict[int, PumpState]]:
        raw = self.table_of(self.raw, "state")
        if not raw:
            return None, {}
        enumeration = raw.get("values")
        if not isinstance(enumeration, dict) or not enumeration:
            raise self.fail(
                "state.values", 'required: raw value = state name, e.g. "3" = "running"'
            )
        field = self.field(
            {k: v for k, v in raw.items() if k != "values"},
            "state",
            defaults,
            numeric_only=True,
            integer_only=True,
        )
        states: dict[int, PumpState] = {}
        names = ", ".join(s.name.lower() for s in PumpState)
        for key, value in enumeration.items():
            try:
                code = int(key)
            except ValueError:
                raise self.fail(
                    f"state.values.{key}", "keys are raw values (whole numbers)"
                ) from None
            if not isinstance(value, str) or value.upper() not in PumpState.__members__:
                raise self.fail(
                    f"state.values.{key}", f"{value!r} is not a state; use one of: {names}"
                )
            states[code] = PumpState[value.upper()]
        return field, states

    def alarm_section(
        self, defaults: Mapping[str, str]
    ) -> tuple[Field | None, tuple[AlarmBit, ...]]:
        raw = self.table_of(self.raw, "alarms")
        if not raw:
            return None, ()
        bits_raw = raw.get("bits")
        if not isinstance(bits_raw, dict) or not bits_raw:
            raise self.fail("alarms.bits", 'required: bit = { condition = "occlusion" }')
        field = self.field(
            {k: v for k, v in raw.items() if k != "bits"},
            "alarms",
            defaults,
            numeric_only=True,
            integer_only=True,
        )
        width = 16 * field.words
        bits: list[AlarmBit] = []
        conditions = ", ".join(c.value for c in ALARM_CONDITIONS)
        for key, spec in bits_raw.items():
            where = f"alarms.bits.{key}"
            try:
                bit = int(key)
            except ValueError:
                raise self.fail(where, "keys are bit numbers (0 = least significant)") from None
            if not 0 <= bit < width:
                raise self.fail(where, f"bit {bit} is outside the {width}-bit field")
            if not isinstance(spec, dict):
                raise self.fail(where, 'expected { condition = "...", priority = "..." }')
            self.check_keys(spec, {"condition", "priority"}, where)
            try:
                condition = Condition(spec.get("condition"))
            except ValueError:
                condition = None
            if condition not in ALARM_CONDITIONS:
                raise self.fail(
                    f"{where}.condition",
                    f"{spec.get('condition')!r} is not a pump condition; use one of: {conditions}",
                )
            assert condition is not None
            level = spec.get("priority", ALARM_CONDITIONS[condition].value)
            try:
                priority = Priority(level)
            except ValueError:
                raise self.fail(
                    f"{where}.priority", f"{level!r}: use high, medium or low"
                ) from None
            bits.append(AlarmBit(bit, condition, priority))
        return field, tuple(sorted(bits, key=lambda b: b.bit))

    def check_overlaps(self, profile: Profile) -> None:
        taken: dict[tuple[Table, int], str] = {}
        for field in profile.fields():
            for address in range(field.address, field.end):
                other = taken.get((field.table, address))
                if other is not None:
                    raise self.fail(field.key, f"register {address} is also used by {other}")
                taken[(field.table, address)] = field.key
