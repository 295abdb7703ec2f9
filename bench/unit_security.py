"""Hardening figure of the systemd unit, and systemd's verdict on it as installed.

    .venv/bin/python bench/unit_security.py            # exposure (no root needed)
    sudo .venv/bin/python bench/unit_security.py --verify   # also verify, as installed

Exposure: ``systemd-analyze security --offline=true`` on systemd/bedside-gateway.service
(0 = fully sandboxed, 10 = unprotected; systemd calls <= 1.9 "OK"). The findings it still
counts against the unit are printed with their weight.

Verify: install.sh stages the installation into a temporary root (package from a freshly built
wheel, no dependencies), the OS's unit files are copied in, and ``systemd-analyze verify
--root`` checks the unit there, where ExecStart's program exists. Prints its exit status and
everything it said (nothing, when clean).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "bedside-gateway.service"


def exposure() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        if line.startswith("✗"):
            print("  " + re.sub(r"\s{2,}", "  ", line.strip()))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    print(f"exposure: {found.group(1) if found else '?'}")


def verify() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp) / "wheel"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
            check=True,
        )
        (wheel,) = wheels.glob("*.whl")
        root = Path(tmp) / "root"
        subprocess.run(
            [
                str(REPO / "systemd/install.sh"),
                "--root",
                str(root),
                "--source",
                str(wheel),
                "--pip-args",
                "--no-deps --no-index",
            ],
            check=True,
            capture_output=True,
        )
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        result = subprocess.run(
            ["systemd-analyze", "verify", f"--root={root}", "bedside-gateway.service"],
            capture_output=True,
            text=True,
            check=False,
        )
        print(f"verify: exit {result.returncode}, output {result.stdout + result.stderr!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="also verify as installed (root)")
    args = parser.parse_args()
    print(
        subprocess.run(
            ["systemd-analyze", "--version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
    )
    exposure()
    if args.verify:
        verify()


if __name__ == "__main__":
    main()
