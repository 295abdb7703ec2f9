"""The CLI's Bluetooth LE commands: decode for every BLE driver, scan/capture errors.

Capture files are written from the drivers' own encoders (the bytes a device sends).
``scan --ble`` against real BlueZ runs too: this machine has no D-Bus, so it must fail
with the translated message and exit 1, never a traceback.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from drivers import gatt as uuids
from drivers.ble_capture import ble_capture_line
from drivers.ecg.heart_rate import encode_heart_rate
from drivers.ecg.polar_h10 import encode_pmd_control_response, encode_pmd_ecg_frame
from drivers.oximetry.plx import PlxDeviceStatus, encode_plx_continuous
from gateway.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main

T0 = 1_767_225_600.0


def write_capture(path: Path, lines: list[tuple[float, str, bytes]]) -> Path:
    path.write_text("".join(ble_capture_line(t, u, p) + "\n" for t, u, p in lines))
    return path


def decoded(capsys: pytest.CaptureFixture[str]) -> tuple[list[dict[str, object]], str]:
    out, err = capsys.readouterr()
    return [json.loads(line) for line in out.splitlines()], err


def test_decode_ble_plx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = write_capture(
        tmp_path / "plx.jsonl",
        [
            (T0, uuids.PLX_CONTINUOUS, encode_plx_continuous(97.0, 72.0)),
            (
                T0 + 1,
                uuids.PLX_CONTINUOUS,
                encode_plx_continuous(
                    float("nan"), float("nan"), device_status=PlxDeviceStatus.SENSOR_DISCONNECTED
                ),
            ),
            (T0 + 2, uuids.PLX_CONTINUOUS, b"\xff"),  # garbage: counted, not a crash
        ],
    )
    assert main(["decode", "--driver", "ble-plx", str(capture)]) == EXIT_OK
    readings, err = decoded(capsys)
    spo2 = [r for r in readings if r["code"] == "MDC_PULS_OXIM_SAT_O2"]
    assert [r["value"] for r in spo2] == [97.0, None]
    assert [r["t"] for r in spo2] == [T0, T0 + 1]
    events = [r for r in readings if r["type"] == "event"]
    assert [(e["condition"], e["active"]) for e in events] == [("sensor_off", True)]
    counters = json.loads(err.split("decode: ", 1)[1])
    assert counters["frames_decoded"] == 2 and counters["bytes_dropped"] == 1


def test_decode_ble_heart_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capture = write_capture(
        tmp_path / "hr.jsonl",
        [(T0, uuids.HEART_RATE_MEASUREMENT, encode_heart_rate(75, rr_intervals=[820, 804]))],
    )
    assert main(["decode", "--driver", "ble-heart-rate", str(capture)]) == EXIT_OK
    readings, _ = decoded(capsys)
    assert [r["value"] for r in readings if r["code"] == "MDC_ECG_HEART_RATE"] == [75.0]
    rr = [r["value"] for r in readings if r["code"] == "MDC_ECG_TIME_PD_RR_GL"]
    assert rr == [820 * 1000 / 1024, 804 * 1000 / 1024]


def test_decode_polar_h10(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    step = round(3 * 1e9 / 130)
    capture = write_capture(
        tmp_path / "h10.jsonl",
        [
            (T0, uuids.PMD_CONTROL_POINT, encode_pmd_control_response(2, 0, 0)),
            (T0 + 0.1, uuids.PMD_DATA, encode_pmd_ecg_frame(10**12, [100, -200, 300])),
            (T0 + 0.2, uuids.PMD_DATA, encode_pmd_ecg_frame(10**12 + step, [1, 2, 3])),
        ],
    )
    assert main(["decode", "--driver", "polar-h10", str(capture)]) == EXIT_OK
    readings, _ = decoded(capsys)
    waves = [r for r in readings if r["type"] == "waveform"]
    assert [w["value"] for w in waves] == [[0.1, -0.2, 0.3], [0.001, 0.002, 0.003]]
    assert [w["sequence"] for w in waves] == [0, 3]
    assert {w["sample_rate"] for w in waves} == {130.0}


def test_decode_refuses_serial_captures_for_ble_drivers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = tmp_path / "serial.jsonl"
    capture.write_text('{"t": 1.0, "rx": "01 02"}\n')
    assert main(["decode", "--driver", "ble-plx", str(capture)]) == EXIT_USAGE
    assert "serial.jsonl:1: not a BLE capture line" in capsys.readouterr().err
    assert main(["decode", "--driver", "ble-plx", "--raw", str(capture)]) == EXIT_USAGE
    assert main(["decode", "--driver", "ble-plx", str(tmp_path / "none")]) == EXIT_USAGE


def bluez_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(
            """
            [gateway]
            id = "ble-cli"
            data_dir = "state"

            [ble]
            backend = "bluez"

            [[beds]]
            id = "bed-1"

              [[beds.devices]]
              id = "ox"
              driver = "ble-plx"
              address = "A0:9E:1A:00:00:01"
            """
        )
    )
    return path


def test_scan_ble_on_a_machine_without_bluez_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = bluez_config(tmp_path)
    assert main(["scan", "--ble", "--seconds", "1", "--config", str(config)]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("scan: ") and "D-Bus" in err and "Traceback" not in err


def test_capture_ble_needs_a_ble_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = bluez_config(tmp_path)
    out = tmp_path / "c.jsonl"
    base = ["capture", "--ble", "A0:9E:1A:00:00:01", "--seconds", "1", "--out", str(out)]
    assert main([*base, "--config", str(config)]) == EXIT_USAGE
    assert "--ble needs --driver, one of: ble-heart-rate, ble-plx, polar-h10" in (
        capsys.readouterr().err
    )
    assert main([*base, "--driver", "nonin", "--config", str(config)]) == EXIT_USAGE
    assert "nonin is not a BLE driver" in capsys.readouterr().err


def test_config_rejects_a_simulated_ble_device_without_the_virtual_radio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bluez_config(tmp_path)
    path.write_text(
        path.read_text().replace('address = "A0:9E:1A:00:00:01"', 'simulate = "normal"')
    )
    assert main(["check-config", "--config", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "beds[0].devices[0].simulate: a simulated BLE device needs the virtual radio" in err
    assert '[ble] backend = "virtual"' in err
    path.write_text(path.read_text().replace('backend = "bluez"', 'backend = "radio"'))
    assert main(["check-config", "--config", str(path)]) == EXIT_USAGE
    assert "ble.backend" in capsys.readouterr().err
