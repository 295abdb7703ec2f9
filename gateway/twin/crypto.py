"""Envelope encryption for the twin store (AES-256-GCM). Pure: no SQLite, no logging.

The scheme, from the outside in:

1. **Key-encryption key (KEK).** 32 random bytes that never touch the database. They come from
   a systemd credential (``$CREDENTIALS_DIRECTORY/bedside-gateway-kek``, so that
   ``LoadCredentialEncrypted=`` can keep it TPM-sealed at rest) or from a key file that must be
   a regular file of mode 0600 owned by the gateway user (``bedside-gateway keys init``
   creates one). A KEK is known by its *id*, a public 16-hex-digit fingerprint, which the store
   writes next to everything the KEK wraps.
2. **Data key, one per admission.** :func:`new_data_key` makes 32 random bytes when a bed is
   bound to an admission; :meth:`KeyRing.wrap` encrypts it under the current KEK and the store
   keeps only that wrapped form (with the KEK id). Rotating the KEK re-wraps these few small
   keys (:meth:`KeyRing.rewrap`) and never rewrites data.
3. **Fields.** :meth:`DataKey.seal` encrypts each value, waveform block, event, patient
   identifier and free text of the admission. The associated data (:func:`associated_data`)
   binds the ciphertext to its row - table, bed, admission, stream id and stream name,
   sequence, time - so a ciphertext copied or moved to another row, a stream renamed, a
   different key, a flipped bit, a truncated blob or a stored value that is not a blob at all
   fail authentication and raise :class:`DecryptionFailed` naming the row, never the data.

**Crypto-shredding.** Deleting an admission's wrapped data key (after discharge, sync and
retention) makes every ciphertext of that admission unrecoverable *by design*: there is no
back door, no escrow, and neither the KEK nor a backup of the database without that row can
bring the data back. :meth:`DataKey.destroy` only drops the in-memory reference; Python cannot
promise that the bytes are zeroed (immutable ``bytes``, copies inside the cipher library, the
allocator, swap), so the real guarantee is the deletion of the wrapped key from the database.

Nothing in this module logs, and no exception message carries key material or plaintext: key
file problems name the path and the fix, decryption failures name the caller's ``context``
(which must itself be free of patient data, e.g. ``"numerics row 42"``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DATA_KEY_BYTES",
    "DEFAULT_CREDENTIAL_NAME",
    "KEK_BYTES",
    "NONCE_BYTES",
    "TAG_BYTES",
    "DataKey",
    "DecryptionFailed",
    "Kek",
    "KeyFileMissing",
    "KeyProblem",
    "KeyRing",
    "associated_data",
    "create_key_file",
    "generate_kek",
    "kek_fingerprint",
    "load_kek",
    "new_data_key",
    "read_key_file",
    "write_key_file",
]

KEK_BYTES: Final = 32
DATA_KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
DEFAULT_CREDENTIAL_NAME: Final = "bedside-gateway-kek"
AAD_VERSION: Final = 1

# Domain separation: the fingerprint of a KEK is not a hash that could be confused with any
# other use of SHA-256 over the same 32 bytes.
_FINGERPRINT_PREFIX: Final = b"bedside-gateway/kek-id/v1\x00"
# A key file holds 44 base64 characters and a newline; anything much larger is not a key file.
_MAX_KEY_FILE_BYTES: Final = 4096

_AAD_NONE: Final = b"N"
_AAD_STR: Final = b"s"
_AAD_INT: Final = b"i"
_AAD_FLOAT: Final = b"f"
_AAD_MAX_PART: Final = 0xFFFFFFFF


class KeyProblem(Exception):
    """A key is missing, unsafe or unusable. The message is for a technician: what is wrong,
    where, and the command that fixes it. It never contains key material."""


class KeyFileMissing(KeyProblem):
    """The key file does not exist (the only key problem a simulated ward may fix by itself,
    by creating a demo key; a real ward never creates a key unasked)."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class DecryptionFailed(Exception):
    """A ciphertext did not authenticate under its key and associated data: wrong key, row
    moved, tampered or truncated. The message names only the caller's context."""

    def __init__(self, context: str, reason: str) -> None:
        super().__init__(f"cannot decrypt {context}: {reason}")
        self.context = context


# --------------------------------------------------------------------------------------------
# Key-encryption keys


def kek_fingerprint(key: bytes) -> str:
    """Public id of a KEK: first 8 bytes of SHA-256(prefix || key), as 16 lower-hex digits."""
    return hashlib.sha256(_FINGERPRINT_PREFIX + key).digest()[:8].hex()


@dataclass(frozen=True, repr=False)
class Kek:
    """A key-encryption key. ``id`` is public; ``key`` never appears in repr or str."""

    id: str
    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEK_BYTES:
            raise ValueError(f"a key-encryption key must be {KEK_BYTES} bytes")
        if self.id != kek_fingerprint(self.key):
            raise ValueError("key-encryption key id does not match its key")

    @classmethod
    def from_key(cls, key: bytes) -> Kek:
        return cls(id=kek_fingerprint(key), key=key)

    def __repr__(self) -> str:
        return f"Kek(id={self.id!r})"

    __str__ = __repr__


def generate_kek() -> Kek:
    """A fresh random KEK (from the operating system's CSPRNG)."""
    return Kek.from_key(os.urandom(KEK_BYTES))


def _key_file_text(kek: Kek) -> bytes:
    return base64.b64encode(kek.key) + b"\n"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing ancestors with mode 0700 (existing ones are left
    as they are), each creation made durable in its own parent. Used for key files and for
    decrypted exports alike."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for created in reversed(missing):
        try:
            os.mkdir(created, 0o700)
        except FileExistsError:
            if not created.is_dir():
                raise
            continue
        os.chmod(created, 0o700)  # the umask may have narrowed it; never widen beyond 0700
        _fsync_dir(created.parent)


def write_key_file(path: Path, kek: Kek) -> None:
    """Write ``kek`` to a new file at ``path`` (mode 0600, never following a symlink, never
    overwriting), fsync the file and its directory. Rotation uses it to write ``PATH.new``."""
    try:
        make_private_dirs(path.parent)
    except OSError as exc:
        raise KeyProblem(
            f"cannot create the directory {path.parent} for the key file: {exc.strerror}; "
            "create it (mode 0700, owned by the gateway user) and try again"
        ) from None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyProblem(
            f"refusing to overwrite the existing key file {path}: data keys wrapped by it "
            "would become unreadable; move it away first if you really mean to replace it, "
            "or use: bedside-gateway keys rotate"
        ) from None
    except OSError as exc:
        raise KeyProblem(
            f"cannot create the key file {path}: {exc.strerror}; check that its directory "
            "exists and is writable by the gateway user"
        ) from None
    try:
        try:
            os.fchmod(fd, 0o600)  # exact mode whatever the umask
            data = memoryview(_key_file_text(kek))
            while data:
                written = os.write(fd, data)
                data = data[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(path.parent)
    except OSError as exc:
        # Never leave a half-written key file behind: the next start would refuse it anyway.
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise KeyProblem(f"cannot write the key file {path}: {exc.strerror}") from None


def create_key_file(path: Path) -> Kek:
    """Generate a new KEK and store it at ``path`` (see :func:`write_key_file`)."""
    kek = generate_kek()
    write_key_file(path, kek)
    return kek


def _init_hint(path: Path) -> str:
    return f"create one with: bedside-gateway keys init --key-file {path}"


def read_key_file(path: Path, *, check_mode: bool = True) -> Kek:
    """Read a KEK from ``path``.

    Refuses (:class:`KeyProblem`) a missing file (:class:`KeyFileMissing`), a symlink, anything
    but a regular file, content other than base64 of exactly 32 bytes and, when ``check_mode``
    is true, a file any group or other permission bit set or not owned by the current user.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyFileMissing(f"no key-encryption key at {path}; {_init_hint(path)}", path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise KeyProblem(
                f"the key file {path} is a symbolic link, which is refused (whoever can change "
                "the link can swap the key); replace it with the regular file it points to, "
                "mode 0600"
            ) from None
        if isinstance(exc, PermissionError):
            raise KeyProblem(
                f"cannot read the key file {path}: permission denied; run the gateway as the "
                "user that owns it"
            ) from None
        raise KeyProblem(f"cannot open the key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyProblem(f"the key file {path} is not a regular file; {_init_hint(path)}")
        if check_mode:
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise KeyProblem(
                    f"the key file {path} has mode {mode:04o}, so group or others may access "
                    f"it; it must be 0600. Fix with: chmod 600 {path}"
                )
            uid = os.geteuid()
            if info.st_uid != uid:
                raise KeyProblem(
                    f"the key file {path} is owned by uid {info.st_uid}, not by the gateway "
                    f"user (uid {uid}); fix with: chown {uid} {path}, or run the gateway as "
                    "its owner"
                )
        raw = _read_limited(fd)
    except OSError as exc:
        raise KeyProblem(f"cannot read the key file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return _parse_key(raw, path)


def _read_limited(fd: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total <= _MAX_KEY_FILE_BYTES:
        chunk = os.read(fd, _MAX_KEY_FILE_BYTES + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _parse_key(raw: bytes, path: Path) -> Kek:
    # No part of the content may reach the message: no ``from exc`` either, since decoding
    # errors quote the offending bytes.
    expected = (
        f"expected one line of base64 encoding exactly {KEK_BYTES} bytes; restore it from "
        f"the backup, or if no data was ever encrypted with it, move it away and "
        f"{_init_hint(path)}"
    )
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise KeyProblem(f"the key file {path} is too large to be a key; {expected}")
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyProblem(f"the key file {path} is not base64; {expected}") from None
    if len(key) != KEK_BYTES:
        raise KeyProblem(f"the key file {path} holds {len(key)} bytes, not {KEK_BYTES}; {expected}")
    return Kek.from_key(key)


def load_kek(
    *,
    key_file: Path | None,
    credential_name: str = DEFAULT_CREDENTIAL_NAME,
    environ: Mapping[str, str] = os.environ,
) -> Kek:
    """The KEK the gateway runs with.

    A systemd credential wins: if ``$CREDENTIALS_DIRECTORY`` is set and holds
    ``credential_name``, that file is read (same format as a key file; systemd already limits
    access to it, so its mode is not checked, but a symlink leading outside that directory is
    refused). Otherwise ``key_file`` is read with the full checks. With neither, the
    :class:`KeyProblem` names both places looked at and how to create a key.
    """
    if not credential_name or "/" in credential_name or credential_name in (".", ".."):
        raise KeyProblem(
            f"invalid credential name {credential_name!r}: it must be a plain file name "
            f"such as {DEFAULT_CREDENTIAL_NAME}"
        )
    creds_dir = environ.get("CREDENTIALS_DIRECTORY", "")
    if creds_dir:
        credential = Path(creds_dir) / credential_name
        if os.path.lexists(credential):
            return _read_credential(Path(creds_dir), credential)
        looked = f"no credential {credential_name} in $CREDENTIALS_DIRECTORY ({creds_dir})"
    else:
        looked = f"$CREDENTIALS_DIRECTORY is not set (no systemd credential {credential_name})"
    credential_hint = (
        f"or give it to the service as a systemd credential: "
        f"LoadCredentialEncrypted={credential_name}:<file made with systemd-creds encrypt>"
    )
    if key_file is None:
        raise KeyProblem(
            f"no key-encryption key: {looked}, and no key file configured; create one with: "
            f"bedside-gateway keys init --key-file /etc/bedside-gateway/kek and configure "
            f"that key file, {credential_hint}"
        )
    try:
        return read_key_file(key_file)
    except KeyFileMissing:
        raise KeyFileMissing(
            f"no key-encryption key: {looked}, and no key file at {key_file}; "
            f"{_init_hint(key_file)}, {credential_hint}",
            key_file,
        ) from None


def _read_credential(directory: Path, credential: Path) -> Kek:
    try:
        resolved = credential.resolve(strict=True)
        base = directory.resolve(strict=True)
    except (OSError, RuntimeError):
        raise KeyProblem(
            f"the credential {credential} cannot be resolved (dangling or looping symlink); "
            "check the service's LoadCredential=/LoadCredentialEncrypted= setting"
        ) from None
    if resolved.parent != base and base not in resolved.parents:
        raise KeyProblem(
            f"the credential {credential} is a symlink leading outside {directory}, which is "
            "refused; pass the key with LoadCredential=/LoadCredentialEncrypted= instead"
        )
    return read_key_file(resolved, check_mode=False)


# --------------------------------------------------------------------------------------------
# Sealing


def _open_blob(aead: AESGCM, blob: bytes, aad: bytes, context: str) -> bytes:
    """Decrypt ``nonce || ciphertext || tag``; any failure whatsoever is DecryptionFailed."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        # A column that should hold a blob holds TEXT, a number or NULL: damaged or tampered.
        raise DecryptionFailed(
            context, f"the stored value is {type(blob).__name__}, not a sealed blob"
        )
    try:
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionFailed(
                context,
                f"ciphertext is truncated ({len(blob)} bytes, at least "
                f"{NONCE_BYTES + TAG_BYTES} needed)",
            )
        return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except DecryptionFailed:
        raise
    except (InvalidTag, ValueError, TypeError, OverflowError, MemoryError):
        raise DecryptionFailed(
            context,
            "it does not authenticate (wrong key, moved to another row, tampered or truncated)",
        ) from None


def _seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, aad)


class KeyRing:
    """The KEKs the gateway knows: ``current`` wraps new data keys; ``older`` ones (from the
    key file being rotated away) can only unwrap, so rotation can re-wrap under ``current``."""

    def __init__(self, current: Kek, *older: Kek) -> None:
        self.current: Final = current
        self._aeads: dict[str, AESGCM] = {}
        for kek in (*older, current):
            self._aeads[kek.id] = AESGCM(kek.key)

    @property
    def ids(self) -> tuple[str, ...]:
        """Ids of every known KEK, current first."""
        return (self.current.id, *(i for i in self._aeads if i != self.current.id))

    def __contains__(self, kek_id: object) -> bool:
        return kek_id in self._aeads

    def __repr__(self) -> str:
        older = [i for i in self.ids if i != self.current.id]
        return f"KeyRing(current={self.current.id!r}, older={older!r})"

    __str__ = __repr__

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        """Encrypt a data key under the current KEK: ``(kek_id, nonce || ciphertext || tag)``.
        ``aad`` binds it to its admission row."""
        if len(data_key) != DATA_KEY_BYTES:
            raise ValueError(f"a data key must be {DATA_KEY_BYTES} bytes")
        return self.current.id, _seal(self._aeads[self.current.id], data_key, aad)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes, *, context: str) -> bytes:
        """Decrypt a data key wrapped by the KEK ``kek_id``.

        :class:`KeyProblem` if that KEK is not in the ring, :class:`DecryptionFailed` if the
        wrapped key does not authenticate under it and ``aad``.
        """
        aead = self._aeads.get(kek_id) if isinstance(kek_id, str) else None
        if aead is None:
            shown = kek_id[:40] if isinstance(kek_id, str) else type(kek_id).__name__
            raise KeyProblem(
                f"the data key of {context} is wrapped by KEK {shown!r}, which this gateway "
                f"does not have (it has {', '.join(self.ids)}); restore the key file or the "
                "credential"
            )
        key = _open_blob(aead, wrapped, aad, context)
        if len(key) != DATA_KEY_BYTES:
            raise DecryptionFailed(context, "the wrapped value is not a data key")
        return key

    def rewrap(self, kek_id: str, wrapped: bytes, aad: bytes, *, context: str) -> tuple[str, bytes]:
        """Rotation: unwrap with whichever KEK wrapped it, wrap again under ``current``."""
        return self.wrap(self.unwrap(kek_id, wrapped, aad, context=context), aad)


def new_data_key() -> bytes:
    """32 random bytes: the data key of a new admission."""
    return os.urandom(DATA_KEY_BYTES)


class DataKey:
    """One admission's data key, used for every encrypted field of that admission.

    Nonces are 96 random bits from ``os.urandom``. With random nonces the only risk is two
    seals under the same key drawing the same nonce, which for q seals has probability at most
    q(q-1)/2 / 2^96 < q^2 / 2^97. For q = 2^32 messages per key (the NIST SP 800-38D ceiling
    for random nonces) that is 2^64 / 2^97 = 2^-33, about 1.2e-10. Our volume is far lower:
    one key per admission, sealing e.g. 16 numeric streams at 1 Hz plus two waveform signals
    in 10 s blocks is about 1.4 million seals a day, so a 90-day admission is about 1.26e8
    (~2^27) seals and a collision probability below 1e-13. A counter nonce would need state
    that survives crashes and restores; random nonces need none.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != DATA_KEY_BYTES:
            raise ValueError(f"a data key must be {DATA_KEY_BYTES} bytes")
        self._aead: AESGCM | None = AESGCM(key)

    @property
    def destroyed(self) -> bool:
        return self._aead is None

    def __repr__(self) -> str:
        return "DataKey(destroyed)" if self._aead is None else "DataKey(<secret>)"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a DataKey cannot be pickled or copied; store it wrapped instead")

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt: ``12-byte random nonce || ciphertext || 16-byte tag``."""
        if self._aead is None:
            raise RuntimeError("this data key has been destroyed")
        return _seal(self._aead, plaintext, aad)

    def open(self, blob: bytes, aad: bytes, *, context: str) -> bytes:
        """Decrypt a sealed blob; :class:`DecryptionFailed` naming ``context`` on any failure
        (wrong key, other AAD, tampered, truncated, destroyed key), never another exception."""
        if self._aead is None:
            raise DecryptionFailed(context, "its data key has been destroyed")
        return _open_blob(self._aead, blob, aad, context)

    def destroy(self) -> None:
        """Best effort: drop this object's reference to the cipher and key. Python cannot
        guarantee the key bytes are zeroed in memory; the real guarantee of crypto-shredding
        is deleting the wrapped key from the database."""
        self._aead = None


# --------------------------------------------------------------------------------------------
# Associated data


def associated_data(*parts: str | int | float | None) -> bytes:
    """Canonical encoding of the row a ciphertext belongs to, e.g.
    ``associated_data("numerics", bed, admission_id, stream_id, stream_name, sequence, time)``.

    Version byte, then per part a type tag and a 4-byte big-endian length before its bytes:
    ``None`` -> ``N``; ``str`` -> ``s`` + UTF-8; ``int`` -> ``i`` + decimal digits; ``float``
    -> ``f`` + IEEE 754 big-endian double. Being prefix-free and typed, it is injective:
    ``("a|b", "c") != ("a", "b|c")`` and ``1 != 1.0 != "1"``. ``bool`` is refused (it would
    otherwise pass for an int). It is concatenative: ``associated_data(*a, *b) ==
    associated_data(*a) + associated_data(*b)[1:]``, so a caller may cache a prefix.
    """
    # Called once per row read or written (tens of thousands per second while a sync
    # backlog drains), hence exact-type dispatch first and one join at the end; subclasses
    # (and the refused bool) take the general path.
    chunks = [_AAD_PREFIX]
    for part in parts:
        kind = type(part)
        if kind is str:
            data = part.encode("utf-8", "surrogatepass")  # type: ignore[union-attr]
            tag = _AAD_STR
        elif kind is int:
            data = str(part).encode("ascii")
            tag = _AAD_INT
        elif kind is float:
            data = _pack_double(part)
            tag = _AAD_FLOAT
        elif part is None:
            tag, data = _AAD_NONE, b""
        else:
            tag, data = _aad_part_slow(part)
        if len(data) > _AAD_MAX_PART:
            raise ValueError("associated data part too long")
        chunks += (tag, _pack_length(len(data)), data)
    return b"".join(chunks)


_AAD_PREFIX: Final = bytes((AAD_VERSION,))
_pack_double = struct.Struct(">d").pack
_pack_length = struct.Struct(">I").pack


def _aad_part_slow(part: object) -> tuple[bytes, bytes]:
    """Tag and bytes of a part that is not exactly a str, int, float or None."""
    if isinstance(part, bool):
        raise TypeError("associated_data does not take bool; pass an int or a str")
    if isinstance(part, str):
        return _AAD_STR, part.encode("utf-8", "surrogatepass")
    if isinstance(part, int):
        return _AAD_INT, str(int(part)).encode("ascii")
    if isinstance(part, float):
        return _AAD_FLOAT, _pack_double(float(part))
    raise TypeError(f"associated_data takes str, int, float or None, not {type(part).__name__}")
