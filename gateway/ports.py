"""Are the configured serial ports there, and can the service user open them?

Used by ``bedside-gateway check-config``: a port that is missing, is not a character device,
or that the service user may not read and write would only show up as a device stuck in
"disconnected" after start; here it is named with its config field and the fix.

Access is decided from the file's owner, group and mode against the user's own groups, as the
kernel would for that user (root passes). POSIX ACLs are not read: udev's ``uaccess`` ACLs
are given to people logged in at the desk, never to a system service, so they cannot help it.

The installed unit admits only USB serial adapters (``DeviceAllow=char-ttyUSB``,
``char-ttyACM``) and ptys; a port of another kind (an on-board UART such as ttyAMA0 or
ttyS0) gets a warning with the drop-in that admits it.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from dataclasses import dataclass

from gateway.config import Config

#: The service's account (systemd/bedside-gateway.sysusers).
SERVICE_USER = "bedside-gateway"

#: Device names the unit's DeviceAllow= admits.
_ALLOWED = re.compile(r"^(ttyUSB|ttyACM)\d+$|^pts/\d+$|^ptmx$")


@dataclass(frozen=True, slots=True)
class PortFinding:
    """One problem (``error``) or hint (not ``error``) about a configured port."""

    field: str
    message: str
    error: bool = True

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def service_account(name: str | None = None) -> pwd.struct_passwd:
    """The account to check for: ``name``, else the service user if this box has one, else
    whoever runs the command."""
    if name is not None:
        return pwd.getpwnam(name)
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return pwd.getpwuid(os.getuid())


def can_read_write(info: os.stat_result, user: pwd.struct_passwd) -> bool:
    if user.pw_uid == 0:
        return True
    if info.st_uid == user.pw_uid:
        bits = stat.S_IRUSR | stat.S_IWUSR
    elif info.st_gid in os.getgrouplist(user.pw_name, user.pw_gid):
        bits = stat.S_IRGRP | stat.S_IWGRP
    else:
        bits = stat.S_IROTH | stat.S_IWOTH
    return info.st_mode & bits == bits


def check_port(field: str, port: str, user: pwd.struct_passwd) -> list[PortFinding]:
    if not port.startswith("/"):
        return []  # a pyserial URL (socket://, rfc2217://): nothing on this box to check
    try:
        info = os.stat(port)
    except FileNotFoundError:
        return [
            PortFinding(
                field,
                f"{port} does not exist (adapter not plugged in, or a wrong name); list the "
                "ports with: bedside-gateway scan",
            )
        ]
    except PermissionError:
        return [PortFinding(field, f"{port} cannot be looked at (a directory on its path)")]
    if not stat.S_ISCHR(info.st_mode):
        return [PortFinding(field, f"{port} is not a serial device (not a character device)")]
    findings = []
    if not can_read_write(info, user):
        group = _group_name(info.st_gid)
        findings.append(
            PortFinding(
                field,
                f"{port} is not readable and writable by user {user.pw_name} (owner "
                f"{_user_name(info.st_uid)}, group {group}, mode {stat.S_IMODE(info.st_mode):04o});"
                f" add the user to group {group} (sudo usermod -aG {group} {user.pw_name}) or "
                'name the adapter with a udev rule that sets GROUP="dialout" '
                "(bedside-gateway scan --udev-rule)",
            )
        )
    name = os.path.realpath(port).removeprefix("/dev/")
    if not _ALLOWED.match(name):
        kind = re.sub(r"\d+$", "", name)
        findings.append(
            PortFinding(
                field,
                f"{port} is /dev/{name}, which the service's DevicePolicy does not admit "
                f"(only USB serial adapters); allow it with a drop-in: sudo systemctl edit "
                f"bedside-gateway, then [Service] DeviceAllow=char-{kind} rw",
                error=False,
            )
        )
    return findings


def check_config_ports(config: Config, user: pwd.struct_passwd) -> list[PortFinding]:
    findings = []
    for b, bed in enumerate(config.beds):
        for d, device in enumerate(bed.devices):
            port = getattr(device.settings, "port", None)
            if device.played or not isinstance(port, str):
                continue
            findings += check_port(f"beds[{b}].devices[{d}].port", port, user)
    return findings


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
