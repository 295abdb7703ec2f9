"""Simulated devices that speak the real wire bytes of the devices they imitate."""
