"""A simulated serial cable: a pty pair whose driver end has a stable path.

Real USB-serial devices appear under a stable name (``/dev/serial/by-id/...``) that points
at whatever ``/dev/ttyUSBn`` the kernel picked. :class:`PtyLink` does the same for a
simulator: :meth:`~PtyLink.plug` creates a pty pair and points ``link_path`` at its slave,
which the driver opens like any port; the simulator writes device bytes to the master.
:meth:`~PtyLink.unplug` closes both ends and removes the link, so the driver's next read
fails exactly as when a cable is pulled, and a later :meth:`~PtyLink.plug` is a replug onto
a new pty behind the same path.

The simulator side never blocks: bytes that do not fit in the pty are dropped, as a device
streaming into a port nobody reads loses them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tty

_READ_CHUNK = 4096


class PtyLink:
    """A pluggable pty "cable" ending at ``link_path``. Nothing is opened until
    :meth:`plug`. Not thread-safe: use it from the simulator's task."""

    def __init__(self, link_path: str) -> None:
        self._link_path = os.path.abspath(link_path)
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name: str | None = None

    @property
    def link_path(self) -> str:
        """Absolute path of the symlink the driver opens."""
        return self._link_path

    @property
    def plugged(self) -> bool:
        return self._master is not None

    @property
    def slave_name(self) -> str | None:
        """The pty the link points at (``/dev/pts/N``) while plugged, else ``None``."""
        return self._slave_name

    def plug(self) -> None:
        """Create a fresh pty pair and point ``link_path`` at its slave (atomically, so an
        opener never sees a half-made link). ``RuntimeError`` if already plugged."""
        if self.plugged:
            raise RuntimeError(f"pty link {self._link_path} is already plugged")
        master, slave = os.openpty()
        try:
            tty.setraw(master)
            # Raw without echo on the driver's end too, so nothing it sends comes back to it
            # before the driver reconfigures the port itself.
            tty.setraw(slave)
            os.set_blocking(master, False)
            name = os.ttyname(slave)
            self._point_link_at(name)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # Holding the slave open keeps the pty alive between driver connections: without
        # it, master I/O fails with EIO whenever no driver has the port open.
        self._master, self._slave, self._slave_name = master, slave, name

    def unplug(self) -> None:
        """Pull the cable: remove the link, then close both ends. The driver's open port
        hangs up. No-op when not plugged."""
        if self._master is None:
            return
        name = self._slave_name
        # Remove the link first so a driver reconnecting after the hangup finds no port,
        # rather than a link to a dead pty. Leave it alone if someone re-pointed it.
        with contextlib.suppress(OSError):
            if os.readlink(self._link_path) == name:
                os.unlink(self._link_path)
        fds = (self._master, self._slave)
        self._master = self._slave = None
        self._slave_name = None
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def write(self, data: bytes) -> int:
        """Send ``data`` to the driver without blocking; returns the bytes accepted (the
        rest is dropped). 0 when unplugged."""
        if self._master is None or not data:
            return 0
        try:
            return os.write(self._master, data)
        except BlockingIOError:
            return 0
        except OSError as err:
            if err.errno == errno.EIO:  # the pty is hung up: nobody to send to
                return 0
            raise

    def read(self) -> bytes:
        """Everything the driver has sent so far, without blocking; ``b""`` if nothing
        arrived or unplugged."""
        if self._master is None:
            return b""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(self._master, _READ_CHUNK)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.EIO:
                    break
                raise
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Release everything; unplugs if plugged. Idempotent."""
        self.unplug()

    def __repr__(self) -> str:
        where = self._slave_name if self.plugged else "unplugged"
        return f"<PtyLink {self._link_path} -> {where}>"

    def _point_link_at(self, target: str) -> None:
        directory = os.path.dirname(self._link_path)
        os.makedirs(directory, exist_ok=True)
        # Same directory, so os.replace is a rename within one filesystem: atomic.
        tmp = f"{self._link_path}.{os.getpid()}.{id(self):x}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(target, tmp)
        try:
            os.replace(tmp, self._link_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
