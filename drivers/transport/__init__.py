"""Transports: the only code that performs device I/O."""
