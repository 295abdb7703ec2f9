"""One gateway per data directory.

``run`` holds an exclusive lock on ``<data_dir>/gateway.lock`` for as long as it runs.
Commands that change what the running daemon keeps in memory (admit, discharge, key
rotation) check the lock and refuse while a daemon holds it, instead of silently
diverging from it; read-only commands (export, status) may run beside it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "gateway.lock"


class DataDirInUse(Exception):
    """Another gateway process holds the data directory."""


class InstanceLock:
    """An exclusive, non-blocking advisory lock, released when closed or the process ends."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(
                f"a gateway is running on {self.path.parent} (it holds {self.path}); stop it "
                "first (systemctl stop bedside-gateway, or Ctrl-C)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
