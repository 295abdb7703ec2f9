"""GATT vocabulary shared by the BLE drivers: UUIDs, and how a payload is counted.

bleak names every service and characteristic by its full 128-bit UUID as a lower-case
string. Bluetooth SIG assigned numbers are 16-bit short forms of UUIDs on the SIG base
``0000xxxx-0000-1000-8000-00805f9b34fb`` (``protocols.md`` 1.1); :func:`uuid16` expands
them. The Polar PMD UUIDs are vendor 128-bit UUIDs (``protocols.md`` 3.1).

The codecs, the BLE transport and the simulated peripherals share these constants so a
UUID is spelled in exactly one place. A GATT notification is one whole frame, so every BLE
codec counts it the same way (:func:`tally`).
"""

from __future__ import annotations

from typing import Final

from drivers.readings import CodecCounters

#: The Bluetooth SIG base UUID with the 16-bit slot zeroed.
_SIG_BASE_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"


def uuid16(short: int) -> str:
    """The full lower-case 128-bit UUID of SIG assigned number ``short`` (0..0xFFFF).

    ``uuid16(0x2A5F) == "00002a5f-0000-1000-8000-00805f9b34fb"``.
    """
    if not 0 <= short <= 0xFFFF:
        raise ValueError(f"a 16-bit UUID must be 0..0xFFFF, got {short:#x}")
    return f"0000{short:04x}{_SIG_BASE_SUFFIX}"


def short_uuid(uuid: str) -> int | None:
    """The 16-bit assigned number of ``uuid`` if it is on the SIG base, else ``None``.

    Accepts any letter case; used to label captures and scan results.
    """
    text = uuid.lower()
    if len(text) != 36 or not text.startswith("0000") or not text.endswith(_SIG_BASE_SUFFIX):
        return None
    try:
        return int(text[4:8], 16)
    except ValueError:
        return None


# --- Pulse Oximeter Service (protocols.md 1.1) ---------------------------------------------
PLX_SERVICE: Final = uuid16(0x1822)
PLX_SPOT_CHECK: Final = uuid16(0x2A5E)  # indicate
PLX_CONTINUOUS: Final = uuid16(0x2A5F)  # notify
PLX_FEATURES: Final = uuid16(0x2A60)  # read
#: Record Access Control Point (stored spot-checks); its number is [U] in protocols.md 1.1.
RECORD_ACCESS_CONTROL_POINT: Final = uuid16(0x2A52)

# --- Heart Rate Service (protocols.md 2.1) -------------------------------------------------
HEART_RATE_SERVICE: Final = uuid16(0x180D)
HEART_RATE_MEASUREMENT: Final = uuid16(0x2A37)  # notify
BODY_SENSOR_LOCATION: Final = uuid16(0x2A38)  # read
HEART_RATE_CONTROL_POINT: Final = uuid16(0x2A39)  # write (energy reset only; never used)

# --- Device Information Service ------------------------------------------------------------
DEVICE_INFORMATION_SERVICE: Final = uuid16(0x180A)
MANUFACTURER_NAME: Final = uuid16(0x2A29)
MODEL_NUMBER: Final = uuid16(0x2A24)
SERIAL_NUMBER: Final = uuid16(0x2A25)
FIRMWARE_REVISION: Final = uuid16(0x2A26)

# --- Battery Service -----------------------------------------------------------------------
BATTERY_SERVICE: Final = uuid16(0x180F)
BATTERY_LEVEL: Final = uuid16(0x2A19)  # read, notify; uint8 percent 0..100

# --- Polar Measurement Data (protocols.md 3.1; vendor UUIDs) -------------------------------
PMD_SERVICE: Final = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
#: Write with response + indicate; reading it returns the feature bitmap.
PMD_CONTROL_POINT: Final = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
#: Notify: measurement data frames.
PMD_DATA: Final = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"

#: Human-readable names, for scan output, captures and logs.
NAMES: Final[dict[str, str]] = {
    PLX_SERVICE: "Pulse Oximeter",
    PLX_SPOT_CHECK: "PLX Spot-Check Measurement",
    PLX_CONTINUOUS: "PLX Continuous Measurement",
    PLX_FEATURES: "PLX Features",
    RECORD_ACCESS_CONTROL_POINT: "Record Access Control Point",
    HEART_RATE_SERVICE: "Heart Rate",
    HEART_RATE_MEASUREMENT: "Heart Rate Measurement",
    BODY_SENSOR_LOCATION: "Body Sensor Location",
    HEART_RATE_CONTROL_POINT: "Heart Rate Control Point",
    DEVICE_INFORMATION_SERVICE: "Device Information",
    MANUFACTURER_NAME: "Manufacturer Name String",
    MODEL_NUMBER: "Model Number String",
    SERIAL_NUMBER: "Serial Number String",
    FIRMWARE_REVISION: "Firmware Revision String",
    BATTERY_SERVICE: "Battery",
    BATTERY_LEVEL: "Battery Level",
    PMD_SERVICE: "Polar Measurement Data",
    PMD_CONTROL_POINT: "PMD Control Point",
    PMD_DATA: "PMD Data",
}


def tally(counters: CodecCounters, payload: bytes, decoded: bool) -> None:
    """Count one GATT payload in ``counters``: a decoded frame, or dropped whole."""
    counters.bytes_received += len(payload)
    if decoded:
        counters.frames_decoded += 1
    else:
        counters.bytes_dropped += len(payload)
