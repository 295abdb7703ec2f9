"""bedside-gateway: the gateway side (supervision, hub, twin, web, sync)."""

__version__ = "0.1.0"
