"""Config: every kind of mistake gives the field path and the fix; the CLI exits 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
[gateway]
id = "ward-3"
data_dir = "state"
listen = "127.0.0.1:8081"

[[beds]]
id = "bed-1"

  [[beds.devices]]
  id = "ox-1"
  driver = "nonin"
  port = "/dev/ttyUSB0"

[[beds]]
id = "bed-2"
label = "Bed 2 (window)"

  [[beds.devices]]
  id = "ox-2"
  driver = "nonin"
  data_format = 2
  simulate = "normal"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text))
    return caught.value.problems


def test_a_good_config_loads(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD))
    assert config.gateway_id == "ward-3"
    assert config.data_dir == tmp_path / "state"
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8081)
    assert [b.label for b in config.beds] == ["bed-1", "Bed 2 (window)"]
    ox1, ox2 = (d for _, d in config.devices)
    assert ox1.settings.port == "/dev/ttyUSB0"  # type: ignore[attr-defined]
    assert ox1.settings.data_format == 7  # type: ignore[attr-defined]
    assert ox2.simulate == "normal" and ox2.settings.data_format == 2  # type: ignore[attr-defined]


def test_data_dir_override(tmp_path: Path) -> None:
    config = load(write(tmp_path, GOOD), data_dir=tmp_path / "elsewhere")
    assert config.data_dir == tmp_path / "elsewhere"
    assert config.store.path == tmp_path / "elsewhere" / "twin.sqlite"
    assert config.store.key_file == tmp_path / "elsewhere" / "keys" / "kek"


def test_relative_data_dir_override_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.chdir(tmp_path.parent)
    config = load(path, data_dir=Path("run-here"))
    assert config.data_dir == tmp_path.parent / "run-here"


def test_patient_identifiers_in_config_only_for_a_simulated_ward(tmp_path: Path) -> None:
    def with_patient(birth: str) -> str:
        return GOOD.replace(
            'label = "Bed 2 (window)"',
            'label = "Bed 2 (window)"\n[beds.patient]\nname = "Zelda Secret"\nmrn = "M-9"\n'
            f"birth_date = {birth!r}",
        )

    found = problems(tmp_path, with_patient("1970-12-31"))
    expected = "beds[1].patient: patient identifiers belong in config.toml only"
    assert any(expected in p for p in found), found
    wrong = problems(tmp_path, with_patient("31/12/1970"))
    assert any("beds[1].patient.birth_date" in p for p in wrong), wrong
    assert not any("31/12/1970" in p or "Zelda" in p for p in found + wrong)  # never echoed


def test_patient_is_bound_from_the_bed_table(tmp_path: Path) -> None:
    text = GOOD.replace(
        'listen = "127.0.0.1:8081"', 'listen = "127.0.0.1:8081"\nsimulation = true'
    ).replace(
        'label = "Bed 2 (window)"',
        'label = "Bed 2 (window)"\n[beds.patient]\nname = "Demo"\nmrn = "D-1"\n'
        "birth_date = 1970-01-02",
    )
    (bed1, bed2) = load(write(tmp_path, text)).beds
    assert bed1.patient is None
    assert bed2.patient is not None and bed2.patient.birth_date == "1970-01-02"


def test_the_shipped_config_is_valid() -> None:
    config = load(ROOT / "config.toml")
    assert len(config.beds) == 5
    assert all(d.simulate for _, d in config.devices)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ('  port = "/dev/ttyUSB0"\n', ""),
            "config.toml: beds[0].devices[0].port: required for driver 'nonin'",
        ),
        (
            ('driver = "nonin"\n  port', 'driver = "noninn"\n  port'),
            "config.toml: beds[0].devices[0].driver: unknown driver 'noninn'; use one of: ",
        ),
        (
            ("data_format = 2", "data_format = 9"),
            "config.toml: beds[1].devices[0].data_format:",
        ),
        (
            ("data_format = 2", 'data_format = "seven"'),
            "config.toml: beds[1].devices[0].data_format:",
        ),
        (
            ("data_format = 2", "baud = 9600"),
            "config.toml: beds[1].devices[0].baud: unknown key; remove it or fix its spelling",
        ),
        (
            ('listen = "127.0.0.1:8081"', 'listen = "127.0.0.1"\nlisten_port = 1'),
            "config.toml: gateway.listen_port: unknown key",
        ),
        (
            ('listen = "127.0.0.1:8081"', 'listen = "localhost:99999"'),
            'config.toml: gateway.listen: Value error, expected "HOST:PORT"',
        ),
        (
            ('id = "ward-3"\n', ""),
            "config.toml: gateway.id: required; add it",
        ),
        (
            ('id = "ox-2"', 'id = "ox-1"'),
            "config.toml: beds[1].devices[0].id: duplicate id 'ox-1' "
            "(also at beds[0].devices[0].id)",
        ),
        (
            ('id = "bed-2"', 'id = "bed-1"'),
            "config.toml: beds[1].id: duplicate id 'bed-1' (also at beds[0].id)",
        ),
        (
            ('simulate = "normal"', 'simulate = "asleep"'),
            "config.toml: beds[1].devices[0].simulate: unknown scenario 'asleep'",
        ),
        (
            ('id = "bed-2"', 'id = "bed 2!"'),
            "config.toml: beds[1].id: 'bed 2!' is not a valid id",
        ),
        (
            ('simulate = "normal"', 'simulate = "normal"\n  port = "/dev/ttyS0"'),
            "config.toml: beds[1].devices[0].port: a simulated or replayed device gets its port",
        ),
        (
            ("[gateway]", "[gatewy]"),
            "config.toml: gatewy: unknown key",
        ),
        # Wrong types are refused, never coerced.
        (
            ('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\n  baudrate = true'),
            "config.toml: beds[0].devices[0].baudrate: Input should be a valid integer",
        ),
        (
            ('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\n  baudrate = "9600"'),
            "config.toml: beds[0].devices[0].baudrate: Input should be a valid integer",
        ),
        (
            ('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\n  bytesize = 8.0'),
            "config.toml: beds[0].devices[0].bytesize:",
        ),
        (
            ('listen = "127.0.0.1:8081"', 'listen = "127.0.0.1:8081"\nstale_after = "5"'),
            "config.toml: gateway.stale_after: Input should be a valid number",
        ),
        (
            ('listen = "127.0.0.1:8081"', 'listen = "127.0.0.1:8081"\nsimulation = "yes"'),
            "config.toml: gateway.simulation: Input should be a valid boolean",
        ),
        (
            (
                'label = "Bed 2 (window)"',
                'label = "Bed 2"\n[beds.patient]\nname = "X"\nmrn = "1"\nbirth_date = "1970-13-01"',
            ),
            "config.toml: beds[1].patient.birth_date:",
        ),
        (
            ('listen = "127.0.0.1:8081"', 'listen = "127.0.0.1:8081"\n[store]\nquota_mb = -1'),
            "config.toml: store.quota_mb: Input should be greater than 0",
        ),
    ],
)
def test_each_mistake_names_the_field_and_the_fix(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    old, new = edit
    assert old in GOOD
    found = problems(tmp_path, GOOD.replace(old, new, 1))
    assert any(line.startswith(expected) for line in found), found


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    text = GOOD.replace('  port = "/dev/ttyUSB0"\n', "").replace('id = "ox-2"', 'id = "ox-1"')
    found = problems(tmp_path, text)
    assert len(found) == 2


def test_unknown_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD.replace("data_format = 2", "dataformat = 2"))
    assert "allowed:" in found[0] and "data_format" in found[0]


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path, "[gateway\nid=")[0].startswith("config.toml: not valid TOML:")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "absent.toml")
    assert "no such file" in caught.value.problems[0]


def test_no_beds_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, '[gateway]\nid = "x"\n')
    assert found[0].startswith("config.toml: beds: required")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_check_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    text = GOOD.replace('  port = "/dev/ttyUSB0"\n', "").replace(
        "data_format = 2", "data_format = 3"
    )
    result = run_cli("check-config", "--config", str(write(tmp_path, text)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("config.toml: beds[")


def test_run_refuses_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(write(tmp_path, GOOD.replace("nonin", "nope", 1))))
    assert result.returncode == 2
    assert "unknown driver 'nope'" in result.stderr


def test_check_config_accepts_the_shipped_config() -> None:
    result = run_cli("check-config", "--config", str(ROOT / "config.toml"))
    assert result.returncode == 0, result.stderr
    assert "5 beds" in result.stdout


def test_replay_device_needs_a_readable_capture(tmp_path: Path) -> None:
    replayed = GOOD.replace('simulate = "normal"', 'replay = "captures/bed2.jsonl"')
    found = problems(tmp_path, replayed)
    assert found[0].startswith("config.toml: beds[1].devices[0].replay: cannot read")
    assert "bedside-gateway capture" in found[0]
    (tmp_path / "captures").mkdir()
    (tmp_path / "captures" / "bed2.jsonl").write_text('{"t": 1.0, "rx": "01 81"}\n')
    config = load(write(tmp_path, replayed))
    device = config.beds[1].devices[0]
    assert device.replay == tmp_path / "captures" / "bed2.jsonl" and device.played
    both = GOOD.replace('simulate = "normal"', 'simulate = "normal"\n  replay = "x.jsonl"')
    assert any("either simulated or replayed" in p for p in problems(tmp_path, both))
    (tmp_path / "captures" / "bed2.jsonl").write_text("not json\n")
    assert "not a capture line" in problems(tmp_path, replayed)[0]
