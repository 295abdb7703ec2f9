"""Driver name -> how to build it, with its config schema.

Each driver module declares one frozen :class:`DriverSpec` named ``SPEC``; this module
lists them. A name that appears twice is a programming error, raised on first use.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel

from drivers.clock import Clock
from drivers.readings import CodecCounters


class DeviceModel(Protocol):
    """What every driver's sans-I/O model has, whatever its transport.

    The transport-specific contract (``drivers.device.SerialDeviceModel`` for serial)
    is checked by the runner of that transport; the registry and the twin only need the
    counters.
    """

    counters: CodecCounters


#: How a driver reaches its device; the gateway picks the runner by this.
#: ``serial``: a byte stream (pyserial); ``modbus-tcp`` / ``modbus-rtu``: polled registers
#: (pymodbus); ``ble``: GATT notifications (bleak).
TransportKind = Literal["serial", "modbus-tcp", "modbus-rtu", "ble"]


class Simulator(Protocol):
    """A simulated device writing real wire bytes to a port the driver can open."""

    @property
    def port(self) -> str:
        """Path (or URL) the driver opens to reach this simulator."""
        ...

    async def run(self) -> None:
        """Produce traffic until cancelled."""
        ...


SettingsT = TypeVar("SettingsT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """Declaration of one driver.

    ``settings`` validates the driver's table in ``config.toml`` (extra keys forbidden);
    ``make_model`` builds the sans-I/O device model for a device id and its settings;
    ``make_simulator`` (optional) builds a simulator for a named scenario, whose link is
    created at ``link_path``. ``transport`` says which runner drives the model.
    """

    name: str
    description: str
    settings: type[BaseModel]
    make_model: Callable[[str, BaseModel], DeviceModel]
    scenarios: tuple[str, ...] = ()
    make_simulator: Callable[[BaseModel, str, Clock, str], Simulator] | None = None
    #: Settings to try when probing an unknown port (each merged over the defaults); a
    #: driver whose device only talks after a command cannot be probed and lists none.
    probe_variants: tuple[Mapping[str, Any], ...] = ({},)
    #: USB (vendor id, product id) pairs of the device or its usual cable.
    usb_ids: tuple[tuple[int, int], ...] = ()
    transport: TransportKind = "serial"

    @classmethod
    def typed(
        cls,
        *,
        name: str,
        description: str,
        settings: type[SettingsT],
        make_model: Callable[[str, SettingsT], DeviceModel],
        scenarios: tuple[str, ...] = (),
        simulator: str | None = None,
        probe_variants: tuple[Mapping[str, Any], ...] = ({},),
        usb_ids: tuple[tuple[int, int], ...] = (),
        transport: TransportKind = "serial",
    ) -> DriverSpec:
        """A spec whose factories take the driver's own settings type.

        ``make_model`` and the simulator get ``settings`` only once it is checked to be a
        ``settings`` instance (``TypeError`` otherwise). ``simulator`` names the simulator
        class as ``"module:Class"``, constructed as ``(settings, scenario, clock,
        link_path)``; it is imported on first use, since simulator modules import their
        driver module for its codec.
        """

        def checked(given: BaseModel) -> SettingsT:
            if not isinstance(given, settings):
                raise TypeError(f"{name} needs {settings.__name__}, got {type(given).__name__}")
            return given

        def build_model(device_id: str, given: BaseModel) -> DeviceModel:
            return make_model(device_id, checked(given))

        build_simulator: Callable[[BaseModel, str, Clock, str], Simulator] | None = None
        if simulator is not None:
            module, _, attr = simulator.partition(":")

            def build_simulator(
                given: BaseModel, scenario: str, clock: Clock, link_path: str
            ) -> Simulator:
                factory = getattr(importlib.import_module(module), attr)
                made: Simulator = factory(checked(given), scenario, clock, link_path)
                return made

        return cls(
            name=name,
            description=description,
            settings=settings,
            make_model=build_model,
            scenarios=scenarios,
            make_simulator=build_simulator,
            probe_variants=probe_variants,
            usb_ids=usb_ids,
            transport=transport,
        )


def _builtin_specs() -> list[DriverSpec]:
    # Imported here, not at the top: driver modules import DriverSpec from this module.
    from drivers.ecg import heart_rate, openbci, polar_h10
    from drivers.infusion import pump
    from drivers.oximetry import contec, masimo, nonin, plx

    return [
        nonin.SPEC,
        contec.SPEC,
        masimo.SPEC,
        openbci.SPEC,
        plx.SPEC,
        heart_rate.SPEC,
        polar_h10.SPEC,
        pump.TCP_SPEC,
        pump.RTU_SPEC,
    ]


@functools.cache
def _drivers() -> dict[str, DriverSpec]:
    index: dict[str, DriverSpec] = {}
    for spec in _builtin_specs():
        if spec.name in index:
            raise RuntimeError(f"driver name {spec.name!r} is declared twice")
        index[spec.name] = spec
    return index


def get(name: str) -> DriverSpec:
    """The spec for ``name``; ``KeyError`` if no such driver."""
    return _drivers()[name]


def names() -> list[str]:
    return sorted(_drivers())


#: USB-serial bridges found in medical device cables. They identify the chip, not the
#: device behind it, so they only narrow the choice; probing tells the protocol.
USB_BRIDGES: Mapping[tuple[int, int], str] = {
    (0x0403, 0x6001): "FTDI FT232R USB-serial bridge",
    (0x0403, 0x6015): "FTDI FT231X USB-serial bridge (e.g. the OpenBCI dongle)",
    (0x10C4, 0xEA60): "Silicon Labs CP210x USB-serial bridge (e.g. Contec CMS50 cables)",
    (0x067B, 0x2303): "Prolific PL2303 USB-serial bridge",
    (0x1A86, 0x7523): "WCH CH340 USB-serial bridge",
}


def suggest(vid: int | None, pid: int | None) -> tuple[str, list[str]]:
    """What a USB id says about a port: (what it is, driver names that match exactly)."""
    if vid is None or pid is None:
        return "", []
    exact = [spec.name for spec in _drivers().values() if (vid, pid) in spec.usb_ids]
    return USB_BRIDGES.get((vid, pid), ""), exact
