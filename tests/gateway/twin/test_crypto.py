"""Envelope encryption: KEK files and credentials, wrapping, sealing, associated data.

Real files in ``tmp_path``, the real AES-GCM of ``cryptography``; nothing is mocked.
"""

from __future__ import annotations

import base64
import copy
import os
import pickle
import re
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.twin.crypto import (
    DATA_KEY_BYTES,
    KEK_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    DataKey,
    DecryptionFailed,
    Kek,
    KeyFileMissing,
    KeyProblem,
    KeyRing,
    associated_data,
    create_key_file,
    generate_kek,
    kek_fingerprint,
    load_kek,
    new_data_key,
    read_key_file,
    write_key_file,
)

AAD = associated_data("numeric", "bed-1", 7, "SpO2", 42, 1_700_000_000.25)
CONTEXT = "numerics row 42"


def secret_forms(key: bytes) -> list[str]:
    """Every way a key could leak into text."""
    return [
        base64.b64encode(key).decode(),
        base64.b64encode(key).decode().rstrip("="),
        key.hex(),
        key.hex().upper(),
        repr(key),
        str(list(key)),
    ]


def assert_no_secret(text: str, *keys: bytes) -> None:
    for key in keys:
        for form in secret_forms(key):
            assert form not in text


def assert_clean_exception(exc: BaseException, *keys: bytes) -> None:
    """Message free of key material; no chained cause that could print data."""
    assert_no_secret(str(exc), *keys)
    assert_no_secret(repr(exc), *keys)
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """Files must come out 0600 even under the most permissive umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def write_raw(path: Path, content: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


# ---------------------------------------------------------------------------------------------
# Kek


def test_kek_id_is_a_16_hex_fingerprint_of_the_key() -> None:
    kek = generate_kek()
    assert re.fullmatch(r"[0-9a-f]{16}", kek.id)
    assert kek.id == kek_fingerprint(kek.key)
    assert Kek.from_key(kek.key) == kek
    assert generate_kek().id != kek.id
    # Domain-separated: not simply a prefix of the plain SHA-256 of the key.
    import hashlib

    assert kek.id != hashlib.sha256(kek.key).hexdigest()[:16]


def test_kek_rejects_wrong_length_or_wrong_id() -> None:
    key = os.urandom(KEK_BYTES)
    with pytest.raises(ValueError) as short:
        Kek.from_key(key[:31])
    assert_clean_exception(short.value, key)
    with pytest.raises(ValueError) as wrong_id:
        Kek(id="0" * 16, key=key)
    assert_clean_exception(wrong_id.value, key)


def test_repr_and_str_never_show_key_bytes() -> None:
    old, kek = generate_kek(), generate_kek()
    ring = KeyRing(kek, old)
    raw = new_data_key()
    data_key = DataKey(raw)
    for obj in (kek, ring, data_key):
        assert_no_secret(repr(obj), kek.key, old.key, raw)
        assert_no_secret(str(obj), kek.key, old.key, raw)
        assert_no_secret(f"{obj!r} {obj}", kek.key, old.key, raw)
    assert repr(kek) == f"Kek(id={kek.id!r})"
    assert kek.id in repr(ring) and old.id in repr(ring)
    assert repr(data_key) == "DataKey(<secret>)"


# ---------------------------------------------------------------------------------------------
# Key files


def test_create_key_file_makes_0600_file_and_0700_parents(tmp_path: Path, umask_zero: None) -> None:
    path = tmp_path / "etc" / "bedside-gateway" / "kek"
    kek = create_key_file(path)
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.geteuid()
    for parent in (tmp_path / "etc", tmp_path / "etc" / "bedside-gateway"):
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700
    content = path.read_bytes()
    assert content.endswith(b"\n") and content.count(b"\n") == 1
    assert base64.b64decode(content, validate=False) == kek.key
    assert len(kek.key) == KEK_BYTES
    assert read_key_file(path) == kek


def test_existing_parent_directory_mode_is_left_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    create_key_file(tmp_path / "kek")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    first = create_key_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyProblem) as info:
        create_key_file(path)
    assert str(path) in str(info.value)
    assert "overwrite" in str(info.value)
    assert_clean_exception(info.value, first.key)
    with pytest.raises(KeyProblem):
        write_key_file(path, generate_kek())
    assert path.read_bytes() == before
    assert read_key_file(path) == first


def test_create_refuses_a_symlink_at_the_path(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "kek"
    link.symlink_to(target)  # dangling: must not be followed to create the target
    with pytest.raises(KeyProblem):
        create_key_file(link)
    assert not target.exists()


def test_write_key_file_for_rotation_writes_path_new(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    create_key_file(path)
    new = generate_kek()
    new_path = path.with_name("kek.new")
    write_key_file(new_path, new)
    assert stat.S_IMODE(new_path.stat().st_mode) == 0o600
    assert read_key_file(new_path) == new


def test_missing_key_file_says_how_to_create_one(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    with pytest.raises(KeyFileMissing) as info:
        read_key_file(path)
    message = str(info.value)
    assert "keys init" in message
    assert str(path) in message
    assert info.value.path == path
    assert isinstance(info.value, KeyProblem)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o666, 0o610, 0o601])
def test_key_file_accessible_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek"
    kek = create_key_file(path)
    path.chmod(mode)
    with pytest.raises(KeyProblem) as info:
        read_key_file(path)
    message = str(info.value)
    assert f"{mode:04o}" in message
    assert f"chmod 600 {path}" in message
    assert_clean_exception(info.value, kek.key)
    # Without the mode check (systemd credentials) the same file is accepted.
    assert read_key_file(path, check_mode=False) == kek


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek"
    kek = create_key_file(path)
    path.chmod(mode)
    assert read_key_file(path) == kek


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_key_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    kek = create_key_file(path)
    os.chown(path, 54321, -1)
    with pytest.raises(KeyProblem) as info:
        read_key_file(path)
    assert "54321" in str(info.value) and "chown" in str(info.value)
    assert_clean_exception(info.value, kek.key)
    assert read_key_file(path, check_mode=False) == kek


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real-kek"
    kek = create_key_file(real)
    link = tmp_path / "kek"
    link.symlink_to(real)
    for check_mode in (True, False):
        with pytest.raises(KeyProblem) as info:
            read_key_file(link, check_mode=check_mode)
        assert "symbolic link" in str(info.value)
        assert str(link) in str(info.value)
        assert_clean_exception(info.value, kek.key)


def test_dangling_symlink_is_refused_as_symlink(tmp_path: Path) -> None:
    link = tmp_path / "kek"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(KeyProblem, match="symbolic link"):
        read_key_file(link)


def test_directory_or_fifo_is_not_a_key_file(tmp_path: Path) -> None:
    directory = tmp_path / "kekdir"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyProblem, match="not a regular file"):
        read_key_file(directory)
    fifo = tmp_path / "kekfifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyProblem, match="not a regular file"):
        read_key_file(fifo)  # must not block waiting for a writer


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b"not a key at all\n",
        b"\xff\xfe\x00garbage\x80\n",
        base64.b64encode(b"k" * 31) + b"\n",
        base64.b64encode(b"k" * 33) + b"\n",
        base64.b64encode(b"k" * 64) + b"\n",
        base64.b64encode(b"k" * 32)[:-2] + b"\n",  # truncated base64
        base64.b64encode(b"k" * 32) + b"\n" + base64.b64encode(b"k" * 32) + b"\n",
        b"A" * 10_000,
    ],
    ids=[
        "empty",
        "newline",
        "text",
        "binary",
        "31-bytes",
        "33-bytes",
        "64-bytes",
        "truncated",
        "two-keys",
        "huge",
    ],
)
def test_garbage_or_wrong_length_content_is_refused(tmp_path: Path, content: bytes) -> None:
    path = write_raw(tmp_path / "kek", content)
    with pytest.raises(KeyProblem) as info:
        read_key_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "32 bytes" in message
    # Nothing of the content is echoed back.
    stripped = content.strip()
    if len(stripped) >= 8:
        assert stripped.decode("latin-1") not in message
        assert stripped[:12].decode("latin-1") not in message
    assert_clean_exception(info.value, b"k" * 31, b"k" * 32, b"k" * 33)


def test_key_file_tolerates_surrounding_whitespace(tmp_path: Path) -> None:
    key = os.urandom(KEK_BYTES)
    path = write_raw(tmp_path / "kek", b"  " + base64.b64encode(key) + b"\r\n\n")
    assert read_key_file(path).key == key


# ---------------------------------------------------------------------------------------------
# load_kek: systemd credentials, then the key file


def make_credentials(tmp_path: Path, name: str = "bedside-gateway-kek") -> tuple[Path, Kek]:
    creds = tmp_path / "credentials"
    creds.mkdir()
    kek = generate_kek()
    # systemd gives the file 0400 or 0440 depending on version; either way no mode check.
    write_raw(creds / name, base64.b64encode(kek.key) + b"\n", mode=0o440)
    return creds, kek


def test_credentials_directory_is_preferred_over_key_file(tmp_path: Path) -> None:
    creds, cred_kek = make_credentials(tmp_path)
    key_file = tmp_path / "kek"
    file_kek = create_key_file(key_file)
    environ = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert load_kek(key_file=key_file, environ=environ) == cred_kek
    assert load_kek(key_file=None, environ=environ) == cred_kek
    # Without the environment variable, the key file is used.
    assert load_kek(key_file=key_file, environ={}) == file_kek


def test_default_environ_is_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds, cred_kek = make_credentials(tmp_path, name="custom")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_kek(key_file=None, credential_name="custom") == cred_kek
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(KeyProblem, match="CREDENTIALS_DIRECTORY is not set"):
        load_kek(key_file=None, credential_name="custom")


def test_falls_back_to_key_file_when_credential_absent(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    key_file = tmp_path / "kek"
    file_kek = create_key_file(key_file)
    assert load_kek(key_file=key_file, environ={"CREDENTIALS_DIRECTORY": str(creds)}) == file_kek


def test_key_file_from_load_kek_still_gets_mode_check(tmp_path: Path) -> None:
    key_file = tmp_path / "kek"
    create_key_file(key_file)
    key_file.chmod(0o644)
    with pytest.raises(KeyProblem, match="chmod 600"):
        load_kek(key_file=key_file, environ={})


def test_neither_credential_nor_key_file_names_both_places(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    key_file = tmp_path / "missing" / "kek"
    environ = {"CREDENTIALS_DIRECTORY": str(creds)}
    with pytest.raises(KeyFileMissing) as info:
        load_kek(key_file=key_file, environ=environ)
    message = str(info.value)
    assert str(creds) in message and "bedside-gateway-kek" in message
    assert str(key_file) in message
    assert "keys init" in message and "LoadCredentialEncrypted" in message
    assert info.value.path == key_file

    with pytest.raises(KeyProblem) as no_file:
        load_kek(key_file=None, environ={})
    message = str(no_file.value)
    assert "CREDENTIALS_DIRECTORY is not set" in message
    assert "no key file configured" in message and "keys init" in message


def test_credential_symlink_outside_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside-kek"
    kek = create_key_file(outside)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "bedside-gateway-kek").symlink_to(outside)
    with pytest.raises(KeyProblem) as info:
        load_kek(key_file=None, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert "outside" in str(info.value)
    assert_clean_exception(info.value, kek.key)


def test_credential_symlink_within_directory_is_accepted(tmp_path: Path) -> None:
    creds, kek = make_credentials(tmp_path, name="real")
    (creds / "bedside-gateway-kek").symlink_to("real")
    assert load_kek(key_file=None, environ={"CREDENTIALS_DIRECTORY": str(creds)}) == kek


def test_dangling_credential_symlink_is_refused(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "bedside-gateway-kek").symlink_to(creds / "gone")
    key_file = tmp_path / "kek"
    create_key_file(key_file)
    # A broken credential is an error, not a silent fall-back to another key.
    with pytest.raises(KeyProblem, match="cannot be resolved"):
        load_kek(key_file=key_file, environ={"CREDENTIALS_DIRECTORY": str(creds)})


def test_garbage_credential_is_refused(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    write_raw(creds / "bedside-gateway-kek", b"\x00" * 48, mode=0o400)
    with pytest.raises(KeyProblem, match="32 bytes"):
        load_kek(key_file=None, environ={"CREDENTIALS_DIRECTORY": str(creds)})


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../kek"])
def test_credential_name_must_be_a_plain_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyProblem, match="credential name"):
        load_kek(key_file=None, credential_name=name, environ={"CREDENTIALS_DIRECTORY": "/x"})


# ---------------------------------------------------------------------------------------------
# Data keys and sealing


def test_seal_open_round_trip() -> None:
    key = DataKey(new_data_key())
    for plaintext in (b"", b"x", b'{"value": 97.0, "unit": "%"}', os.urandom(100_000)):
        blob = key.seal(plaintext, AAD)
        assert len(blob) == NONCE_BYTES + len(plaintext) + TAG_BYTES
        assert key.open(blob, AAD, context=CONTEXT) == plaintext
        if len(plaintext) >= 8:  # a 1-byte plaintext turns up in 29 random bytes by chance
            assert plaintext not in blob


def test_new_data_key_is_random_32_bytes() -> None:
    keys = {new_data_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == DATA_KEY_BYTES for k in keys)


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33, 64])
def test_data_key_validates_length(length: int) -> None:
    raw = os.urandom(length)
    with pytest.raises(ValueError) as info:
        DataKey(raw)
    if raw:
        assert_clean_exception(info.value, raw)


def test_nonces_differ_across_seals() -> None:
    key = DataKey(new_data_key())
    blobs = [key.seal(b"same plaintext", AAD) for _ in range(2000)]
    assert len({b[:NONCE_BYTES] for b in blobs}) == len(blobs)
    assert len(set(blobs)) == len(blobs)


ROW: dict[str, str | int | float] = {
    "bed": "bed-1",
    "admission": 7,
    "stream": "SpO2",
    "seq": 42,
    "t": 1_700_000_000.25,
}


def row_aad(**changes: str | int | float) -> bytes:
    row = {**ROW, **changes}
    return associated_data(
        "numeric", row["bed"], row["admission"], row["stream"], row["seq"], row["t"]
    )


@pytest.mark.parametrize(
    "moved",
    [
        {"seq": 43},
        {"stream": "PR"},
        {"admission": 8},
        {"bed": "bed-2"},
        {"t": 1_700_000_001.25},
        {"t": 1_700_000_000.250001},
    ],
    ids=["sequence", "stream", "admission", "bed", "time", "time-epsilon"],
)
def test_ciphertext_moved_to_another_row_fails_naming_context(
    moved: dict[str, str | int | float],
) -> None:
    raw = new_data_key()
    key = DataKey(raw)
    plaintext = b'{"value": 97.0}'
    blob = key.seal(plaintext, row_aad())
    context = "numerics row 43 (bed-1)"
    with pytest.raises(DecryptionFailed) as info:
        key.open(blob, row_aad(**moved), context=context)
    assert context in str(info.value)
    assert info.value.context == context
    assert "97.0" not in str(info.value)
    assert_clean_exception(info.value, raw)
    # The original row still opens.
    assert key.open(blob, row_aad(), context=context) == plaintext


def test_same_blob_under_another_tables_aad_fails() -> None:
    key = DataKey(new_data_key())
    blob = key.seal(b"x", associated_data("numeric", "bed-1", 7, "SpO2", 42, 1.0))
    with pytest.raises(DecryptionFailed):
        key.open(blob, associated_data("event", "bed-1", 7, "SpO2", 42, 1.0), context="event 1")


def test_wrong_data_key_fails() -> None:
    right, wrong = new_data_key(), new_data_key()
    blob = DataKey(right).seal(b"patient: Test Patient", AAD)
    with pytest.raises(DecryptionFailed) as info:
        DataKey(wrong).open(blob, AAD, context=CONTEXT)
    assert CONTEXT in str(info.value)
    assert "Test Patient" not in str(info.value)
    assert_clean_exception(info.value, right, wrong)


def test_every_truncation_and_every_bit_flip_fails_cleanly() -> None:
    raw = new_data_key()
    key = DataKey(raw)
    plaintext = b"HR 72"
    blob = key.seal(plaintext, AAD)
    for length in range(len(blob)):
        with pytest.raises(DecryptionFailed) as info:
            key.open(blob[:length], AAD, context=CONTEXT)
        assert CONTEXT in str(info.value)
        if length < NONCE_BYTES + TAG_BYTES:
            assert "truncated" in str(info.value)
        assert_clean_exception(info.value, raw)
    for bit in range(len(blob) * 8):
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecryptionFailed):
            key.open(bytes(flipped), AAD, context=CONTEXT)
    with pytest.raises(DecryptionFailed):
        key.open(blob + b"\x00", AAD, context=CONTEXT)


def test_open_of_non_bytes_still_only_raises_decryption_failed() -> None:
    key = DataKey(new_data_key())
    for junk in (None, 42, "a string", [1, 2, 3]):
        with pytest.raises(DecryptionFailed):
            key.open(junk, AAD, context=CONTEXT)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=200), aad=st.binary(max_size=64), context=st.text(max_size=30))
def test_arbitrary_bytes_to_open_only_raise_decryption_failed(
    blob: bytes, aad: bytes, context: str
) -> None:
    key = DataKey(b"\x01" * DATA_KEY_BYTES)
    with pytest.raises(DecryptionFailed) as info:
        key.open(blob, aad, context=context)
    assert info.value.context == context


@settings(max_examples=300, deadline=None)
@given(wrapped=st.binary(max_size=200), aad=st.binary(max_size=64))
def test_arbitrary_bytes_to_unwrap_only_raise_decryption_failed(wrapped: bytes, aad: bytes) -> None:
    kek = Kek.from_key(b"\x02" * KEK_BYTES)
    ring = KeyRing(kek)
    with pytest.raises(DecryptionFailed):
        ring.unwrap(kek.id, wrapped, aad, context="admission 1 key")


@settings(max_examples=100, deadline=None)
@given(kek_id=st.text(max_size=40), wrapped=st.binary(max_size=80))
def test_arbitrary_kek_id_to_unwrap_only_raises_key_problem(kek_id: str, wrapped: bytes) -> None:
    kek = Kek.from_key(b"\x03" * KEK_BYTES)
    ring = KeyRing(kek)
    if kek_id == kek.id:
        return
    with pytest.raises(KeyProblem):
        ring.unwrap(kek_id, wrapped, b"", context="admission 1 key")


def test_destroyed_data_key() -> None:
    raw = new_data_key()
    key = DataKey(raw)
    blob = key.seal(b"x", AAD)
    assert not key.destroyed
    key.destroy()
    assert key.destroyed
    assert repr(key) == "DataKey(destroyed)"
    with pytest.raises(DecryptionFailed, match="destroyed"):
        key.open(blob, AAD, context=CONTEXT)
    with pytest.raises(RuntimeError):
        key.seal(b"x", AAD)
    key.destroy()  # idempotent


def test_data_key_cannot_be_pickled_or_copied() -> None:
    raw = new_data_key()
    key = DataKey(raw)
    with pytest.raises(TypeError) as info:
        pickle.dumps(key)
    assert_clean_exception(info.value, raw)
    with pytest.raises(TypeError):
        copy.copy(key)


# ---------------------------------------------------------------------------------------------
# Key ring: wrapping and rotation


def admission_aad(admission: int) -> bytes:
    return associated_data("admission-key", "bed-1", admission)


def test_wrap_unwrap_round_trip() -> None:
    kek = generate_kek()
    ring = KeyRing(kek)
    data_key = new_data_key()
    kek_id, wrapped = ring.wrap(data_key, admission_aad(7))
    assert kek_id == kek.id == ring.current.id
    assert data_key not in wrapped
    assert len(wrapped) == NONCE_BYTES + DATA_KEY_BYTES + TAG_BYTES
    assert ring.unwrap(kek_id, wrapped, admission_aad(7), context="admission 7 key") == data_key
    # The unwrapped key opens what the original sealed.
    blob = DataKey(data_key).seal(b"x", AAD)
    unwrapped = ring.unwrap(kek_id, wrapped, admission_aad(7), context="admission 7 key")
    assert DataKey(unwrapped).open(blob, AAD, context=CONTEXT) == b"x"


def test_wrap_refuses_a_non_data_key() -> None:
    ring = KeyRing(generate_kek())
    with pytest.raises(ValueError):
        ring.wrap(b"short", b"")


def test_wrapped_key_moved_to_another_admission_fails() -> None:
    kek = generate_kek()
    ring = KeyRing(kek)
    data_key = new_data_key()
    kek_id, wrapped = ring.wrap(data_key, admission_aad(7))
    with pytest.raises(DecryptionFailed) as info:
        ring.unwrap(kek_id, wrapped, admission_aad(8), context="admission 8 key")
    assert "admission 8 key" in str(info.value)
    assert_clean_exception(info.value, kek.key, data_key)


def test_unknown_kek_is_a_key_problem_with_the_fix() -> None:
    kek_a, kek_b = generate_kek(), generate_kek()
    data_key = new_data_key()
    kek_id, wrapped = KeyRing(kek_a).wrap(data_key, admission_aad(7))
    with pytest.raises(KeyProblem) as info:
        KeyRing(kek_b).unwrap(kek_id, wrapped, admission_aad(7), context="admission 7 key")
    message = str(info.value)
    assert kek_a.id in message
    assert "does not have" in message
    assert "restore the key file or the credential" in message
    assert_clean_exception(info.value, kek_a.key, kek_b.key, data_key)


def test_wrapped_under_one_kek_claimed_by_another_fails_to_authenticate() -> None:
    kek_a, kek_b = generate_kek(), generate_kek()
    data_key = new_data_key()
    _, wrapped = KeyRing(kek_a).wrap(data_key, admission_aad(7))
    with pytest.raises(DecryptionFailed) as info:
        KeyRing(kek_b).unwrap(kek_b.id, wrapped, admission_aad(7), context="admission 7 key")
    assert_clean_exception(info.value, kek_a.key, kek_b.key, data_key)


def test_rotation_unwraps_with_older_kek_and_rewraps_under_current(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    old = create_key_file(path)
    old_ring = KeyRing(read_key_file(path))
    data_keys = {adm: new_data_key() for adm in (1, 2, 3)}
    stored = {adm: old_ring.wrap(dk, admission_aad(adm)) for adm, dk in data_keys.items()}
    blob = DataKey(data_keys[2]).seal(b"sealed before rotation", AAD)

    # Rotation: the new KEK goes to PATH.new; the ring knows both while re-wrapping.
    new_path = path.with_name("kek.new")
    write_key_file(new_path, generate_kek())
    new = read_key_file(new_path)
    ring = KeyRing(new, read_key_file(path))
    assert ring.current == new
    assert ring.ids == (new.id, old.id)
    assert old.id in ring and new.id in ring

    for adm, (kek_id, wrapped) in stored.items():
        assert kek_id == old.id
        context = f"admission {adm} key"
        assert ring.unwrap(kek_id, wrapped, admission_aad(adm), context=context) == data_keys[adm]
        stored[adm] = ring.rewrap(kek_id, wrapped, admission_aad(adm), context=context)
        assert stored[adm][0] == new.id

    # After the swap only the new KEK is left; the data itself was never rewritten.
    os.replace(new_path, path)
    after = KeyRing(read_key_file(path))
    for adm, (kek_id, wrapped) in stored.items():
        got = after.unwrap(kek_id, wrapped, admission_aad(adm), context=f"admission {adm} key")
        assert got == data_keys[adm]
    kek_id, wrapped = stored[2]
    reopened = DataKey(after.unwrap(kek_id, wrapped, admission_aad(2), context="admission 2 key"))
    assert reopened.open(blob, AAD, context=CONTEXT) == b"sealed before rotation"
    # A wrapped key left behind under the old KEK now names it and the fix.
    stale = old_ring.wrap(new_data_key(), admission_aad(9))
    with pytest.raises(KeyProblem, match="restore the key file or the credential"):
        after.unwrap(*stale, admission_aad(9), context="admission 9 key")


# ---------------------------------------------------------------------------------------------
# Associated data

Part = str | int | float | None


def decode_associated_data(data: bytes) -> list[Part]:
    """Independent decoder: if it recovers every input exactly, the encoding is injective."""
    assert data[0] == 1
    parts: list[Part] = []
    pos = 1
    while pos < len(data):
        tag = data[pos : pos + 1]
        (length,) = struct.unpack(">I", data[pos + 1 : pos + 5])
        body = data[pos + 5 : pos + 5 + length]
        assert len(body) == length
        pos += 5 + length
        if tag == b"N":
            assert body == b""
            parts.append(None)
        elif tag == b"s":
            parts.append(body.decode("utf-8", "surrogatepass"))
        elif tag == b"i":
            parts.append(int(body.decode("ascii")))
        elif tag == b"f":
            parts.append(struct.unpack(">d", body)[0])
        else:
            raise AssertionError(f"unknown tag {tag!r}")
    return parts


def typed(parts: list[Part]) -> list[tuple[str, object]]:
    """Type-aware identity (1 != 1.0 != "1"; NaN equals itself; 0.0 != -0.0)."""
    return [(type(p).__name__, struct.pack(">d", p) if isinstance(p, float) else p) for p in parts]


parts_strategy = st.lists(
    st.one_of(
        st.none(),
        st.text(max_size=20),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["", "|", "a|b", "b|c", "\x00", "1", "1.0", "None"]),
    ),
    max_size=8,
)


def test_associated_data_examples() -> None:
    assert associated_data("a|b", "c") != associated_data("a", "b|c")
    assert associated_data("ab", "c") != associated_data("a", "bc")
    assert len({associated_data(1), associated_data(1.0), associated_data("1")}) == 3
    assert associated_data(None) != associated_data("") != associated_data()
    assert associated_data("", "") != associated_data("")
    assert associated_data(0.0) != associated_data(-0.0)
    assert associated_data(1, 2) != associated_data(12)
    assert associated_data() == b"\x01"
    assert associated_data("a", 1) == b"\x01s\x00\x00\x00\x01ai\x00\x00\x00\x011"
    assert associated_data(1.5) == b"\x01f\x00\x00\x00\x08" + struct.pack(">d", 1.5)


def test_associated_data_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        associated_data(True)
    with pytest.raises(TypeError):
        associated_data(b"bytes")  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(parts=parts_strategy)
def test_associated_data_decodes_back_exactly(parts: list[Part]) -> None:
    encoded = associated_data(*parts)
    assert typed(decode_associated_data(encoded)) == typed(parts)
    assert associated_data(*parts) == encoded  # deterministic


@settings(max_examples=500, deadline=None)
@given(a=parts_strategy, b=parts_strategy)
def test_associated_data_is_unambiguous(a: list[Part], b: list[Part]) -> None:
    if typed(a) != typed(b):
        assert associated_data(*a) != associated_data(*b)
    else:
        assert associated_data(*a) == associated_data(*b)


@settings(max_examples=300, deadline=None)
@given(a=parts_strategy, b=parts_strategy)
def test_associated_data_is_concatenative(a: list[Part], b: list[Part]) -> None:
    # The store caches a stream's prefix and appends (seq, t): this must be the same bytes.
    assert associated_data(*a, *b) == associated_data(*a) + associated_data(*b)[1:]


def test_associated_data_subclasses_encode_as_their_base() -> None:
    class Name(str):
        pass

    class Count(int):
        pass

    assert associated_data(Name("x"), Count(5)) == associated_data("x", 5)


# ---------------------------------------------------------------------------------------------
# No secrets in any exception message


def test_no_key_material_in_any_exception_message(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    kek = create_key_file(path)
    raw = new_data_key()
    ring = KeyRing(kek)
    kek_id, wrapped = ring.wrap(raw, admission_aad(1))
    data_key = DataKey(raw)
    blob = data_key.seal(b"Jane Example MRN 000123", AAD)
    failures: list[BaseException] = []

    def collect(fn: object, *args: object, **kwargs: object) -> None:
        try:
            fn(*args, **kwargs)  # type: ignore[operator]
        except (KeyProblem, DecryptionFailed, ValueError, TypeError, RuntimeError) as exc:
            failures.append(exc)
        else:
            raise AssertionError(f"{fn} did not fail")

    collect(create_key_file, path)
    collect(write_key_file, path, kek)
    path.chmod(0o644)
    collect(read_key_file, path)
    path.chmod(0o600)
    collect(load_kek, key_file=tmp_path / "nope", environ={})
    collect(ring.unwrap, kek_id, wrapped, admission_aad(2), context="admission 2 key")
    collect(ring.unwrap, kek_id, wrapped[:-1], admission_aad(1), context="admission 1 key")
    collect(KeyRing(generate_kek()).unwrap, kek_id, wrapped, admission_aad(1), context="a")
    collect(data_key.open, blob, b"other", context=CONTEXT)
    collect(DataKey(new_data_key()).open, blob, AAD, context=CONTEXT)
    collect(DataKey, raw[:-1])
    collect(Kek, "0" * 16, kek.key)
    collect(pickle.dumps, data_key)
    # A key file holding a key of the wrong length must not echo that key.
    bad = os.urandom(31)
    write_raw(tmp_path / "bad", base64.b64encode(bad) + b"\n")
    collect(read_key_file, tmp_path / "bad")

    assert len(failures) == 13
    for exc in failures:
        assert_clean_exception(exc, kek.key, raw, bad)
        assert "Jane" not in str(exc) and "000123" not in str(exc)
