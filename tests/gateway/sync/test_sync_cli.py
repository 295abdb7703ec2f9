"""``export --format hl7|fhir`` writes the payloads sync sends, and ``[[destinations]]``
mistakes stop start-up with the field and the fix named."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import hl7
import pytest
from fhir.resources.R4B.bundle import Bundle

from drivers.codes import PERCENT, SPO2
from drivers.readings import Numeric
from gateway.config import ConfigError, load
from gateway.twin.keys import KeySource, load_keyring
from gateway.twin.store import TwinStore
from gateway.twin.vocabulary import Patient
from tests.support.sync import T0

CONFIG = """
[gateway]
id = "gw-export"
data_dir = "state"

[[beds]]
id = "bed-1"
  [[beds.devices]]
  id = "ox-1"
  driver = "nonin"
  port = "/dev/ttyUSB0"
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120
    )


def test_export_writes_hl7_and_fhir_payloads(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    config_path.write_text(textwrap.dedent(CONFIG))
    assert cli("keys", "init", "--config", str(config_path)).returncode == 0
    config = load(config_path)
    ring = load_keyring(KeySource(config.store.key_file, config.store.credential))
    with TwinStore(config.store.path, ring) as store:
        store.admit("bed-1", Patient("Ann Lee", "MRN-7", "1970-01-02"), T0)
        store.write(
            [("bed-1", Numeric("ox-1", SPO2, 90.0 + i, PERCENT, T0 + i)) for i in range(3)],
            T0 + 3,
        )
        store.write_alarm(
            "bed-1",
            "ox-1",
            {
                "alarm": "bed-1/ox-1/spo2_low/1",
                "change": "raised",
                "condition": "spo2_low",
                "alarm_kind": "physiological",
                "priority": "medium",
                "state": "active",
                "code": SPO2.refid,
                "value": 88.0,
                "limit": 90.0,
                "unit": "%",
                "message": "low",
            },
            T0 + 4,
            T0 + 4,
        )

    hl7_out = tmp_path / "out" / "bed-1.hl7"
    done = cli(
        "export",
        "--config",
        str(config_path),
        "--bed",
        "bed-1",
        "--format",
        "hl7",
        "--out",
        str(hl7_out),
    )
    assert done.returncode == 0, done.stderr
    messages = [hl7.parse(m) for m in hl7_out.read_bytes().decode().strip().split("\n")]
    assert [str(m.segment("MSH")[9]) for m in messages] == ["ORU^R01^ORU_R01", "ORU^R40^ORU_R40"]
    spo2 = [o for o in messages[0].segments("OBX") if str(o[3]).startswith("150456^")]
    assert [str(o[5]) for o in spo2] == ["90", "91", "92"]
    assert "MRN-7" in str(messages[0].segment("PID"))
    assert hl7_out.stat().st_mode & 0o777 == 0o600

    fhir_out = tmp_path / "out" / "bed-1.json"
    done = cli(
        "export",
        "--config",
        str(config_path),
        "--bed",
        "bed-1",
        "--format",
        "fhir",
        "--out",
        str(fhir_out),
    )
    assert done.returncode == 0, done.stderr
    bundle = Bundle.model_validate(json.loads(fhir_out.read_text()))
    values = [e.resource.valueQuantity.value for e in bundle.entry[1:]]
    assert values == [90, 91, 92]


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('name = "hie"\nprotocol = "hl7-mllp"', "destinations[0].host: required"),
        ('name = "ehr"\nprotocol = "fhir"\nurl = "http://x/fhir"', "destinations[0].url"),
        (
            'name = "ehr"\nprotocol = "fhir"\nurl = "https://x/fhir"\ncarries = ["alarm"]',
            "fhir cannot carry alarm",
        ),
        ('name = "m"\nprotocol = "mqtt"\nhost = "b"\nca_file = "missing.pem"', "ca_file: "),
        ('name = "m"\nprotocol = "mqtt"\nhost = "b"\ntimeout = "10"', "destinations[0].timeout"),
        ('name = "h"\nprotocol = "smtp"\nhost = "b"', "destinations[0].protocol"),
    ],
)
def test_destination_mistakes_name_the_field(tmp_path: Path, table: str, expected: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(CONFIG) + "\n[[destinations]]\n" + table + "\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert expected in str(caught.value)


def test_two_destinations_with_one_name_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    one = '[[destinations]]\nname = "x"\nprotocol = "mqtt"\nhost = "b"\n'
    path.write_text(textwrap.dedent(CONFIG) + one + one)
    with pytest.raises(ConfigError, match="duplicate name 'x'"):
        load(path)


def test_a_good_destination_gets_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(CONFIG)
        + '[[destinations]]\nname = "cloud"\nprotocol = "mqtt"\nhost = "broker"\n'
        + '[[destinations]]\nname = "hie"\nprotocol = "hl7-mllp"\nhost = "hie"\n'
        + "bandwidth_kbps = 64\nexpiry_hours = { numeric = 12 }\n"
    )
    cloud, hie = load(path).destinations
    assert (cloud.port, cloud.tls, cloud.carries) == (
        8883,
        True,
        frozenset({"alarm", "event", "numeric"}),
    )
    assert (hie.port, hie.tls, hie.carries) == (2575, False, frozenset({"alarm", "numeric"}))
    assert hie.bandwidth == 8000.0 and hie.expiry == {"numeric": 43200.0}
