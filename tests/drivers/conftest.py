"""Fixtures for the driver tests: a pty-leak check on every test, and a simulated cable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.simulate.pty import PtyLink
from tests.support.ptys import pty_fds


@pytest.fixture(autouse=True)
def no_pty_leak() -> Iterator[None]:
    """Fail a test that leaves pty descriptors open (checked after its other fixtures)."""
    before = pty_fds()
    yield
    assert pty_fds() - before == set(), "a test left pty descriptors open"


@pytest.fixture
def link_path(tmp_path: Path) -> str:
    """A stable, not yet existing port path, as a USB-serial device gets under by-id."""
    return str(tmp_path / "dev" / "serial" / "by-id" / "usb-Test_Device-if00")


@pytest.fixture
def link_plugged() -> bool:
    """Whether :func:`link` comes plugged; a module overrides this fixture to say no."""
    return True


@pytest.fixture
def link(link_path: str, link_plugged: bool) -> Iterator[PtyLink]:
    """A :class:`PtyLink` at ``link_path`` (plugged unless ``link_plugged`` says otherwise),
    closed after the test."""
    cable = PtyLink(link_path)
    if link_plugged:
        cable.plug()
    yield cable
    cable.close()
