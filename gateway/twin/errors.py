"""What can go wrong with the store, as exceptions a technician can act on.

Kept apart from ``store.py`` so commands can catch them without importing SQLite tooling.
"""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot be used; the message says why and what to do."""


class StoreVersionError(StoreError):
    """The file was written by a newer gateway."""


class StoreCorrupt(StoreError):
    """The file is not a readable gateway store."""


class StoreFull(StoreError):
    """The quota or the disk has no room for the batch."""
