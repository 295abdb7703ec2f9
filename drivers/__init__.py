"""Device side of bedside-gateway: wire protocols, device models, transports, simulators.

Nothing in this package imports from ``gateway``; the gateway builds on it.
"""
