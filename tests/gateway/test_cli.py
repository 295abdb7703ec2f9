"""The bedside-gateway command, run as a subprocess, as a technician would."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

# protocols.md section 4a: one real DF2 packet from a Nonin 9560 (25 frames, SYNC first).
DF2_PACKET = (
    "01 81 43 00 C5 01 80 43 4A 0E 01 80 43 60 24 01 80 43 94 58 01 80 43 00 C4 "
    "01 80 41 00 C2 01 80 3E 17 D6 01 80 3C 04 C1 01 80 39 60 1A 01 80 36 60 17 "
    "01 80 35 60 16 01 80 34 00 B5 01 80 34 00 B5 01 80 34 00 B5 01 80 35 4A 00 "
    "01 80 36 60 17 01 80 37 60 18 01 80 3A 00 BB 01 80 40 00 C1 01 80 4A 00 CB "
    "01 80 57 4A 22 01 80 69 00 EA 01 80 7C 4A 47 01 80 90 00 11 01 80 A1 00 22"
)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=timeout
    )


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip().startswith("bedside-gateway 0.")


def test_help_explains_each_command() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("run", "check-config", "decode", "status"):
        assert f"  {command}" in result.stdout
    for command in ("run", "check-config", "decode", "status"):
        sub = cli(command, "--help")
        assert sub.returncode == 0 and "usage: bedside-gateway" in sub.stdout


def test_no_command_prints_help_and_exits_2() -> None:
    result = cli()
    assert result.returncode == 2 and "commands:" in result.stdout


def write_capture(path: Path, chunks: list[bytes], t0: float = 1_767_225_600.0) -> Path:
    lines = [json.dumps({"t": t0 + i * 0.1, "rx": c.hex(" ")}) for i, c in enumerate(chunks)]
    path.write_text("\n".join(lines) + "\n")
    return path


def readings(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_decode_a_capture_to_json_lines(tmp_path: Path) -> None:
    packet = bytes.fromhex(DF2_PACKET)
    noisy = [b"\xff\x00garbage", packet[:40], packet[40:], packet]
    capture = write_capture(tmp_path / "ox.jsonl", noisy)
    result = cli("decode", "--driver", "nonin", "--set", "data_format=2", str(capture))
    assert result.returncode == 0, result.stderr
    out = readings(result.stdout)
    numerics = {(r["code"], r["value"], r["unit"]) for r in out if r["type"] == "numeric"}
    assert ("MDC_PULS_OXIM_SAT_O2", 96, "%") in numerics
    assert ("MDC_PULS_OXIM_PULS_RATE", 74, "/min") in numerics
    waves = [r for r in out if r["type"] == "waveform"]
    assert len(waves) == 2 and waves[0]["value"][:3] == [0x43, 0x43, 0x43]
    assert waves[0]["code"] == "MDC_PULS_OXIM_PLETH" and waves[0]["sample_rate"] == 75.0
    assert all({"type", "code", "value", "unit", "t"} <= set(r) for r in out)
    counters = json.loads(result.stderr.split("decode: ", 1)[1])
    assert counters["frames_decoded"] == 50
    assert counters["bytes_dropped"] >= len(b"\xff\x00garbage")


def test_decode_raw_binary(tmp_path: Path) -> None:
    raw = tmp_path / "ox.bin"
    raw.write_bytes(bytes.fromhex(DF2_PACKET) * 3)
    result = cli("decode", "--driver", "nonin", "--set", "data_format=2", "--raw", str(raw))
    assert result.returncode == 0, result.stderr
    spo2 = [r for r in readings(result.stdout) if r["code"] == "MDC_PULS_OXIM_SAT_O2"]
    assert [r["value"] for r in spo2] == [96, 96, 96]
    assert spo2[1]["t"] > spo2[0]["t"]  # raw chunks are timed by the line rate


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--driver", "nope"), "unknown driver 'nope'"),
        (("--driver", "nonin", "--set", "data_format=5"), "--set data_format:"),
        (("--driver", "nonin", "--set", "colour=red"), "--set colour:"),
        (("--driver", "nonin", "--set", "justakey"), "expected KEY=VALUE"),
    ],
)
def test_decode_bad_arguments_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    capture = write_capture(tmp_path / "c.jsonl", [b"\x01"])
    result = cli("decode", *args, str(capture))
    assert result.returncode == 2
    assert message in result.stderr


def test_decode_bad_capture_line_names_the_line(tmp_path: Path) -> None:
    capture = tmp_path / "bad.jsonl"
    capture.write_text('{"t": 1, "rx": "01"}\n{"t": 2, "rx": "zz"}\n')
    result = cli("decode", "--driver", "nonin", str(capture))
    assert result.returncode == 2
    assert "bad.jsonl:2" in result.stderr


def test_status_without_a_daemon_exits_2() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli("status", "--url", f"http://127.0.0.1:{port}")
    assert result.returncode == 2  # 0 healthy, 1 degraded, 2 cannot reach the daemon
    assert "no gateway answering" in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_line_with_timeout(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    remaining = deadline - time.monotonic()
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, remaining))
    if not ready:
        raise AssertionError("daemon printed nothing in time")
    return proc.stdout.readline()


def test_run_serves_the_ward_then_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [gateway]
            id = "cli-test"
            listen = "127.0.0.1:{port}"
            simulation = true

            [[beds]]
            id = "bed-1"
            label = "Bed 1"
              [beds.patient]
              name = "Quentin Markerman"
              mrn = "MRN-MARKER-42"
              birth_date = 1933-03-03
              [[beds.devices]]
              id = "ox-1"
              driver = "nonin"
              simulate = "normal"
            """
        )
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        logged: list[dict[str, Any]] = []
        while not any(r.get("event") == "gateway ready" for r in logged):
            line = read_line_with_timeout(proc, deadline)
            assert line, f"daemon exited: {proc.stderr.read() if proc.stderr else ''}"
            logged.append(json.loads(line))  # JSON lines by default
        assert (tmp_path / "var").is_dir()  # data_dir defaults to var/ beside the config

        # Wait for the simulated SpO2 on the push stream (bounded by the socket timeout).
        stream = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stream", timeout=15)
        seen, event = None, ""
        for raw in stream:
            text = raw.decode()
            if text.startswith("event:"):
                event = text[6:].strip()
            elif text.startswith("data:") and event == "beds":
                beds = json.loads(text[5:])
                vital = beds[0]["vitals"].get("MDC_PULS_OXIM_SAT_O2")
                if vital and vital["value"] is not None and not vital["stale"]:
                    seen = vital
                    break
        stream.close()
        assert seen is not None and 90 <= seen["value"] <= 100

        status = cli("status", "--config", str(config))
        assert status.returncode == 0, status.stderr
        assert "Bed 1 [bed-1]: SpO2 " in status.stdout
        assert "ox-1 (nonin): connected" in status.stdout

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5.0
        # The demo stored what it showed, and the patient is not readable in any file.
        assert any(r.get("event", "").startswith("created a demo key") for r in logged)
        files = list((tmp_path / "var").glob("twin.sqlite*"))
        assert files and (tmp_path / "var" / "twin.sqlite").stat().st_size > 0
        for f in files:
            data = f.read_bytes()
            for marker in (b"Quentin Markerman", b"MRN-MARKER-42", b"1933-03-03"):
                assert marker not in data, (f.name, marker)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_run_on_a_taken_port_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.toml"
        config.write_text(
            f'[gateway]\nid = "x"\nlisten = "127.0.0.1:{port}"\nsimulation = true\n'
            '[[beds]]\nid = "b"\n'
        )
        result = cli("run", "--config", str(config), timeout=30)
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr


def test_scan_lists_ports_as_json() -> None:
    result = cli("scan", "--serial", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert isinstance(report["ports"], list)
    for port in report["ports"]:
        assert {"port", "by_id", "usb", "serial_number", "adapter", "drivers"} <= set(port)


def test_scan_probe_of_a_missing_port_says_it_cannot_listen(tmp_path: Path) -> None:
    absent = str(tmp_path / "ttyUSB9")
    result = cli("scan", "--probe", "--port", absent, "--seconds", "0.1")
    assert result.returncode == 0, result.stderr
    assert f"probe {absent} at 9600 8N1: nonin (data_format=7): cannot listen" in result.stdout
    assert "RECOGNISED" not in result.stdout


def test_capture_from_a_missing_port_exits_1_and_bad_seconds_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl"
    missing = cli("capture", "--port", str(tmp_path / "nope"), "--seconds", "1", "--out", str(out))
    assert missing.returncode == 1 and "nope" in missing.stderr
    zero = cli("capture", "--port", "/dev/null", "--seconds", "0", "--out", str(out))
    assert zero.returncode == 2 and "--seconds must be positive" in zero.stderr
