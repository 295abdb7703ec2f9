"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.ward import ForkServer


@pytest.fixture(scope="session")
def forkserver() -> Iterator[ForkServer]:
    """One fork server for every daemon test: the daemon's imports are paid once."""
    server = ForkServer()
    yield server
    server.close()
