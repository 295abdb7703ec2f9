"""PtyLink: a simulated cable with a stable path, plugged and pulled by the simulator.

The driver end is opened here with plain ``os.open`` so these tests depend on nothing but
the link. Pty data crosses a kernel work queue, so the device side polls with loop turns
under a bounded timeout rather than expecting bytes to be there at once.
"""

from __future__ import annotations

import os
import termios
from pathlib import Path

import pytest

from drivers.simulate.pty import PtyLink
from tests.support.ptys import device_read, open_driver_end, pty_fds, read_exactly


@pytest.fixture
def link_plugged() -> bool:
    """The shared ``link`` fixture, unplugged: these tests plug it themselves."""
    return False


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def test_nothing_exists_before_plug(link: PtyLink) -> None:
    assert not link.plugged
    assert link.slave_name is None
    assert not os.path.lexists(link.link_path)
    assert link.write(b"lost") == 0
    assert link.read() == b""


def test_plug_points_the_stable_path_at_a_fresh_raw_pty(link: PtyLink) -> None:
    link.plug()
    assert link.plugged
    assert link.slave_name is not None and link.slave_name.startswith("/dev/pts/")
    assert os.path.islink(link.link_path)  # parent directories were created
    assert os.readlink(link.link_path) == link.slave_name
    assert not [p for p in os.listdir(os.path.dirname(link.link_path)) if p.endswith(".tmp")]

    fd = open_driver_end(link.link_path)
    try:
        assert os.isatty(fd)
        lflag = termios.tcgetattr(fd)[3]
        assert not lflag & termios.ECHO  # the driver's bytes are not echoed back to it
        assert not lflag & termios.ICANON  # no line editing: bytes pass through as sent
    finally:
        os.close(fd)


def test_plug_twice_is_an_error(link: PtyLink) -> None:
    link.plug()
    with pytest.raises(RuntimeError, match="already plugged"):
        link.plug()


def test_plug_replaces_a_stale_link(link: PtyLink) -> None:
    os.makedirs(os.path.dirname(link.link_path))
    os.symlink("/dev/pts/nonexistent", link.link_path)
    link.plug()
    assert os.readlink(link.link_path) == link.slave_name


async def test_bytes_flow_both_ways(link: PtyLink) -> None:
    link.plug()
    fd = open_driver_end(link.link_path)
    try:
        assert link.write(b"\x01\x81\x60\x4c\x62") == 5
        assert await read_exactly(fd, 5) == b"\x01\x81\x60\x4c\x62"

        os.write(fd, b"\x02\x70\x02\x02\x08\x03")  # e.g. a data-format selection
        assert await device_read(link, 6) == b"\x02\x70\x02\x02\x08\x03"
        assert link.read() == b""  # nothing more, and no blocking
    finally:
        os.close(fd)


def test_writes_never_block_and_overflow_is_dropped(link: PtyLink) -> None:
    link.plug()  # nobody reads the driver end
    payload = b"\x55" * 1_000_000
    accepted = [link.write(payload) for _ in range(5)]
    # Far more than a pty holds: each call returns at once with what fit, the rest dropped
    # (the kernel drains its buffers asynchronously, so later calls may take a little).
    assert 0 < accepted[0] < len(payload)
    assert sum(accepted) < len(payload)


async def test_unplug_hangs_up_the_driver_and_removes_the_link(link: PtyLink) -> None:
    link.plug()
    fd = open_driver_end(link.link_path)
    try:
        link.unplug()
        assert not link.plugged
        assert link.slave_name is None
        assert not _exists(link.link_path)
        # The driver's open port reads end-of-file, as after a pulled USB cable.
        assert await read_exactly(fd, 1) == b""
        assert link.write(b"x") == 0
        assert link.read() == b""
    finally:
        os.close(fd)
    link.unplug()  # idempotent
    link.close()


async def test_replug_serves_a_new_pty_behind_the_same_path(link: PtyLink) -> None:
    link.plug()
    old = open_driver_end(link.link_path)
    try:
        old_name = link.slave_name
        link.unplug()
        link.plug()
        assert os.readlink(link.link_path) == link.slave_name
        assert link.slave_name != old_name  # the old pty is still held open by `old`
        new = open_driver_end(link.link_path)
        try:
            link.write(b"hello again")
            assert await read_exactly(new, 11) == b"hello again"
            assert await read_exactly(old, 1) == b""  # the old end stays dead
        finally:
            os.close(new)
    finally:
        os.close(old)


def test_unplug_leaves_a_link_someone_else_repointed(link: PtyLink, tmp_path: Path) -> None:
    link.plug()
    elsewhere = str(tmp_path / "other")
    os.symlink(elsewhere, link.link_path + ".new")
    os.replace(link.link_path + ".new", link.link_path)
    link.unplug()
    assert os.readlink(link.link_path) == elsewhere


def test_close_releases_everything(tmp_path: Path) -> None:
    before = pty_fds()
    cable = PtyLink(str(tmp_path / "ttyS9"))
    cable.plug()
    assert len(pty_fds() - before) == 2  # master and the slave it holds open
    cable.close()
    cable.close()
    assert pty_fds() == before
    assert not os.path.lexists(cable.link_path)
    assert "unplugged" in repr(cable)
