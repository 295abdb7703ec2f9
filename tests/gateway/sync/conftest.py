"""Fixtures of the sync tests (the helpers live in tests/support/sync.py)."""

from tests.support.sync import store

__all__ = ["store"]
