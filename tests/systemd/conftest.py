"""Fixtures for the service tests: the package as a wheel and a staged installation.

The installer really runs (as root, which these tests need: it sets owners) into a
temporary staging root with ``--root``: a real virtual environment with the package in it, a
real ``systemd-sysusers`` account database, ``systemd-tmpfiles`` directories and a key
encrypted by ``systemd-creds`` with the staged tree's own host key. Only the package's
dependencies are left out (``--no-deps``): installing numpy and scipy again proves nothing
about the installer and would take minutes; the package itself and its entry point are
installed for real, so the unit's ExecStart exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "systemd" / "install.sh"
UNIT = REPO / "systemd" / "bedside-gateway.service"


def run_install(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(INSTALL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"install.sh {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the installer tests run as root (they set file owners in a staging root)")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        timeout=600,
    )
    (found,) = out.glob("bedside_gateway-*.whl")
    return found


def install_into(root: Path, wheel: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_install(
        "--root", root, "--source", wheel, "--pip-args", "--no-deps --no-index", *extra
    )


@pytest.fixture(scope="session")
def staged(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Path]:
    """One installation shared by the read-only checks (tests copy it to change it)."""
    root = tmp_path_factory.mktemp("staged") / "root"
    install_into(root, wheel)
    yield root


def copy_tree(src: Path, dest: Path) -> Path:
    """A copy that keeps owners, modes, times and symlinks (cp -a)."""
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest


def with_os_units(root: Path) -> Path:
    """Give a staged tree the OS's own unit files (sysinit.target, modprobe@.service ...),
    which a real Debian box has and ``systemd-analyze verify --root`` resolves against."""
    target = root / "usr" / "lib" / "systemd" / "system"
    if not target.exists():
        shutil.copytree("/usr/lib/systemd/system", target, symlinks=True)
    return root
