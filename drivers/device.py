"""What every device driver is made of, independent of any one protocol.

A driver is split the sans-I/O way:

* a **device model** (:class:`SerialDeviceModel`): pure, fed bytes, returns readings,
  keeps :class:`~drivers.readings.CodecCounters`; it lives as long as the configured
  device, across reconnects, so counters keep adding up;
* a **transport** (``drivers.transport``): the only code that touches the port;
* a **runner** (``drivers.serial_device``): the one loop that binds the two.

Transports translate their library's exceptions into the :class:`DeviceError` family at
the boundary, so runners and the gateway's supervisor never import pyserial, bleak or
pymodbus exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.readings import CodecCounters, Reading


class DeviceError(Exception):
    """An expected device failure: the supervisor retries it with backoff.

    ``retry_after`` (seconds), when set, is a lower bound the backoff respects.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeviceUnavailable(DeviceError):
    """The port could not be opened (absent, busy, permission denied)."""


class DeviceDisconnected(DeviceError):
    """An open link was lost (cable pulled, port vanished, read error)."""


class TransportStateError(RuntimeError):
    """A transport was used out of order (opened twice, used after close): a bug."""


class SerialDeviceModel(Protocol):
    """The sans-I/O half of a serial driver."""

    counters: CodecCounters

    def on_connect(self, now: float) -> tuple[bytes, Sequence[Reading]]:
        """Reset codec state for a fresh link.

        Returns bytes to send to the device at connect (for example a data-format
        selection; never a clinical setting) and readings to publish (identity).
        ``now`` is gateway wall time, UTC seconds.
        """
        ...

    def feed(self, data: bytes, now: float) -> Sequence[Reading]:
        """Decode ``data`` received at wall time ``now``; never raises on bad bytes."""
        ...

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        """Readings to publish when the link drops (e.g. clear conditions it had raised)."""
        ...


class BleDeviceModel(Protocol):
    """The sans-I/O half of a Bluetooth LE driver.

    The BLE runner finds the device by ``service_uuid``, reads Device Information and
    Battery (common to every BLE device, handled by the runner), performs ``on_connect``'s
    writes in order (for example starting a Polar PMD stream; never a clinical setting),
    subscribes to every characteristic in ``notify_uuids`` and feeds each notification or
    indication to :meth:`feed`. UUIDs are full 128-bit lower-case strings.
    """

    counters: CodecCounters
    #: Primary service the device advertises; used to find it and to check the fit.
    service_uuid: str
    #: Characteristics to subscribe to (notify or indicate), in order.
    notify_uuids: tuple[str, ...]

    def on_connect(self, now: float) -> tuple[Sequence[tuple[str, bytes]], Sequence[Reading]]:
        """Reset codec state for a fresh connection.

        Returns (characteristic uuid, payload) writes to perform after subscribing, and
        readings to publish. ``now`` is gateway wall time, UTC seconds.
        """
        ...

    def feed(self, uuid: str, payload: bytes, now: float) -> Sequence[Reading]:
        """Decode one notification of characteristic ``uuid``; never raises on bad bytes."""
        ...

    def on_disconnect(self, now: float) -> Sequence[Reading]:
        """Readings to publish when the connection drops."""
        ...


Parity = Literal["N", "E", "O", "M", "S"]


class SerialSettings(BaseModel):
    """Transport settings shared by every serial driver.

    ``port`` is a device path (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``) or a pyserial
    URL (``socket://host:port`` for ser2net). It may be omitted only when the device is
    simulated; the gateway then supplies the simulator's port.
    """

    # strict: a wrong type in config.toml is refused, never coerced (true is not 1 baud).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    port: str | None = None
    baudrate: int = Field(default=9600, gt=0, description="bits per second")
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1

    @field_validator("bytesize", "stopbits", mode="before")
    @classmethod
    def _whole_number(cls, value: object) -> object:
        # Literal matching would take 8.0 for 8 (and True for 1): refuse anything not an int.
        if type(value) is not int:
            raise ValueError(f"expected a whole number, got {value!r}")
        return value
