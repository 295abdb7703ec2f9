"""Settings shared by every Bluetooth LE driver: which peripheral to use.

A BLE device is chosen, in this order, by ``address`` (a Bluetooth MAC such as
``A0:9E:1A:12:34:56``, or the per-host UUID macOS hands out instead), by ``name`` (the
advertised local name), or, when neither is given, as the first device advertising the
driver's primary service UUID (``BleDeviceModel.service_uuid``). The last is convenient
with one device per gateway but ambiguous with several: the gateway then needs
``address`` or ``name`` to keep beds apart.

The gateway never writes a clinical setting to a BLE device, so these settings only
describe how to find it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BleSettings(BaseModel):
    """How to find a BLE peripheral; both fields optional (see the module docstring)."""

    # strict: a wrong type in config.toml is refused, never coerced.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    address: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Bluetooth address (MAC) or platform identifier of the device",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=248,  # the longest GAP device name
        description="advertised local name of the device",
    )
