"""udev rules that give a USB-serial adapter a stable name, ``/dev/bedside/<name>``.

``bedside-gateway scan --udev-rule bed3-oximeter --port /dev/ttyUSB0`` prints one rule line
for systemd/99-bedside-serial.rules (installed as /etc/udev/rules.d/99-bedside-serial.rules).
The rule matches the adapter by USB vendor id, product id and serial number, so the name
follows the cable to any USB socket and two adapters of one model keep their own names. It
also gives the port to group dialout (the service user's group), mode 0660.
"""

from __future__ import annotations

import re

from drivers.transport.serial import PortInfo

#: A name under /dev/bedside/: lower-case words, digits, dots, dashes (e.g. bed3-oximeter).
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# udev compares ATTRS values as strings inside double quotes; these could break out of them
# or be read as patterns.
_UNSAFE = re.compile(r'["\\*?\[\]|\x00-\x1f\x7f]')


class RuleError(ValueError):
    """No rule can be made; the message says why and what to do instead."""


def rule_for(name: str, port: PortInfo) -> str:
    if not NAME.match(name):
        raise RuleError(
            f"--udev-rule {name!r}: use lower-case letters, digits, '.', '-' or '_' "
            "(e.g. bed3-oximeter)"
        )
    if port.vid is None or port.pid is None:
        raise RuleError(
            f"{port.device} is not a USB adapter (no vendor/product id): an on-board port "
            "already has a stable name; use it in config.toml as it is"
        )
    serial = port.serial_number
    if not serial:
        raise RuleError(
            f"{port.device} (usb {port.vid:04x}:{port.pid:04x}) reports no serial number, so a "
            "rule cannot tell it from another adapter of its model; use an adapter with a "
            "serial number (FTDI, CP210x), or a rule by USB socket (docs/TECHNICIAN.md)"
        )
    if _UNSAFE.search(serial):
        raise RuleError(
            f"{port.device}'s serial number contains characters a udev rule cannot match "
            "safely; use a rule by USB socket (docs/TECHNICIAN.md)"
        )
    return (
        f'SUBSYSTEM=="tty", ATTRS{{idVendor}}=="{port.vid:04x}", '
        f'ATTRS{{idProduct}}=="{port.pid:04x}", ATTRS{{serial}}=="{serial}", '
        f'SYMLINK+="bedside/{name}", GROUP="dialout", MODE="0660", TAG+="systemd"'
    )
