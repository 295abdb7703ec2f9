"""Ward-scale benchmark: what one gateway process costs for 1 to 16 (32) beds, device to page.

For each ward size N the bench starts, each as its own process:

* ``bench/ward_sim.py``: every simulated device of the ward (the project's own simulators,
  real wire bytes) over the real transports: per bed a Nonin DF7 oximeter (SpO2, pulse
  rate, 75 Hz pleth) on a pty, an OpenBCI Cyton ECG (lead II, 500 Hz) on a pty, and an
  infusion pump over Modbus, TCP on odd beds (one pymodbus server each) and RTU on even
  beds (pymodbus RTU servers behind joined ptys, up to 8 pumps to a line, 115200 8N1);
* ``mosquitto`` on 127.0.0.1, the sync destination (MQTT, numerics, events, alarms);
* the daemon itself, ``python -m gateway run --config ward.toml``, with everything on:
  encrypted store, ECG and pleth analysis, alarms, the page, sync;
* one headless Chromium (selenium, /usr/bin/chromedriver) showing the ward page.

Every ``--ble-every``-th bed (default 4th) wears a Polar H10 chest strap instead of the
Cyton: 130 Hz ECG over the virtual BLE radio (``[ble] backend = "virtual"``, bumble). That
radio is one bumble link inside the daemon's event loop by design (bumble's LocalLink has
no inter-process form), so those straps' simulated peripherals and the radio itself run in
the daemon and are counted in its cost: an overestimate for BLE beds (with BlueZ the radio
work is in bluetoothd and the controller).

Measured over ``--seconds`` per N, after the devices are connected and the page is open:

* CPU: the daemon's utime + stime from /proc/<pid>/stat (all its threads), as % of one core;
* RSS: the daemon's VmHWM (peak resident set) from /proc/<pid>/status, MiB;
* latency, device byte to page: each oximeter steps its SpO2 through plateaus 4 % or more
  apart every 2 s; the simulator logs the wall time right after writing the first packet
  of a new plateau into the pty; in the browser a MutationObserver sees the bed tile's SpO2
  text change and stamps ``Date.now()`` at the next animation frame (when it is painted).
  Same machine, same clock. Latency = painted - written, per plateau change;
* dropped: codec bytes dropped and checksum errors, hub shed readings and store drops, from
  /metrics (window deltas), and decoded frames against what the simulators send;
* sync lag: ``oldest_unsent_age`` from GET /api/sync, sampled every second (max, mean).

Then the cost per bed (least-squares line through the sweep) and a plot of CPU and latency
against N (``--plot``). ``--profile`` also runs the daemon under cProfile at the largest N
that ran (the figures of that run are inflated by the profiler and are not reported) and
prints where its main thread's time goes. A size the gateway refuses (it takes at most 16
beds) is reported as refused. ``--nice`` (default -10) raises the ward's scheduling group
so that other work on a shared machine does not starve it; CPU time does not depend on it.

    .venv/bin/python bench/ward.py [--beds 1,4,8,12,16,32] [--seconds 45] \
        [--plot docs/img/ward.png] [--json FILE] [--profile] [--ecg-rate 500] [--ble-every 4]

Results and method: docs/BENCHMARKS.md, "Ward at scale".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from selenium import webdriver  # noqa: E402

from bench.ward_sim import PLATEAU_S  # noqa: E402
from tests.support.broker import mosquitto  # noqa: E402
from tests.support.browser import start_browser  # noqa: E402

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
H10_RATE_HZ: Final = 130
RTU_PUMPS_PER_LINE: Final = 8
#: Nonin DF7 frames per second.
NONIN_FRAMES_PER_S: Final = 75.0
#: Stamps each change of a tile's SpO2 text: when the DOM changed and when it is painted.
OBSERVER: Final = """
window.spo2Shown = [];
new MutationObserver((records) => {
  const changed = Date.now() / 1000;
  for (const r of records) {
    const el = r.target.nodeType === Node.TEXT_NODE ? r.target.parentElement : r.target;
    if (!el || !el.matches || !el.matches('.value[data-code="MDC_PULS_OXIM_SAT_O2"]')) continue;
    const tile = el.closest('[data-bed]');
    if (!tile) continue;
    const entry = {bed: tile.dataset.bed, v: el.textContent, dom: changed};
    requestAnimationFrame(() => { entry.t = Date.now() / 1000; window.spo2Shown.push(entry); });
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


# -- the ward ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Shape:
    """What each bed carries: ``ble_every``-th beds (0: none) wear a Polar H10 instead of
    the Cyton, whose ECG runs at ``ecg_rate`` Hz (one lead, 0.1 s chunks)."""

    ble_every: int = 4
    ecg_rate: int = 500

    def is_ble_bed(self, bed: int) -> bool:
        return self.ble_every > 0 and bed % self.ble_every == 0


def plan_ward(beds: int, shape: Shape, folder: Path, mqtt_port: int) -> tuple[str, dict[str, Any]]:
    """The daemon's config.toml text and the simulator process's plan for ``beds`` beds."""
    sim = folder / "sim"
    plan: dict[str, Any] = {
        "marks": str(folder / "marks.jsonl"),
        "serial": [],
        "tcp": [],
        "rtu": [],
    }
    toml = [
        "[gateway]",
        'id = "ward-bench"',
        f'data_dir = "{folder / "state"}"',
        f'listen = "127.0.0.1:{free_port()}"',
        "simulation = true  # the run makes its own demo key; patients are fake",
        "[alarms]",
        'sound = "none"',
        "[ble]",
        'backend = "virtual"',
        "[[destinations]]",
        'name = "mqtt-local"',
        'protocol = "mqtt"',
        'host = "127.0.0.1"',
        f"port = {mqtt_port}",
        "tls = false",
    ]
    rtu_lines: list[dict[str, Any]] = []
    for bed in range(1, beds + 1):
        bid = f"bed-{bed}"
        toml += [
            "[[beds]]",
            f'id = "{bid}"',
            f'label = "Bed {bed}"',
            "[beds.patient]",
            f'name = "Bench Patient {bed}"',
            f'mrn = "BENCH-{bed:04d}"',
            'birth_date = "1970-01-01"',
            # Oximeter: serial, its simulator in the other process.
            "[[beds.devices]]",
            f'id = "{bid}-spo2"',
            'driver = "nonin"',
            f'port = "{sim / f"{bid}-spo2"}"',
        ]
        plan["serial"].append(
            {
                "driver": "nonin",
                "link": str(sim / f"{bid}-spo2"),
                "settings": {"data_format": 7},
                "mark_bed": bid,
                "offset": (bed - 1) * PLATEAU_S / max(1, beds),
            }
        )
        if shape.is_ble_bed(bed):
            toml += ["[[beds.devices]]", f'id = "{bid}-ecg"', 'driver = "polar-h10"']
            toml += ['simulate = "normal"  # on the in-daemon virtual radio']
        else:
            ecg = {
                "sample_rate": shape.ecg_rate,
                "chunk_samples": shape.ecg_rate // 10,
                "baudrate": 230400,
            }
            toml += [
                "[[beds.devices]]",
                f'id = "{bid}-ecg"',
                'driver = "openbci-cyton"',
                f'port = "{sim / f"{bid}-ecg"}"',
                *(f"{k} = {v}" for k, v in ecg.items()),
            ]
            plan["serial"].append(
                {
                    "driver": "openbci-cyton",
                    "link": str(sim / f"{bid}-ecg"),
                    "settings": ecg,
                    "scenario": "normal",
                }
            )
        toml += ["[[beds.devices]]", f'id = "{bid}-pump"']
        if bed % 2:
            port = free_port()
            toml += ['driver = "modbus-pump-tcp"', 'host = "127.0.0.1"', f"port = {port}"]
            toml += ["unit = 1"]
            plan["tcp"].append(
                {"port": port, "pumps": [{"settings": {"unit": 1}, "scenario": "normal"}]}
            )
        else:
            if not rtu_lines or len(rtu_lines[-1]["pumps"]) == RTU_PUMPS_PER_LINE:
                link = str(sim / f"rtu-{len(rtu_lines) + 1}")
                rtu_lines.append({"link": link, "baudrate": 115200, "pumps": []})
            line = rtu_lines[-1]
            unit = len(line["pumps"]) + 1
            toml += [
                'driver = "modbus-pump-rtu"',
                f'port = "{line["link"]}"',
                f"unit = {unit}",
                "baudrate = 115200",
                'parity = "N"  # ptys carry no parity',
            ]
            line["pumps"].append(
                {
                    "settings": {"unit": unit, "baudrate": 115200, "parity": "N"},
                    "scenario": "normal",
                }
            )
    plan["rtu"] = rtu_lines
    return "\n".join(toml) + "\n", plan


# -- sampling --------------------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of process ``pid`` (all threads), or of its thread ``tid``,
    seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak), RssAnon (heap: the process's own) and RssFile (mapped files:
    code and shared libraries) of ``pid``, KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            found[key] = int(value.split()[0])
    return found


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def metrics(base: str) -> dict[str, float]:
    """/metrics summed by (name, driver) for the counters the bench reports."""
    totals: dict[str, float] = {}
    text = get(base + "/metrics").decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            key = sample.name
            if "driver" in sample.labels:
                key += ":" + sample.labels["driver"]
            totals[key] = totals.get(key, 0.0) + sample.value
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def devices_down(base: str) -> tuple[list[str], int]:
    """(devices whose link is not up, configured devices), from /metrics."""
    down: list[str] = []
    total = 0
    for family in text_string_to_metric_families(get(base + "/metrics").decode()):
        if family.name == "bedside_device_connected":
            for sample in family.samples:
                total += 1
                if sample.value != 1:
                    down.append(sample.labels["device"])
    return down, total


def locked_ports(links: list[str]) -> list[str]:
    """The links whose pty another process holds under flock, with who holds it: the daemon
    could not open them. (Seen here: an orphaned daemon of another run retrying a stale
    symlink to /dev/pts/N takes the new pty that reuses N.)"""
    holders: dict[int, str] = {}
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK":
            holders[int(parts[5].rsplit(":", 1)[1])] = parts[4]
    found: list[str] = []
    for link in links:
        with contextlib.suppress(OSError):
            inode = os.stat(link).st_ino
            if inode in holders:
                pid = holders[inode]
                with contextlib.suppress(OSError):
                    pid += " " + Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
                found.append(f"{link} -> {os.path.realpath(link)} locked by pid {pid}")
    return found


@contextlib.contextmanager
def process(args: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, stopped with SIGTERM (then SIGKILL after 15 s) when the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, **kwargs)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_for(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Poll ``check()`` until true; fail if ``proc`` exits or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        time.sleep(1.0)
    raise RuntimeError(f"{what}: not within {timeout:.0f} s")


# -- one ward size ---------------------------------------------------------------------------


class Refused(Exception):
    """The daemon refused the ward's configuration (exit 2); the message says why."""


@dataclass
class Run:
    """What one ward size measured."""

    beds: int
    seconds: float
    cpu_percent: float
    loop_cpu_percent: float
    cpu_p95_1s: float
    rss_peak_mib: float
    rss_end_mib: float
    rss_anon_mib: float
    rss_file_mib: float
    latencies_ms: list[float]
    marks: int
    unmatched: int
    dropped: dict[str, float]
    frames_ratio: dict[str, float]
    sync_lag_max: float | None
    sync_lag_mean: float | None
    sim_cpu_percent: float
    load_before: str
    devices: tuple[int, int]
    notes: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def read_marks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def match_latencies(
    marks: list[dict[str, Any]], shown: list[dict[str, Any]], start: float, end: float
) -> tuple[list[float], int, int]:
    """Latency (ms) of each plateau change written in [start, end): written -> painted.

    A change is shown by the first paint of that bed's SpO2 within 1 % of the new plateau
    after it was written and before the bed's next change. Returns (latencies, changes,
    changes never seen on the page).
    """
    by_bed: dict[str, list[dict[str, Any]]] = {}
    for mark in sorted(marks, key=lambda m: m["t"]):
        by_bed.setdefault(mark["bed"], []).append(mark)
    paints: dict[str, list[tuple[float, float]]] = {}
    for entry in shown:
        with contextlib.suppress(KeyError, ValueError, TypeError):
            paints.setdefault(entry["bed"], []).append((entry["t"], float(entry["v"])))
    latencies: list[float] = []
    counted = unmatched = 0
    for bed, bed_marks in by_bed.items():
        for i, mark in enumerate(bed_marks):
            if not start <= mark["t"] < end:
                continue
            counted += 1
            limit = bed_marks[i + 1]["t"] if i + 1 < len(bed_marks) else math.inf
            seen = [
                t
                for t, v in paints.get(bed, [])
                if mark["t"] <= t < limit and abs(v - mark["value"]) <= 1.0
            ]
            if seen:
                latencies.append((min(seen) - mark["t"]) * 1000)
            else:
                unmatched += 1
    return latencies, counted, unmatched


def measure(beds: int, seconds: float, shape: Shape, profile_to: Path | None) -> Run:
    """Start the ward of ``beds`` beds, measure for ``seconds``, stop everything."""
    with tempfile.TemporaryDirectory(prefix="ward-bench-") as tmp:
        folder = Path(tmp)
        with mosquitto(folder / "mqtt") as mqtt_port:
            config_text, plan = plan_ward(beds, shape, folder, mqtt_port)
            config = folder / "ward.toml"
            config.write_text(config_text)
            plan_file = folder / "plan.json"
            plan_file.write_text(json.dumps(plan))
            sim_args = [sys.executable, str(REPO / "bench" / "ward_sim.py"), str(plan_file)]
            with process(sim_args, folder / "sim.log") as sim:
                wait_for(
                    "simulators", lambda: b"ready" in (folder / "sim.log").read_bytes(), 60, sim
                )
                ptys = [d["link"] for d in plan["serial"]] + [r["link"] for r in plan["rtu"]]
                if taken := locked_ports(ptys):
                    raise RuntimeError("ports held by another process:\n" + "\n".join(taken))
                daemon_args = [sys.executable]
                if profile_to is not None:
                    daemon_args += ["-m", "cProfile", "-o", str(profile_to)]
                daemon_args += ["-m", "gateway", "run", "--config", str(config)]
                daemon_args += [
                    "--log-format",
                    "console",
                    "--log-level",
                    os.environ.get("WARD_LOG", "warning"),
                ]
                with process(daemon_args, folder / "daemon.log") as daemon:
                    listen = next(x for x in config_text.splitlines() if x.startswith("listen"))
                    base = "http://" + listen.split('"')[1]
                    try:
                        wait_for("devices", lambda: not devices_down(base)[0], 60, daemon)
                    except RuntimeError:
                        if daemon.poll() == 2:  # the configuration was refused: say why
                            raise Refused((folder / "daemon.log").read_text().strip()) from None
                        with contextlib.suppress(OSError, ValueError):
                            print(f"not connected: {devices_down(base)[0]}", file=sys.stderr)
                        keep = Path(tempfile.mkdtemp(prefix="ward-failed-"))
                        for name in ("daemon.log", "sim.log", "ward.toml"):
                            shutil.copy(folder / name, keep / name)
                        print(f"logs kept in {keep}", file=sys.stderr)
                        raise
                    browser = start_browser(folder / "chromium", OBSERVER, window="1600,1000")
                    try:
                        browser.get(base + "/")
                        time.sleep(5.0)  # page loaded, stores past their first commits
                        return sample(
                            beds, seconds, base, daemon.pid, sim.pid, browser, folder, shape
                        )
                    finally:
                        browser.quit()
                        if daemon.poll() is not None:
                            print((folder / "daemon.log").read_text()[-3000:], file=sys.stderr)
    raise AssertionError("unreachable")


def sample(
    beds: int,
    seconds: float,
    base: str,
    pid: int,
    sim_pid: int,
    browser: webdriver.Chrome,
    folder: Path,
    shape: Shape,
) -> Run:
    """The measurement window: /proc every second, /api/sync every second, /metrics at
    both ends, the page's paints and the simulators' marks at the end."""
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    before = metrics(base)
    loop0 = cpu_seconds(pid, pid)  # the main thread runs the event loop
    cpu0, sim0, wall0 = cpu_seconds(pid), cpu_seconds(sim_pid), time.time()
    per_second: list[float] = []
    rss: list[int] = []
    lags: list[float] = []
    last_cpu, last_wall = cpu0, time.monotonic()
    while time.time() - wall0 < seconds:
        time.sleep(1.0)
        cpu, now = cpu_seconds(pid), time.monotonic()
        per_second.append(100 * (cpu - last_cpu) / (now - last_wall))
        last_cpu, last_wall = cpu, now
        rss.append(memory_kib(pid)["VmRSS"])
        with contextlib.suppress(OSError, ValueError):
            for dest in json.loads(get(base + "/api/sync"))["destinations"]:
                if dest.get("oldest_unsent_age") is not None:
                    lags.append(float(dest["oldest_unsent_age"]))
                else:
                    lags.append(0.0)
    cpu1, sim1, wall1 = cpu_seconds(pid), cpu_seconds(sim_pid), time.time()
    loop1 = cpu_seconds(pid, pid)
    memory = memory_kib(pid)
    after = metrics(base)
    down, total = devices_down(base)
    shown = browser.execute_script("return window.spo2Shown;") or []
    marks = read_marks(folder / "marks.jsonl")
    # Marks written in the last second may not be painted yet; leave them out.
    latencies, counted, unmatched = match_latencies(marks, shown, wall0, wall1 - 1.0)
    wall = wall1 - wall0

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    dropped = {
        "codec_bytes": delta("bedside_device_bytes_dropped_total"),
        "checksum_errors": delta("bedside_device_checksum_errors_total"),
        "hub_shed": delta("bedside_hub_shed_total"),
        "store_dropped": delta("bedside_store_dropped_total"),
    }
    frames_ratio: dict[str, float] = {}
    serial_ecg = sum(1 for x in range(1, beds + 1) if not shape.is_ble_bed(x))
    for driver, sent in (
        ("nonin", beds * NONIN_FRAMES_PER_S),
        ("openbci-cyton", serial_ecg * float(shape.ecg_rate)),
    ):
        if sent:
            got = delta(f"bedside_device_frames_decoded_total:{driver}")
            frames_ratio[driver] = got / (sent * wall)
    return Run(
        beds=beds,
        seconds=wall,
        cpu_percent=100 * (cpu1 - cpu0) / wall,
        loop_cpu_percent=100 * (loop1 - loop0) / wall,
        cpu_p95_1s=sorted(per_second)[max(0, math.ceil(0.95 * len(per_second)) - 1)],
        rss_peak_mib=memory["VmHWM"] / 1024,
        rss_end_mib=memory["VmRSS"] / 1024,
        rss_anon_mib=memory["RssAnon"] / 1024,
        rss_file_mib=memory["RssFile"] / 1024,
        latencies_ms=latencies,
        marks=counted,
        unmatched=unmatched,
        dropped=dropped,
        frames_ratio=frames_ratio,
        sync_lag_max=max(lags) if lags else None,
        sync_lag_mean=statistics.fmean(lags) if lags else None,
        sim_cpu_percent=100 * (sim1 - sim0) / wall,
        load_before=" ".join(load_before),
        devices=(total - len(down), total),
    )


# -- the sweep -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """Least-squares line ``value = intercept + slope * beds`` and its R^2."""

    intercept: float
    slope: float
    r2: float


def fit_line(xs: list[float], ys: list[float]) -> Fit | None:
    if len(xs) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    total = sum((y - my) ** 2 for y in ys)
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return Fit(intercept, slope, 1.0 - residual / total if total else 1.0)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} vCPU ({model}), {mem_kib / 1024**2:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def table(runs: list[Run]) -> str:
    rows = [
        "| beds | CPU % of one core (1 s p95) | event-loop thread % "
        "| peak RSS MiB (end: heap + files) "
        "| latency p50 / p99 ms (n) | not painted "
        "| dropped: codec B / checksum / hub shed / store | frames got/sent (oximeter, ECG)"
        " | sync lag max / mean s | simulators' CPU % | load before |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        d = r.dropped
        frames = ", ".join(f"{v:.3f}" for v in r.frames_ratio.values())
        rows.append(
            f"| {r.beds} | {r.cpu_percent:.1f} ({r.cpu_p95_1s:.0f}) | {r.loop_cpu_percent:.1f} "
            f"| {r.rss_peak_mib:.0f} "
            f"({r.rss_anon_mib:.0f} + {r.rss_file_mib:.0f}) "
            f"| {fmt(r.percentile(50), 0)} / {fmt(r.percentile(99), 0)} ({len(r.latencies_ms)}) "
            f"| {r.unmatched}/{r.marks} "
            f"| {d['codec_bytes']:.0f} / {d['checksum_errors']:.0f} / {d['hub_shed']:.0f} / "
            f"{d['store_dropped']:.0f} | {frames} "
            f"| {fmt(r.sync_lag_max)} / {fmt(r.sync_lag_mean)} | {r.sim_cpu_percent:.0f} "
            f"| {r.load_before} |"
        )
    return "\n".join(rows)


def plot(runs: list[Run], cpu_fit: Fit | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    beds = [r.beds for r in runs]
    fig, (ax_cpu, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_cpu.plot(beds, [r.cpu_percent for r in runs], "o-", label="daemon CPU")
    if cpu_fit is not None:
        xs = [0, max(beds)]
        ax_cpu.plot(
            xs,
            [cpu_fit.intercept + cpu_fit.slope * x for x in xs],
            "--",
            color="grey",
            label=f"fit {cpu_fit.intercept:.1f} + {cpu_fit.slope:.2f}/bed (R² {cpu_fit.r2:.3f})",
        )
    ax_cpu.plot([16], [25], "rx", markersize=10, label="target: 16 beds < 25 %")
    ax_cpu.set_xlabel("beds")
    ax_cpu.set_ylabel("% of one core")
    ax_cpu.set_title("Gateway daemon CPU")
    ax_cpu.grid(alpha=0.3)
    ax_cpu.legend(fontsize=8)
    ax_lat.plot(beds, [r.percentile(50) for r in runs], "o-", label="p50")
    ax_lat.plot(beds, [r.percentile(99) for r in runs], "s-", label="p99")
    ax_lat.set_xlabel("beds")
    ax_lat.set_ylabel("ms")
    ax_lat.set_title("SpO2: device byte to painted page")
    ax_lat.grid(alpha=0.3)
    ax_lat.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def show_profile(path: Path, top: int = 30) -> None:
    stats = pstats.Stats(str(path))
    print(f"\ncProfile of the daemon's main thread (event loop), top {top} by own time:")
    stats.sort_stats("tottime").print_stats(top)
    print(f"top {top} by cumulative time:")
    stats.sort_stats("cumulative").print_stats(top)


@contextlib.contextmanager
def scheduling_priority(nice: int) -> Iterator[None]:
    """Run the block with this session's scheduling group at ``nice`` (then restore it).

    Linux with autogroups schedules sessions against each other first and only then the
    processes within each: a process's own niceness does not help it against other
    sessions' work. The daemon, simulators, broker and browser all inherit this session, so
    the whole ward is raised together. Negative values need root (or CAP_SYS_NICE).
    """
    group = Path("/proc/self/autogroup")
    before: str | None = None
    if nice and group.exists():
        try:
            before = group.read_text().split()[-1]
            group.write_text(str(nice))
            print(f"ward scheduled at autogroup nice {nice} (was {before})")
        except (OSError, IndexError) as exc:
            print(f"cannot raise the ward's priority ({exc}); running unchanged")
            before = None
    try:
        yield
    finally:
        if before is not None:
            with contextlib.suppress(OSError):
                group.write_text(before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", default="1,4,8,12,16,32", help="ward sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=45.0, help="measured seconds per size")
    parser.add_argument(
        "--ble-every", type=int, default=4, help="every Kth bed's ECG is a BLE strap (0: none)"
    )
    parser.add_argument(
        "--ecg-rate", type=int, default=500, help="Cyton ECG sample rate, Hz (250 or 500)"
    )
    parser.add_argument("--plot", type=Path, help="write CPU and latency against beds (PNG)")
    parser.add_argument("--json", type=Path, help="write every run's figures as JSON")
    parser.add_argument(
        "--profile", action="store_true", help="then profile the daemon at the largest size"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="run the ward at this niceness (needs root below 0; 0: unchanged) so other work "
        "on a shared machine does not starve it",
    )
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.beds.split(",") if x.strip()]
    if not sizes or min(sizes) < 1 or args.seconds <= 0 or args.ble_every < 0:
        parser.error("--beds needs whole numbers >= 1, --seconds > 0, --ble-every >= 0")
    if args.ecg_rate not in (250, 500):
        parser.error("--ecg-rate: 250 or 500 (what the Cyton streams over a serial link)")
    shape = Shape(ble_every=args.ble_every, ecg_rate=args.ecg_rate)
    for tool in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(tool).exists():
            parser.error(f"{tool} is missing (Debian packages chromium, chromium-driver)")
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        parser.error("mosquitto is missing (Debian package mosquitto)")
    print(f"command: .venv/bin/python bench/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}")
    print(f"machine: {machine()}")
    print(f"load average at start: {Path('/proc/loadavg').read_text().strip()}")
    runs: list[Run] = []
    refused: dict[int, str] = {}
    with scheduling_priority(args.nice):
        for beds in sizes:
            try:
                run = measure(beds, args.seconds, shape, None)
            except Refused as exc:
                refused[beds] = str(exc)
                print(f"{beds:3d} beds: refused by the gateway: {exc}", flush=True)
                continue
            runs.append(run)
            print(
                f"{beds:3d} beds: CPU {run.cpu_percent:5.1f} % (event-loop thread "
                f"{run.loop_cpu_percent:.1f})  RSS peak {run.rss_peak_mib:5.0f} MiB  latency "
                f"p50 {fmt(run.percentile(50), 0)} p99 {fmt(run.percentile(99), 0)} ms "
                f"(n={len(run.latencies_ms)}, not painted {run.unmatched})  "
                f"devices {run.devices[0]}/{run.devices[1]}  sim CPU {run.sim_cpu_percent:.0f} %",
                flush=True,
            )
        profile = Path(tempfile.mkdtemp(prefix="ward-profile-")) / "daemon.prof"
        if args.profile and runs:
            measure(max(r.beds for r in runs), args.seconds, shape, profile)
    xs = [float(r.beds) for r in runs]
    cpu_fit = fit_line(xs, [r.cpu_percent for r in runs])
    rss_fit = fit_line(xs, [r.rss_peak_mib for r in runs])
    print()
    print(table(runs))
    for beds, why in refused.items():
        print(f"{beds} beds: not measured, the gateway refuses the configuration: {why}")
    print()
    if cpu_fit is not None and rss_fit is not None:
        print(
            f"CPU = {cpu_fit.intercept:.2f} % + {cpu_fit.slope:.3f} % per bed "
            f"(R² {cpu_fit.r2:.4f}); at 16 beds the line gives "
            f"{cpu_fit.intercept + 16 * cpu_fit.slope:.1f} % of one core"
        )
        print(
            f"peak RSS = {rss_fit.intercept:.1f} MiB + {rss_fit.slope:.2f} MiB per bed "
            f"(R² {rss_fit.r2:.4f})"
        )
    if args.plot is not None:
        plot(runs, cpu_fit, args.plot)
        print(f"plot: {args.plot}")
    if args.json is not None:
        args.json.write_text(json.dumps([r.__dict__ for r in runs], indent=1, default=str))
    if args.profile and runs:
        show_profile(profile)
        print(f"profile kept in {profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
