"""systemd/install.sh into staging roots: what it installs, with which modes and owners, that
a second run changes nothing, and what --uninstall and --purge leave behind."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from gateway.config import load
from gateway.twin.crypto import load_kek, read_key_file
from tests.systemd.conftest import REPO, copy_tree, install_into, run_install

CREDENTIAL = "bedside-gateway-kek"
INSTALLED = {
    "/etc/systemd/system/bedside-gateway.service": REPO / "systemd/bedside-gateway.service",
    "/etc/sysusers.d/bedside-gateway.conf": REPO / "systemd/bedside-gateway.sysusers",
    "/etc/tmpfiles.d/bedside-gateway.conf": REPO / "systemd/bedside-gateway.tmpfiles",
    "/etc/udev/rules.d/99-bedside-serial.rules": REPO / "systemd/99-bedside-serial.rules",
    "/opt/bedside-gateway/docs/TECHNICIAN.md": REPO / "docs/TECHNICIAN.md",
}
PROGRAM = ("file", "link", "venv", "dir")  # kinds --uninstall removes


def manifest(root: Path) -> list[tuple[str, int, str, str, str]]:
    rows = []
    for line in (root / "opt/bedside-gateway/install-manifest").read_text().splitlines():
        if line and not line.startswith("#"):
            kind, mode, owner, group, path = line.split()
            rows.append((kind, int(mode, 8), owner, group, path))
    return rows


def names(root: Path, database: str) -> dict[int, str]:
    """id -> name from the staged tree's own passwd or group file."""
    out = {}
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        out[int(fields[2])] = fields[0]
    out.setdefault(0, "root")
    return out


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a second run could change: type, mode, owner, size, times, content."""
    out: dict[str, tuple[object, ...]] = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        digest = ""
        if stat.S_ISREG(info.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            digest = os.readlink(path)
        out[str(path.relative_to(root))] = (
            info.st_mode,
            info.st_uid,
            info.st_gid,
            info.st_size,
            info.st_mtime_ns,
            digest,
        )
    return out


def test_installs_every_file_with_the_recorded_mode_and_owner(staged: Path) -> None:
    users, groups = names(staged, "passwd"), names(staged, "group")
    rows = manifest(staged)
    recorded = {path for *_, path in rows}
    assert set(INSTALLED) <= recorded
    for path in (
        "/etc/bedside-gateway/config.toml",
        "/etc/credstore.encrypted/bedside-gateway-kek",
        "/var/lib/bedside-gateway",
        "/opt/bedside-gateway/venv",
        "/usr/local/bin/bedside-gateway",
    ):
        assert path in recorded, path
    for kind, mode, owner, group, path in rows:
        info = (staged / path.lstrip("/")).lstat()
        if kind == "link":
            assert stat.S_ISLNK(info.st_mode), path
            continue
        assert stat.S_IMODE(info.st_mode) == mode, f"{path}: {stat.S_IMODE(info.st_mode):o}"
        assert users[info.st_uid] == owner, path
        assert groups[info.st_gid] == group, path
    for dest, source in INSTALLED.items():
        assert (staged / dest.lstrip("/")).read_bytes() == source.read_bytes(), dest
    # The secrets and the data are nobody else's.
    assert stat.S_IMODE((staged / "var/lib/bedside-gateway").stat().st_mode) == 0o700
    assert stat.S_IMODE((staged / "etc/credstore.encrypted").stat().st_mode) == 0o700
    assert stat.S_IMODE((staged / "etc/bedside-gateway/config.toml").stat().st_mode) == 0o640


def test_the_service_user_is_in_the_serial_and_bluetooth_groups(staged: Path) -> None:
    passwd = {line.split(":")[0]: line.split(":") for line in _lines(staged / "etc/passwd")}
    user = passwd["bedside-gateway"]
    assert user[5] == "/var/lib/bedside-gateway" and user[6] == "/usr/sbin/nologin"
    groups = {
        line.split(":")[0]: line.split(":")[3].split(",") for line in _lines(staged / "etc/group")
    }
    assert "bedside-gateway" in groups["dialout"]
    assert "bedside-gateway" in groups["bluetooth"]
    # The data directory belongs to that user.
    assert (staged / "var/lib/bedside-gateway").stat().st_uid == int(user[2])


def test_the_package_and_its_command_are_installed(staged: Path) -> None:
    program = staged / "opt/bedside-gateway/venv/bin/bedside-gateway"
    assert program.is_file() and os.access(program, os.X_OK)
    link = staged / "usr/local/bin/bedside-gateway"
    assert os.readlink(link) == "/opt/bedside-gateway/venv/bin/bedside-gateway"
    version = subprocess.run(
        [
            str(staged / "opt/bedside-gateway/venv/bin/python"),
            "-c",
            "import importlib.metadata as m; print(m.version('bedside-gateway'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == "0.1.0"


def test_the_config_is_the_shipped_ward_with_state_in_var_lib(staged: Path) -> None:
    path = staged / "etc/bedside-gateway/config.toml"
    config = load(path)
    assert config.data_dir == Path("/var/lib/bedside-gateway")
    assert config.store.key_file == Path("/var/lib/bedside-gateway/keys/kek")
    assert config.store.credential == CREDENTIAL
    assert len(config.beds) == len(load(REPO / "config.toml").beds)


def test_the_key_is_encrypted_and_is_what_the_daemon_accepts(staged: Path, tmp_path: Path) -> None:
    sealed = staged / "etc/credstore.encrypted" / CREDENTIAL
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    # No plain key anywhere: no key file, and the credential is not base64 of 32 bytes.
    assert not (staged / "var/lib/bedside-gateway/keys/kek").exists()
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    env = {
        **os.environ,
        "SYSTEMD_CREDENTIAL_SECRET": str(staged / "var/lib/systemd/credentials.secret"),
    }
    with open(creds / CREDENTIAL, "wb") as plain:
        subprocess.run(
            ["systemd-creds", "decrypt", f"--name={CREDENTIAL}", str(sealed), "-"],
            stdout=plain,
            env=env,
            check=True,
        )
    # What systemd hands the service in $CREDENTIALS_DIRECTORY is a key the daemon loads.
    kek = load_kek(
        key_file=None, credential_name=CREDENTIAL, environ={"CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert len(kek.id) == 16
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do: it is not a key file
        read_key_file(sealed, check_mode=False)


def test_key_file_fallback(staged: Path, tmp_path: Path, wheel: Path) -> None:
    # A box without systemd-creds: the same install, with no key yet, in key file mode.
    root = copy_tree(staged, tmp_path / "root")
    (root / "etc/credstore.encrypted" / CREDENTIAL).unlink()
    result = install_into(root, wheel, "--key-mode", "file")
    assert "no systemd-creds" in result.stdout
    key = root / "var/lib/bedside-gateway/keys/kek"
    info = key.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert names(root, "passwd")[info.st_uid] == "bedside-gateway"
    assert not (root / "etc/credstore.encrypted" / CREDENTIAL).exists()
    assert len(read_key_file(key, check_mode=False).id) == 16
    row = ("key", 0o600, "bedside-gateway", "bedside-gateway", "/var/lib/bedside-gateway/keys/kek")
    assert row in manifest(root)


def test_second_run_changes_nothing_and_never_overwrites_config(
    staged: Path, tmp_path: Path, wheel: Path
) -> None:
    root = copy_tree(staged, tmp_path / "root")
    before = snapshot(root)
    second = install_into(root, wheel)
    assert snapshot(root) == before
    assert "kept existing /etc/bedside-gateway/config.toml" in second.stdout
    assert "kept existing key" in second.stdout

    # A technician's edits (config, udev wiring) survive every later run.
    config = root / "etc/bedside-gateway/config.toml"
    edited = config.read_text().replace('id = "ward-demo"', 'id = "ward-7b"')
    assert edited != config.read_text()
    config.write_text(edited)
    rules = root / "etc/udev/rules.d/99-bedside-serial.rules"
    rules.write_text(rules.read_text() + 'SUBSYSTEM=="tty", SYMLINK+="bedside/bed1-ox"\n')
    kept_rules = rules.read_text()
    install_into(root, wheel)
    assert config.read_text() == edited
    assert rules.read_text() == kept_rules


def test_uninstall_keeps_data_key_and_config_and_purge_removes_them(
    staged: Path, tmp_path: Path, wheel: Path
) -> None:
    root = copy_tree(staged, tmp_path / "root")
    rows = manifest(root)
    data = root / "var/lib/bedside-gateway/twin.sqlite"
    data.write_bytes(b"pretend store")  # the daemon would have made it

    run_install("--root", root, "--uninstall")
    for kind, _, _, _, path in rows:
        exists = (root / path.lstrip("/")).exists() or (root / path.lstrip("/")).is_symlink()
        assert exists == (kind not in PROGRAM), f"{kind} {path}"
    assert data.read_bytes() == b"pretend store"
    assert "bedside-gateway" in (root / "etc/passwd").read_text()  # it still owns the data

    # Uninstalling twice is fine; installing again finds the key and config it left.
    run_install("--root", root, "--uninstall")
    again = install_into(root, wheel)
    assert "kept existing key" in again.stdout

    run_install("--root", root, "--uninstall", "--purge")
    for *_, path in rows:
        assert not (root / path.lstrip("/")).exists(), path
    assert "bedside-gateway" not in (root / "etc/passwd").read_text()
    assert "bedside-gateway" not in (root / "etc/group").read_text()
    leftovers = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "bedside" in str(p.relative_to(root))
    }
    assert leftovers == set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--purge"], "--purge only goes with --uninstall"),
        (["--key-mode", "tpm"], "--key-mode must be auto, creds or file"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ],
)
def test_wrong_command_lines_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_install("--root", tmp_path / "root", *args, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "root" / "etc").exists()  # nothing was done


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]
