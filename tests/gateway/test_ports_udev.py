"""check-config's port checks (real device nodes: a pty, /dev/null, missing paths) and the
udev rule that `scan --udev-rule` prints."""

from __future__ import annotations

import os
import pwd
import textwrap
from pathlib import Path

import pytest

from drivers.transport.serial import PortInfo
from gateway.cli import main
from gateway.ports import check_port
from gateway.udev import RuleError, rule_for

REPO = Path(__file__).resolve().parents[2]
FTDI = PortInfo("/dev/ttyUSB0", vid=0x0403, pid=0x6001, serial_number="A5XK3RJT")
ROOT = pwd.getpwuid(0)
NOBODY = pwd.getpwnam("nobody")


def test_rule_matches_vendor_product_and_serial() -> None:
    rule = rule_for("bed3-oximeter", FTDI)
    assert rule == (
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001", '
        'ATTRS{serial}=="A5XK3RJT", SYMLINK+="bedside/bed3-oximeter", GROUP="dialout", '
        'MODE="0660", TAG+="systemd"'
    )
    # The shipped rules file shows exactly what the generator writes.
    shipped = (REPO / "systemd/99-bedside-serial.rules").read_text()
    assert f"# {rule}\n" in shipped


@pytest.mark.parametrize(
    ("name", "port", "message"),
    [
        ("Bed 3", FTDI, "use lower-case letters"),
        ("../etc", FTDI, "use lower-case letters"),
        ("bed3", PortInfo("/dev/ttyAMA0"), "not a USB adapter"),
        ("bed3", PortInfo("/dev/ttyUSB1", vid=0x1A86, pid=0x7523), "reports no serial number"),
        (
            "bed3",
            PortInfo("/dev/ttyUSB2", vid=0x0403, pid=0x6001, serial_number='A5"X'),
            "cannot match safely",
        ),
    ],
)
def test_rule_refusals_say_what_to_do(name: str, port: PortInfo, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        rule_for(name, port)


def test_missing_and_non_device_ports_are_errors(tmp_path: Path) -> None:
    (missing,) = check_port("beds[0].devices[0].port", str(tmp_path / "ttyUSB9"), ROOT)
    assert missing.error and "does not exist" in str(missing)
    assert str(missing).startswith("beds[0].devices[0].port: ")
    plain = tmp_path / "not-a-tty"
    plain.write_text("")
    (regular,) = check_port("f", str(plain), ROOT)
    assert regular.error and "not a serial device" in regular.message
    assert check_port("f", "socket://10.0.0.5:4001", ROOT) == []


def test_access_is_checked_for_the_service_user() -> None:
    controller, terminal = os.openpty()
    try:
        path = os.ttyname(terminal)  # /dev/pts/N: root's, group tty, mode 0620
        assert check_port("f", path, ROOT) == []  # root passes; a pty is admitted by the unit
        (denied,) = check_port("f", path, NOBODY)
        assert denied.error and "not readable and writable by user nobody" in denied.message
        assert "usermod -aG" in denied.message
    finally:
        os.close(controller)
        os.close(terminal)


def test_a_port_the_unit_does_not_admit_is_a_warning() -> None:
    (warning,) = check_port("f", "/dev/null", ROOT)
    assert not warning.error
    assert "DevicePolicy" in warning.message and "DeviceAllow=char-null rw" in warning.message


def test_check_config_names_the_field_of_a_missing_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [gateway]
            id = "ports"
            [[beds]]
            id = "bed-1"
              [[beds.devices]]
              id = "ox-1"
              driver = "nonin"
              port = "{tmp_path / "ttyUSB7"}"
            """
        )
    )
    assert main(["check-config", "--config", str(config), "--user", "root"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("beds[0].devices[0].port: ")
    assert "ttyUSB7 does not exist" in err
    # The shipped demo ward plays every device: nothing to check, usable.
    assert main(["check-config", "--config", str(REPO / "config.toml")]) == 0
