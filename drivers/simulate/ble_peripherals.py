"""Simulated Bluetooth LE medical devices: bumble GATT servers on the virtual radio.

Each is a :class:`~drivers.simulate.virtual_ble.VirtualPeripheral` carrying its profile's
service plus Device Information (0x180A) and Battery (0x180F), sending the real payloads
(from the drivers' own encoders) at the device's rate on the injected clock:

* :class:`PlxPeripheral`: a Pulse Oximeter Service (0x1822) oximeter, one PLX Continuous
  Measurement a second (SpO2, pulse rate, perfusion index and both status fields), PLX
  Features readable.
* :class:`HeartRatePeripheral`: a Heart Rate Service (0x180D) strap, one Heart Rate
  Measurement a second with the RR intervals of the beats since the last one.
* :class:`PolarH10Peripheral`: a Polar-H10-like chest strap with the heart-rate service and
  the Polar PMD service: it answers the control point (feature read, start and stop ECG)
  and, once started, streams 130 Hz ECG frames (73 samples, microvolts) from the
  synthetic ECG of :mod:`drivers.simulate.ecg_synth`.

They are built like the serial simulators, ``(settings, scenario, clock, link_path)``
(``drivers.registry``'s simulator contract). A BLE device has no link path: ``link_path``
only seeds what must differ between simulated devices and repeat between runs (the
Bluetooth address, serial number, the physiology's random numbers). The peripheral joins
the running event loop's :class:`~drivers.simulate.virtual_ble.VirtualRadio` when
:meth:`run` starts, and :attr:`port` is its address: what the driver connects to.

Scenarios (:class:`BleScenario`, the same for the three devices):

``normal``
    Steady physiology, battery 85 %, sensor on, always in range.
``disconnects``
    Every 30 s the device goes out of range at 20 s for 4 s (link lost, not advertising),
    then comes back and is reconnected.
``battery_low``
    The battery drains from 50 % by 0.5 % a second to a floor of 10 % (low from 60 s).
``sensor_off``
    Every 60 s the sensor is off the patient from 30 s to 45 s (PLX: sensor disconnected,
    no values; strap: no skin contact; H10: electrodes off, the ECG flat at 0 uV).
``replay`` (H10 only)
    As ``normal``, but the ECG is MIT-BIH record 101 (lead MLII, resampled from 360 Hz to
    130 Hz, looped) from ``../shared/data`` when that folder is there, else the synthetic
    ECG. The records are PhysioNet's (Moody GB, Mark RG. The impact of the MIT-BIH
    Arrhythmia Database. IEEE Eng in Med and Biol 20(3):45-50, 2001; Goldberger AL et al.
    PhysioBank, PhysioToolkit, and PhysioNet. Circulation 101(23):e215-e220, 2000).
"""

from __future__ import annotations

import abc
import asyncio
import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from bumble import gatt
from bumble.device import Connection
from bumble.profiles.device_information_service import DeviceInformationService

from drivers import gatt as uuids
from drivers.ble_settings import BleSettings
from drivers.clock import Clock
from drivers.ecg.heart_rate import SensorContact, contact_bits_for, encode_heart_rate
from drivers.ieee11073 import NoValue
from drivers.oximetry.plx import (
    PlxDeviceStatus,
    PlxFeature,
    PlxMeasurementStatus,
    encode_plx_continuous,
    encode_plx_features,
)
from drivers.simulate.ecg_synth import EcgSynth, Segment
from drivers.simulate.virtual_ble import VirtualPeripheral, VirtualRadio, bumble_uuid

__all__ = [
    "SCENARIOS",
    "BleScenario",
    "HeartRatePeripheral",
    "PlxPeripheral",
    "PolarH10Peripheral",
    "static_address",
]

SCENARIOS: Final = ("normal", "disconnects", "battery_low", "sensor_off", "replay")
#: Where ``replay`` looks for MIT-BIH records (the repository's sibling ``shared/data``).
DATA_DIR: Final = Path(__file__).resolve().parents[3] / "shared" / "data"
#: The record ``replay`` streams: MIT-BIH 101, lead MLII (sinus rhythm, few ectopics).
REPLAY_RECORD: Final = ("mitdb", "101")

_DISCONNECT_CYCLE_S: Final = 30.0
_OUT_OF_RANGE_FROM_S: Final = 20.0
_OUT_OF_RANGE_FOR_S: Final = 4.0
_SENSOR_CYCLE_S: Final = 60.0
_SENSOR_OFF_FROM_S: Final = 30.0
_SENSOR_OFF_FOR_S: Final = 15.0
_BATTERY_FULL: Final = 85
_BATTERY_DRAIN_START: Final = 50.0  # %
_BATTERY_DRAIN_PER_S: Final = 0.5  # %/s
_BATTERY_FLOOR: Final = 10


def static_address(seed: str) -> str:
    """A static random Bluetooth address derived from ``seed`` (top two bits set)."""
    value = zlib.crc32(seed.encode()) << 16 | zlib.crc32(seed[::-1].encode()) & 0xFFFF
    octets = [(value >> (8 * i)) & 0xFF for i in range(5, -1, -1)]
    octets[0] |= 0xC0
    return ":".join(f"{o:02X}" for o in octets)


@dataclass(frozen=True, slots=True)
class BleScenario:
    """A pure timeline of a BLE device's life; ``elapsed`` is seconds since it started."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.name!r}; use one of: {', '.join(SCENARIOS)}")

    def in_range(self, elapsed: float) -> bool:
        if self.name != "disconnects":
            return True
        phase = elapsed % _DISCONNECT_CYCLE_S
        return not _OUT_OF_RANGE_FROM_S <= phase < _OUT_OF_RANGE_FROM_S + _OUT_OF_RANGE_FOR_S

    def battery(self, elapsed: float) -> int:
        """Battery level, percent."""
        if self.name != "battery_low":
            return _BATTERY_FULL
        level = _BATTERY_DRAIN_START - _BATTERY_DRAIN_PER_S * elapsed
        return max(_BATTERY_FLOOR, math.floor(level))

    def sensor_on(self, elapsed: float) -> bool:
        if self.name != "sensor_off":
            return True
        phase = elapsed % _SENSOR_CYCLE_S
        return not _SENSOR_OFF_FROM_S <= phase < _SENSOR_OFF_FROM_S + _SENSOR_OFF_FOR_S


def _pulse_rate(elapsed: float, rng: random.Random) -> float:
    """About 72 /min with a slow drift and respiratory variation."""
    return 72.0 + 3.0 * math.sin(2 * math.pi * elapsed / 45.0) + rng.uniform(-0.5, 0.5)


class _BlePeripheralSimulator(abc.ABC):
    """Plays a :class:`BleScenario` as a GATT server; subclasses add their profile.

    Every ``period`` seconds of the clock the scenario is applied (range, battery) and
    :meth:`_tick` sends the profile's measurements.
    """

    period: float = 1.0
    manufacturer: str = ""
    model_number: str = ""
    firmware: str = ""
    default_name: str = ""

    def __init__(
        self,
        settings: BleSettings,
        scenario: str,
        clock: Clock,
        link_path: str,
        *,
        radio: VirtualRadio | None = None,
    ) -> None:
        self.settings = settings
        self.scenario = BleScenario(scenario)
        self._clock = clock
        self._radio = radio
        seed = zlib.crc32(link_path.encode())
        self._rng = random.Random(seed)
        self.address = (settings.address or static_address(link_path)).upper()
        self.serial = f"{seed % 100_000_000:08d}"
        self.name = settings.name or self.default_name.format(serial=self.serial)
        self.battery_level = self.scenario.battery(0.0)
        self.sensor_on = True
        self.peripheral: VirtualPeripheral | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._battery: gatt.Characteristic[bytes] = gatt.Characteristic(
            bumble_uuid(uuids.BATTERY_LEVEL),
            gatt.Characteristic.Properties.READ | gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.READABLE,
            gatt.CharacteristicValue[bytes](read=lambda _c: bytes([self.battery_level])),
        )

    @property
    def port(self) -> str:
        """The Bluetooth address the driver connects to."""
        return self.address

    def _services(self) -> list[gatt.Service]:
        return [
            DeviceInformationService(
                manufacturer_name=self.manufacturer,
                model_number=self.model_number,
                serial_number=self.serial,
                firmware_revision=self.firmware,
            ),
            gatt.Service(bumble_uuid(uuids.BATTERY_SERVICE), [self._battery]),
            *self._profile_services(),
        ]

    @abc.abstractmethod
    def _profile_services(self) -> list[gatt.Service]:
        """The device's own GATT services (besides Device Information and Battery)."""

    @abc.abstractmethod
    def _advertised(self) -> Sequence[str]:
        """Service UUIDs to advertise."""

    @abc.abstractmethod
    async def _tick(self, elapsed: float, peripheral: VirtualPeripheral) -> None:
        """Send what the device sends ``elapsed`` seconds into the scenario."""

    async def run(self) -> None:
        """Join the radio, advertise and play the scenario until cancelled."""
        radio = self._radio or VirtualRadio.shared()
        peripheral = VirtualPeripheral(
            radio,
            name=self.name,
            address=self.address,
            services=self._services(),
            advertised=self._advertised(),
        )
        self.peripheral = peripheral
        await peripheral.start()
        started = self._clock.monotonic()
        ticks = 0
        try:
            while True:
                ticks += 1
                deadline = started + ticks * self.period
                await self._clock.sleep(deadline - self._clock.monotonic())
                elapsed = self._clock.monotonic() - started
                await self._apply(elapsed, peripheral)
                if peripheral.connections:
                    await self._tick(elapsed, peripheral)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await peripheral.stop()

    async def _apply(self, elapsed: float, peripheral: VirtualPeripheral) -> None:
        in_range = self.scenario.in_range(elapsed)
        if peripheral.in_range and not in_range:
            await peripheral.pull()
        elif in_range and not peripheral.in_range:
            await peripheral.restore()
        self.sensor_on = self.scenario.sensor_on(elapsed)
        level = self.scenario.battery(elapsed)
        if level != self.battery_level:
            self.battery_level = level
            await peripheral.notify(self._battery, bytes([level]))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class PlxPeripheral(_BlePeripheralSimulator):
    """A PLX pulse oximeter: one continuous measurement a second (see the module)."""

    manufacturer = "Simulated Medical"
    model_number = "PLX-SIM 1822"
    firmware = "1.4.2"
    default_name = "PLX Oximeter {serial}"

    def __init__(
        self,
        settings: BleSettings,
        scenario: str,
        clock: Clock,
        link_path: str,
        *,
        radio: VirtualRadio | None = None,
    ) -> None:
        super().__init__(settings, scenario, clock, link_path, radio=radio)
        features = encode_plx_features(
            PlxFeature.PULSE_AMPLITUDE_INDEX,
            measurement_status_support=PlxMeasurementStatus.UNAVAILABLE
            | PlxMeasurementStatus.MEASUREMENT_ONGOING,
            device_status_support=0xFFFF,
        )
        self.continuous = gatt.Characteristic(
            bumble_uuid(uuids.PLX_CONTINUOUS),
            gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.READABLE,
            b"",
        )
        self.spot_check = gatt.Characteristic(
            bumble_uuid(uuids.PLX_SPOT_CHECK),
            gatt.Characteristic.Properties.INDICATE,
            gatt.Characteristic.READABLE,
            b"",
        )
        self.features = gatt.Characteristic(
            bumble_uuid(uuids.PLX_FEATURES),
            gatt.Characteristic.Properties.READ,
            gatt.Characteristic.READABLE,
            features,
        )

    def _profile_services(self) -> list[gatt.Service]:
        return [
            gatt.Service(
                bumble_uuid(uuids.PLX_SERVICE), [self.continuous, self.spot_check, self.features]
            )
        ]

    def _advertised(self) -> Sequence[str]:
        return [uuids.PLX_SERVICE]

    def measurement(self, elapsed: float) -> bytes:
        """The PLX Continuous Measurement payload for ``elapsed`` seconds into the scenario."""
        if not self.sensor_on:
            return encode_plx_continuous(
                NoValue.NAN,
                NoValue.NAN,
                measurement_status=PlxMeasurementStatus.UNAVAILABLE,
                device_status=PlxDeviceStatus.SENSOR_DISCONNECTED,
                pulse_amplitude_index=NoValue.NAN,
            )
        spo2 = round(
            97.0 + 0.8 * math.sin(2 * math.pi * elapsed / 60.0) + self._rng.uniform(-0.4, 0.4)
        )
        pulse = round(_pulse_rate(elapsed, self._rng))
        pai = round(2.5 + 0.3 * math.sin(2 * math.pi * elapsed / 20.0), 1)
        return encode_plx_continuous(
            float(spo2),
            float(pulse),
            measurement_status=PlxMeasurementStatus.MEASUREMENT_ONGOING,
            device_status=0,
            pulse_amplitude_index=pai,
        )

    async def _tick(self, elapsed: float, peripheral: VirtualPeripheral) -> None:
        await peripheral.notify(self.continuous, self.measurement(elapsed))


class _Beats:
    """Beat times of a sinus rhythm, for RR intervals in 1/1024 s."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._last = 0.0

    def until(self, elapsed: float) -> list[int]:
        """RR intervals (1/1024 s ticks) of the beats up to ``elapsed`` not yet reported."""
        intervals: list[int] = []
        while True:
            rr = 60.0 / _pulse_rate(self._last, self._rng)
            if self._last + rr > elapsed:
                return intervals
            self._last += rr
            intervals.append(round(rr * 1024))


class HeartRatePeripheral(_BlePeripheralSimulator):
    """A heart-rate strap: one measurement a second with its RR intervals (see the module)."""

    manufacturer = "Simulated Medical"
    model_number = "HRM-SIM 180D"
    firmware = "2.0.1"
    default_name = "HR Strap {serial}"

    def __init__(
        self,
        settings: BleSettings,
        scenario: str,
        clock: Clock,
        link_path: str,
        *,
        radio: VirtualRadio | None = None,
    ) -> None:
        super().__init__(settings, scenario, clock, link_path, radio=radio)
        self._beats = _Beats(self._rng)
        self.heart_rate = _heart_rate_characteristic()

    def _profile_services(self) -> list[gatt.Service]:
        return [_heart_rate_service(self.heart_rate)]

    def _advertised(self) -> Sequence[str]:
        return [uuids.HEART_RATE_SERVICE]

    def measurement(self, elapsed: float) -> bytes:
        """The Heart Rate Measurement payload at ``elapsed`` seconds into the scenario."""
        intervals = self._beats.until(elapsed)
        contact = SensorContact.CONTACT if self.sensor_on else SensorContact.NO_CONTACT
        if not self.sensor_on:
            return encode_heart_rate(0, contact_bits=contact_bits_for(contact))
        rate = round(_pulse_rate(elapsed, self._rng))
        return encode_heart_rate(
            rate, contact_bits=contact_bits_for(contact), rr_intervals=intervals or None
        )

    async def _tick(self, elapsed: float, peripheral: VirtualPeripheral) -> None:
        await peripheral.notify(self.heart_rate, self.measurement(elapsed))


def _heart_rate_characteristic() -> gatt.Characteristic[bytes]:
    return gatt.Characteristic(
        bumble_uuid(uuids.HEART_RATE_MEASUREMENT),
        gatt.Characteristic.Properties.NOTIFY,
        gatt.Characteristic.READABLE,
        b"",
    )


def _heart_rate_service(measurement: gatt.Characteristic[bytes]) -> gatt.Service:
    location = gatt.Characteristic(
        bumble_uuid(uuids.BODY_SENSOR_LOCATION),
        gatt.Characteristic.Properties.READ,
        gatt.Characteristic.READABLE,
        bytes([1]),  # chest
    )
    return gatt.Service(bumble_uuid(uuids.HEART_RATE_SERVICE), [measurement, location])


#: ECG sample rate of the H10, Hz (protocols.md 3.1).
ECG_RATE_HZ: Final = 130
#: Samples per PMD data notification: what fits a 232-byte ATT MTU (3 bytes a sample).
ECG_FRAME_SAMPLES: Final = 73
#: Nanoseconds from the Unix epoch to the Polar epoch, 2000-01-01 (protocols.md 3.3).
_POLAR_EPOCH_NS: Final = 946_684_800_000_000_000
_PMD_START: Final = 0x02
_PMD_STOP: Final = 0x03
_PMD_ECG: Final = 0x00
#: Feature bitmap read from the control point: ECG and ACC (protocols.md 3.2).
_PMD_FEATURES: Final = bytes([0x0F, 0b0000_0101, 0x00])


class _EcgSource(Protocol):
    def read(self, n: int) -> npt.NDArray[np.float64]:
        """The next ``n`` samples, mV, at :data:`ECG_RATE_HZ`."""
        ...


class _RecordLoop:
    """A WFDB record's first channel at :data:`ECG_RATE_HZ`, in mV, played in a loop."""

    def __init__(self, samples: npt.NDArray[np.float64]) -> None:
        self._samples = samples
        self._at = 0

    def read(self, n: int) -> npt.NDArray[np.float64]:
        indices = (self._at + np.arange(n)) % len(self._samples)
        self._at = int((self._at + n) % len(self._samples))
        return self._samples[indices]


def _ecg_source(scenario: str, seed: int) -> _EcgSource:
    """The replayed record for ``replay`` when the data folder is there, else synthetic."""
    header = DATA_DIR.joinpath(*REPLAY_RECORD).with_suffix(".hea")
    if scenario == "replay" and header.is_file():
        import wfdb
        from scipy.signal import resample_poly  # type: ignore[import-untyped]

        record = wfdb.rdrecord(str(header.with_suffix("")), channels=[0])
        signal = np.nan_to_num(np.asarray(record.p_signal[:, 0], dtype=np.float64))
        rate = int(record.fs)
        divisor = math.gcd(ECG_RATE_HZ, rate)
        resampled = resample_poly(signal, ECG_RATE_HZ // divisor, rate // divisor)
        return _RecordLoop(np.asarray(resampled, dtype=np.float64))
    return EcgSynth([Segment("sinus", 600.0, rate=72.0)], ECG_RATE_HZ, seed=seed, loop=True)


class PolarH10Peripheral(_BlePeripheralSimulator):
    """A Polar-H10-like strap: heart rate plus PMD ECG on request (see the module).

    ECG streams only between a start command on the control point and a stop command or
    the end of the link, as on the real strap.
    """

    manufacturer = "Polar Electro Oy"
    model_number = "H10"
    firmware = "3.1.1"
    default_name = "Polar H10 {serial}"
    period = ECG_FRAME_SAMPLES / ECG_RATE_HZ

    def __init__(
        self,
        settings: BleSettings,
        scenario: str,
        clock: Clock,
        link_path: str,
        *,
        radio: VirtualRadio | None = None,
    ) -> None:
        super().__init__(settings, scenario, clock, link_path, radio=radio)
        self.serial = self.serial[:8]
        self.name = settings.name or f"Polar H10 {zlib.crc32(link_path.encode()):08X}"
        self._ecg = _ecg_source(self.scenario.name, self._rng.randrange(2**31))
        self._beats = _Beats(self._rng)
        self._hr_elapsed = 0.0
        self.streaming = False
        self.frames_sent = 0
        #: Device clock (ns since 2000-01-01) of the last sample sent.
        self._sensor_ns = int(clock.wall() * 1e9) - _POLAR_EPOCH_NS
        self.heart_rate = _heart_rate_characteristic()
        self.control_point: gatt.Characteristic[bytes] = gatt.Characteristic(
            bumble_uuid(uuids.PMD_CONTROL_POINT),
            gatt.Characteristic.Properties.READ
            | gatt.Characteristic.Properties.WRITE
            | gatt.Characteristic.Properties.INDICATE,
            gatt.Characteristic.READABLE | gatt.Characteristic.WRITEABLE,
            gatt.CharacteristicValue[bytes](read=lambda _c: _PMD_FEATURES, write=self._on_command),
        )
        self.data = gatt.Characteristic(
            bumble_uuid(uuids.PMD_DATA),
            gatt.Characteristic.Properties.NOTIFY,
            gatt.Characteristic.READABLE,
            b"",
        )

    def _profile_services(self) -> list[gatt.Service]:
        return [
            _heart_rate_service(self.heart_rate),
            gatt.Service(bumble_uuid(uuids.PMD_SERVICE), [self.control_point, self.data]),
        ]

    def _advertised(self) -> Sequence[str]:
        # The real H10 advertises only the heart-rate service; PMD is found on connecting.
        return [uuids.HEART_RATE_SERVICE]

    def _on_command(self, _connection: Connection, value: bytes) -> None:
        from drivers.ecg.polar_h10 import encode_pmd_control_response

        if len(value) < 2:
            status = 4  # invalid length
            opcode, kind = (value[0] if value else 0), 0
        else:
            opcode, kind = value[0], value[1]
            if kind != _PMD_ECG:
                status = 3  # not supported
            elif opcode == _PMD_START:
                status = 6 if self.streaming else 0  # already in state
                self.streaming = True
            elif opcode == _PMD_STOP:
                status = 0
                self.streaming = False
            else:
                status = 1  # invalid opcode
        response = encode_pmd_control_response(opcode, kind, status)
        if self.peripheral is not None:
            self._spawn(self.peripheral.indicate(self.control_point, response))

    def ecg_frame(self) -> bytes:
        """The next PMD ECG frame (type 0, 73 samples, microvolts)."""
        from drivers.ecg.polar_h10 import encode_pmd_ecg_frame

        samples_mv = self._ecg.read(ECG_FRAME_SAMPLES)
        if not self.sensor_on:
            samples_mv = np.zeros(ECG_FRAME_SAMPLES)
        microvolts = [int(v) for v in np.round(samples_mv * 1000.0)]
        self._sensor_ns += round(ECG_FRAME_SAMPLES * 1e9 / ECG_RATE_HZ)
        self.frames_sent += 1
        return encode_pmd_ecg_frame(self._sensor_ns, microvolts)

    async def _apply(self, elapsed: float, peripheral: VirtualPeripheral) -> None:
        await super()._apply(elapsed, peripheral)
        if not peripheral.connections:
            self.streaming = False  # a new connection must start the stream again

    async def _tick(self, elapsed: float, peripheral: VirtualPeripheral) -> None:
        if self.streaming:
            await peripheral.notify(self.data, self.ecg_frame())
        if elapsed - self._hr_elapsed >= 1.0:
            self._hr_elapsed = elapsed
            await peripheral.notify(self.heart_rate, self._heart_rate(elapsed))

    def _heart_rate(self, elapsed: float) -> bytes:
        intervals = self._beats.until(elapsed)
        # The H10 reports contact as "not supported" (protocols.md 2).
        return encode_heart_rate(
            round(_pulse_rate(elapsed, self._rng)), rr_intervals=intervals or None
        )
