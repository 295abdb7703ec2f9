"""Sync to central systems: one worker per destination drains the store's outbox."""
