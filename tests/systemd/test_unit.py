"""The unit file: systemd's own analysis of its hardening and validity, and what it promises.

``systemd-analyze security --offline=true`` scores the unit as written (no running systemd
needed). ``systemd-analyze verify`` also checks that ExecStart's program exists, which it
cannot in the repository (the program lives in /opt/bedside-gateway/venv once installed), so
it runs on the unit as installed by install.sh into a staging root that has the package's
virtual environment and the OS's own units: the honest equivalent of verifying on the box.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.config import StoreSection
from tests.systemd.conftest import REPO, UNIT, copy_tree, with_os_units

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package: systemd)"
)
EXPOSURE_LIMIT = 1.5


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """Every key of the [Service] and [Unit] sections with all its values (keys repeat)."""
    values: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key, []).append(value)
    return values


def exposure(unit: Path) -> tuple[float, str]:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1)), result.stdout


@needs_analyze
def test_exposure_is_at_most_1_5() -> None:
    score, report = exposure(UNIT)
    assert score <= EXPOSURE_LIMIT, report


@needs_analyze
def test_exposure_rises_when_hardening_is_removed(tmp_path: Path) -> None:
    # The measurement can fail: without the sandbox lines the same unit scores far worse.
    weakened = tmp_path / "bedside-gateway.service"
    kept = [
        line
        for line in UNIT.read_text().splitlines()
        if not line.startswith(("Protect", "Private", "SystemCall", "Restrict", "Capability"))
    ]
    weakened.write_text("\n".join(kept) + "\n")
    score, _ = exposure(weakened)
    assert score > EXPOSURE_LIMIT + 2


@needs_analyze
def test_verify_is_clean_on_the_installed_unit(staged: Path, tmp_path: Path) -> None:
    assert ANALYZE is not None
    root = with_os_units(copy_tree(staged, tmp_path / "root"))
    unit = root / "etc/systemd/system/bedside-gateway.service"
    assert unit.read_bytes() == UNIT.read_bytes()
    clean = subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "bedside-gateway.service"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Clean means no warning at all: verify exits 0 even for a line it ignores.
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")

    # And verify does catch what it checks: the same unit without its program fails.
    program = root / "opt/bedside-gateway/venv/bin/bedside-gateway"
    program.rename(program.with_name("moved-away"))
    broken = subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "bedside-gateway.service"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode != 0
    assert "/opt/bedside-gateway/venv/bin/bedside-gateway" in broken.stderr


def test_the_unit_promises_what_the_daemon_and_installer_rely_on() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"]
    assert _seconds(s["WatchdogSec"][0]) >= 10  # the daemon pings at half of it
    assert s["User"] == s["Group"] == ["bedside-gateway"]
    sysusers = (REPO / "systemd/bedside-gateway.sysusers").read_text()
    assert re.search(r"^u bedside-gateway ", sysusers, re.M)
    assert re.search(r"^m bedside-gateway dialout$", sysusers, re.M)
    assert s["StateDirectory"] == ["bedside-gateway"]
    assert s["ConfigurationDirectory"] == ["bedside-gateway"]
    exec_start = s["ExecStart"][0].split()
    assert exec_start[:2] == ["/opt/bedside-gateway/venv/bin/bedside-gateway", "run"]
    assert exec_start[exec_start.index("--config") + 1] == "/etc/bedside-gateway/config.toml"
    assert exec_start[exec_start.index("--data-dir") + 1] == "/var/lib/bedside-gateway"
    # The credential the unit loads is the one the daemon looks for by default.
    assert s["LoadCredentialEncrypted"] == [StoreSection().credential]
    # Hardening the issue names.
    for key, expected in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "DevicePolicy": "closed",
        "MemoryDenyWriteExecute": "yes",
    }.items():
        assert s[key] == [expected], key
    assert "@system-service" in s["SystemCallFilter"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert {"char-ttyUSB rw", "char-ttyACM rw"} <= set(s["DeviceAllow"])
    # DeviceAllow=char-* needs the drivers' majors registered before the unit starts.
    for key in ("Wants", "After"):
        listed = " ".join(s[key]).split()
        assert {"modprobe@usbserial.service", "modprobe@cdc_acm.service"} <= set(listed)


def test_the_unit_parses_as_an_ini_file() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", text)
    assert match, text
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)
