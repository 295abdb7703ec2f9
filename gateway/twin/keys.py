"""Key-encryption key handling for the store: loading, demo creation, rotation, status.

Rotation is crash-safe without ever having only one copy of the key that the file needs:

1. a new key is written to ``<key_file>.new`` (0600, fsynced);
2. every admission's data key is re-wrapped under it in one transaction (data untouched);
3. ``<key_file>.new`` atomically replaces ``<key_file>``.

If the process dies between 2 and 3, the next start finds both files and loads both, so the
store opens whichever key its rows name; running ``keys rotate`` again completes the swap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.twin.crypto import (
    Kek,
    KeyFileMissing,
    KeyProblem,
    KeyRing,
    create_key_file,
    generate_kek,
    load_kek,
    read_key_file,
    write_key_file,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class KeySource:
    key_file: Path
    credential: str

    @property
    def pending(self) -> Path:
        """Where a rotation in progress keeps its new key."""
        return self.key_file.with_name(self.key_file.name + ".new")


def load_keyring(source: KeySource, *, create_if_missing: bool = False) -> KeyRing:
    """The keys the store may need: the configured one, plus a half-rotated new one.

    ``create_if_missing`` is for simulated wards only: a missing key file is then created
    (and the creation logged); anywhere else a missing key stops start-up with the fix.
    """
    try:
        current = load_kek(key_file=source.key_file, credential_name=source.credential)
    except KeyFileMissing:
        if not create_if_missing:
            raise
        current = create_key_file(source.key_file)
        log.warning(
            "created a demo key-encryption key (simulated ward only)",
            key_file=str(source.key_file),
            kek=current.id,
        )
    if source.pending.exists():
        pending = read_key_file(source.pending)
        log.warning("an interrupted key rotation left a new key; loading both", kek=pending.id)
        return KeyRing(current, pending)
    return KeyRing(current)


def init_key(source: KeySource) -> Kek:
    """Create the key file; refuses to overwrite one."""
    return create_key_file(source.key_file)


def rotate(source: KeySource, store_path: Path) -> tuple[Kek, Kek, int]:
    """Re-wrap every data key under a new key; returns (old, new, keys re-wrapped)."""
    from gateway.twin.store import TwinStore

    if not source.key_file.exists() and os.environ.get("CREDENTIALS_DIRECTORY"):
        raise KeyProblem(
            "the key comes from a systemd credential; rotate it with systemd-creds and "
            "restart, or rotate a key file instead"
        )
    old = read_key_file(source.key_file)
    if source.pending.exists():
        new = read_key_file(source.pending)  # finish an interrupted rotation
    else:
        new = generate_kek()
        write_key_file(source.pending, new)
    with TwinStore(store_path, KeyRing(old, new)) as store:
        count = store.rewrap(KeyRing(new, old))
    os.replace(source.pending, source.key_file)
    _fsync_dir(source.key_file.parent)
    return old, new, count


def status(source: KeySource, store_path: Path) -> dict[str, Any]:
    """What key is configured and which keys the store's rows need; no secret material."""
    out: dict[str, Any] = {"key_file": str(source.key_file), "credential": source.credential}
    try:
        kek = load_kek(key_file=source.key_file, credential_name=source.credential)
        out["kek"] = kek.id
        out["ok"] = True
    except KeyProblem as exc:
        out["ok"] = False
        out["problem"] = str(exc)
        kek = None
    out["rotation_pending"] = source.pending.exists()
    if store_path.exists() and kek is not None:
        from gateway.twin.store import TwinStore

        ring = load_keyring(source)
        with TwinStore(store_path, ring) as store:
            needed = store.kek_ids()
        out["store_keys"] = needed
        missing = sorted(k for k in needed if k not in ring)
        if missing:
            out["ok"] = False
            out["problem"] = (
                f"the store needs key(s) {', '.join(missing)} that this gateway does not have; "
                "restore the matching key file or credential"
            )
    return out


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
