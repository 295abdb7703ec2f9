"""Driver name -> how to build it, with its config schema.

Each driver module declares one frozen :class:`DriverSpec` named ``SPEC``; this module
lists them. A name that appears twice is a programming error, raised on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from drivers.clock import Clock
from drivers.device import SerialDeviceModel


class Simulator(Protocol):
    """A simulated device writing real wire bytes to a port the driver can open."""

    @property
    def port(self) -> str:
        """Path (or URL) the driver opens to reach this simulator."""
        ...

    async def run(self) -> None:
        """Produce traffic until cancelled."""
        ...


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """Declaration of one driver.

    ``settings`` validates the driver's table in ``config.toml`` (extra keys forbidden);
    ``make_model`` builds the sans-I/O device model for a device id and its settings;
    ``make_simulator`` (optional) builds a simulator for a named scenario, whose link is
    created at ``link_path``.
    """

    name: str
    description: str
    settings: type[BaseModel]
    make_model: Callable[[str, BaseModel], SerialDeviceModel]
    scenarios: tuple[str, ...] = ()
    make_simulator: Callable[[BaseModel, str, Clock, str], Simulator] | None = None


def _builtin_specs() -> list[DriverSpec]:
    # Imported here, not at the top: driver modules import DriverSpec from this module.
    from drivers.oximetry import nonin

    return [nonin.SPEC]


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
