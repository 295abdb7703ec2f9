"""MemoryDenyWriteExecute=yes: the Python stack never needs writable-and-executable memory.

systemd enforces the setting with a seccomp filter that fails with EPERM every ``mmap`` asking
for PROT_WRITE and PROT_EXEC together and every ``mprotect``/``pkey_mprotect`` adding
PROT_EXEC (systemd.exec(5)). A child process installs that same filter (classic BPF through
``prctl(PR_SET_SECCOMP)``, x86-64 and arm64), then imports and exercises everything the daemon
runs (numpy, scipy's filters, cryptography's AES-GCM, SQLite, aiohttp serving a request,
pydantic, bleak, pymodbus, prometheus-client, the gateway itself), and shows that a
writable-and-executable mapping is refused, so the filter was really in force.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.systemd.conftest import REPO

CHILD = textwrap.dedent(
    """
    import ctypes, errno, mmap, platform, sys

    # (AUDIT_ARCH, mmap, mprotect, pkey_mprotect) syscall numbers per architecture.
    ARCH = {
        "x86_64": (0xC000003E, 9, 10, 329),
        "aarch64": (0xC00000B7, 222, 226, 288),
    }[platform.machine()]
    audit_arch, nr_mmap, nr_mprotect, nr_pkey = ARCH
    LD, JEQ, AND, RET = 0x20, 0x15, 0x54, 0x06
    ALLOW, DENY = 0x7FFF0000, 0x00050000 | errno.EPERM
    PROT_ARG = 16 + 2 * 8  # seccomp_data.args[2], low 32 bits (little endian)
    program = [
        (LD, 0, 0, 4), (JEQ, 0, 11, audit_arch),          # 0-1: other ABIs untouched
        (LD, 0, 0, 0),                                     # 2: syscall number
        (JEQ, 2, 0, nr_mmap), (JEQ, 5, 0, nr_mprotect),    # 3-4
        (JEQ, 4, 7, nr_pkey),                              # 5
        (LD, 0, 0, PROT_ARG), (AND, 0, 0, 6),              # 6-7: mmap: WRITE and EXEC?
        (JEQ, 5, 0, 6), (RET, 0, 0, ALLOW),                # 8-9
        (LD, 0, 0, PROT_ARG), (AND, 0, 0, 4),              # 10-11: mprotect: EXEC?
        (JEQ, 1, 0, 4),                                    # 12
        (RET, 0, 0, ALLOW), (RET, 0, 0, DENY),             # 13-14
    ]

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(program))(*[Filter(*f) for f in program])
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, ctypes.get_errno()
    prog = Program(len(program), filters)
    assert libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) == 0, (
        ctypes.get_errno()
    )

    import asyncio, sqlite3
    import numpy as np
    import scipy.signal as signal
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    import aiohttp, bleak, pydantic, pymodbus, prometheus_client, serial, structlog
    from gateway.daemon import Gateway
    from gateway.twin.crypto import KeyRing, generate_kek

    sos = signal.butter(4, [0.5, 40.0], btype="band", fs=250.0, output="sos")
    x = np.random.default_rng(1).normal(size=2500)
    y, _ = signal.sosfilt(sos, x, zi=signal.sosfilt_zi(sos) * x[0])
    assert np.isfinite(y).all()
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    assert aead.decrypt(b"n" * 12, aead.encrypt(b"n" * 12, b"vital", b"ad"), b"ad") == b"vital"
    ring = KeyRing(generate_kek())
    db = sqlite3.connect(":memory:")
    db.execute("create table t (x)")
    db.execute("insert into t values (1)")

    async def serve():
        from aiohttp import web
        app = web.Application()
        app.router.add_get("/", lambda r: web.Response(text="ok"))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as r:
            assert await r.text() == "ok"
        await runner.cleanup()

    asyncio.run(serve())
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        print("stack ok; W+X refused")
    else:
        print("W+X mapping was allowed"); sys.exit(4)
    """
)


def test_the_python_stack_runs_under_memory_deny_write_execute() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("stack ok; W+X refused")
