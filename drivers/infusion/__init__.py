"""Infusion pumps over Modbus RTU and TCP, read-only, through register-map profiles."""
