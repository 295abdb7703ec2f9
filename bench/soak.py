"""Soak: the simulated ward for a long while, faults injected at random, then the books checked.

The daemon is the real ``gateway run`` (forked by the reliability suite's fork server, so a
restart does not pay the import cost), in real time, with N beds of serial devices: a Nonin
oximeter on every bed and an OpenBCI Cyton ECG (250 Hz, analysed) on the first few. This
process plays every device on its own pty (:class:`~drivers.simulate.pty.PtyLink`), so the
devices outlive the daemon as real ones do, and runs the HL7/MLLP receiver the daemon syncs
to (``tests/support/mllp_recorder.py``, a process of its own that records every message and
answers AA; the tests' hl7apy peer parses each message and, on a loaded 2-core box, could
not keep up with 16 beds). Bed 1's SpO2 limit of 99 % keeps a physiological alarm
up and the last bed has an oximeter on a port that does not exist, so a technical alarm is
always up too: both must come back after every kill.

Faults, one at a time, chosen by a seeded ``random.Random`` with random gaps. Alarm times
are the gateway's own (each alarm's ``since`` in ``/api/alarms``, log timestamps), counted
from the fault, so a slow page on a loaded box is not charged to the gateway:

* **unplug**: a device's cable is pulled (its pty closed) for a while, then plugged back
  (a new pty behind the same path). Must raise ``disconnected`` at that device within the
  alarm's configured delay (3 s) plus ``--grace``; the link must be up again within 5 s (the
  supervisor's backoff cap) plus grace of the replug, and the alarm must clear.
* **outage**: the MLLP receiver is killed for a while, then started again on the same
  port. Must raise ``sync_unreachable`` (pseudo-bed ``_gateway``) within ``--sync-alarm``
  seconds plus grace; once the receiver is back the worker must deliver again within its
  backoff cap (60 s) plus one attempt (10 s) plus grace, and the alarm must clear. Some
  outages have a kill in the middle (the new daemon must raise the alarm again).
* **kill**: SIGKILL of the daemon, then a restart (sometimes killed again during start-up).
  After each kill, on a byte copy of the database as the kill left it: ``integrity_check``
  ok, every row and waveform sample an earlier kill's copy held still there, no sequence
  number repeated (:class:`tests.reliability.ward.Snapshot`, as in
  ``tests/reliability/test_daemon_crash.py``); after the restart the alarms that were
  active at the beds before the kill are active again within 120 s.

At the end: every cable plugged and the receiver up; the rows committed up to a cut-off
must all be acknowledged in the outbox and found at the receiver (numerics by bed, device,
metric, time and value, read back from the store with the ward's key; alarm-log rows by
their message id ``A<row>``), with no dead letters; a reading received again under another
message id (which a receiver de-duplicating by MSH-10 would store twice) fails the
duplicates check. SIGTERM must stop the daemon within 5 s with exit 0. Memory (``VmRSS``)
and open descriptors are sampled from ``/proc/<pid>`` during each daemon life; in every
life that ran ``--min-life`` seconds, the least-squares growth of RSS after a 60 s warm-up
must stay under ``--max-rss-growth`` MB and the peak descriptor count of its last third may
exceed that of its first by at most ``--max-fd-rise`` (a few come and go all the time).
Slopes are reported per life.

Prints a summary (and ``--report FILE`` as JSON); exits 1 if any check failed.

    .venv/bin/python bench/soak.py [--minutes 60] [--seed 1] [--beds 16] [--ecg-beds 2]
    .venv/bin/python bench/soak.py --recheck DIR   # the delivery check of a --keep run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drivers.clock import SystemClock  # noqa: E402
from drivers.simulate.device import Burst  # noqa: E402
from drivers.simulate.nonin import NoninSimulator  # noqa: E402
from drivers.simulate.openbci import CytonSimulator  # noqa: E402
from gateway.config import load  # noqa: E402
from gateway.sync.hl7 import timestamp  # noqa: E402
from gateway.twin.crypto import KeyRing, create_key_file, load_kek  # noqa: E402
from gateway.twin.store import TwinStore  # noqa: E402
from tests.reliability.ward import ENV, ForkServer, Snapshot, WardDir  # noqa: E402
from tests.support.mllp_recorder import read_messages  # noqa: E402
from tests.support.net import free_port  # noqa: E402

RECORDER = REPO / "tests" / "support" / "mllp_recorder.py"

RECONNECT_BOUND = 5.0  # the device supervisor's backoff cap (gateway/supervisor.py)
SYNC_BACKOFF_CAP = 60.0  # the sync worker's backoff cap (gateway/sync/worker.py)
#: ... plus one attempt (reading its batch through the busy store thread, connecting).
SYNC_ATTEMPT = 10.0
RESTORE_WITHIN = 120.0  # seconds for the alarms of before a kill to be back after it
START_WITHIN = 120.0  # seconds for a (re)started daemon to serve its page
STOP_WITHIN = 5.0  # SIGTERM to exit, the bound
WARM_UP = 60.0  # seconds of each life left out of the memory slope
POLL = 0.2  # seconds between looks at the page while waiting for an alarm
SYNC = ("_gateway", "sync:hie", "sync_unreachable")

Alarm = tuple[str, str, str]  # (bed, source, condition)


# -- the ward ---------------------------------------------------------------------------------


def ward_config(
    root: Path, *, beds: int, ecg_beds: int, http_port: int, peer_port: int, sync_alarm: float
) -> str:
    """The daemon's config.toml: every device on a port this process plays (``dev/<id>``)."""
    text = f"""
        [gateway]
        id = "ward-soak"
        data_dir = "var"
        listen = "127.0.0.1:{http_port}"
        stale_after = 5.0
        simulation = true

        [store]
        key_file = "{root / "keys" / "kek"}"

        [alarms]
        sync_unreachable_seconds = {sync_alarm}

        [[destinations]]
        name = "hie"
        protocol = "hl7-mllp"
        host = "127.0.0.1"
        port = {peer_port}
        timeout = 5
        unreachable_after = {sync_alarm}
        """
    for n in range(1, beds + 1):
        text += f"""
        [[beds]]
        id = "bed-{n}"
          [beds.patient]
          name = "Soak Patient {n}"
          mrn = "SOAK-{n:04d}"
          birth_date = "1970-01-{n % 28 + 1:02d}"
        """
        if n == 1:
            text += "[beds.alarms]\nlimits = { spo2 = { low = 99 } }\n"
        text += f"""
          [[beds.devices]]
          id = "ox-{n}"
          driver = "nonin"
          port = "{root / "dev" / f"ox-{n}"}"
        """
        if n <= ecg_beds:
            text += f"""
          [[beds.devices]]
          id = "ecg-{n}"
          driver = "openbci-cyton"
          leads = {{ 1 = "I", 2 = "II" }}
          port = "{root / "dev" / f"ecg-{n}"}"
        """
        if n == beds:
            text += f"""
          [[beds.devices]]
          id = "ox-missing"
          driver = "nonin"
          port = "{root / "dev" / "no-such-port"}"
        """
    return "\n".join(line.strip() for line in text.splitlines()) + "\n"


class _Pullable:
    """Mixin for a :class:`~drivers.simulate.device.PtyDeviceSimulator`: while ``pulled``
    the cable is out (the run loop closes the pty), whatever the scenario says."""

    pulled = False
    unplugged_at = 0.0  # UTC seconds the pty was last closed
    plugged_at = 0.0  # ... and last opened again

    def _bursts(self) -> Iterable[Burst]:
        for burst in super()._bursts():  # type: ignore[misc]
            # The run loop plugs or unplugs right after taking the burst.
            plugged = self._link.plugged  # type: ignore[attr-defined]
            if self.pulled and plugged:
                self.unplugged_at = time.time()
            elif not self.pulled and not plugged and burst.plugged:
                self.plugged_at = time.time()
            yield replace(burst, plugged=False) if self.pulled else burst


class SoakNonin(_Pullable, NoninSimulator):
    pass


class SoakCyton(_Pullable, CytonSimulator):
    pass


SIMULATORS: dict[str, Callable[..., Any]] = {"nonin": SoakNonin, "openbci-cyton": SoakCyton}


@dataclass
class Device:
    bed: str
    id: str
    simulator: Any  # SoakNonin | SoakCyton


def devices_of(config_path: Path, seed: int) -> list[Device]:
    """A simulator for every configured device whose port this process plays."""
    config = load(config_path)
    found: list[Device] = []
    for bed in config.beds:
        for device in bed.devices:
            port = getattr(device.settings, "port", None)
            if device.id == "ox-missing" or not port:
                continue
            make = SIMULATORS[device.driver]
            seed_n = seed * 1000 + len(found)
            found.append(
                Device(
                    bed.id,
                    device.id,
                    make(device.settings, "normal", SystemClock(), port, seed=seed_n),
                )
            )
    return found


# -- the sync receiver and what it got ---------------------------------------------------------


Reading = tuple[str, str, str, str, float | None]  # (bed, device, refid, HL7 time, value)


def _number(text: str | None) -> float | None:
    try:
        return None if text in (None, "") else round(float(text), 3)  # type: ignore[arg-type]
    except ValueError:
        return None


@dataclass
class Ledger:
    """Everything the receiver was sent, reduced to what identifies each row.

    A numeric has no id of its own in PCD-01, so each is known by bed, device, metric, time
    and value; several rows of a stream can share all of these (readings the gateway takes
    from a device in one read share their receipt time), so they are counted. A receiver
    de-duplicating by message id (MSH-10) keeps each id's readings once: that is what
    :attr:`numerics` counts.
    """

    messages: int = 0
    observation_messages: int = 0
    by_control: dict[str, Counter[Reading]] = field(default_factory=dict)
    alarms: Counter[int] = field(default_factory=Counter)  # alarm_log row id -> times received
    controls: Counter[str] = field(default_factory=Counter)

    def take(self, text: str) -> None:
        segments = [s.split("|") for s in text.replace("\n", "\r").split("\r") if s]
        msh = segments[0]
        kind, control = msh[8], msh[9]
        self.messages += 1
        self.controls[control] += 1
        if kind.startswith("ORU^R40"):
            self.alarms[int(control[1:])] += 1
            return
        self.observation_messages += 1
        readings: Counter[Reading] = Counter()
        bed = device = ""
        for fields in segments[1:]:
            if fields[0] == "PV1":
                bed = fields[3].split("^")[2]
            elif fields[0] == "OBX" and len(fields) > 18 and fields[18]:
                device = fields[18].split("^")[0]  # the device-related OBX of an OBR
            elif fields[0] == "OBX":
                refid = fields[3].split("^")[1]
                readings[(bed, device, refid, fields[14], _number(fields[5]))] += 1
        self.by_control.setdefault(control, readings)  # a resend under its id: dropped

    @property
    def numerics(self) -> Counter[Reading]:
        total: Counter[Reading] = Counter()
        for readings in self.by_control.values():
            total.update(readings)
        return total


class Receiver:
    """The interface engine of ``tests/support/mllp_recorder.py``, stopped (SIGKILL: it
    vanishes mid-conversation, as a crashed engine or a cut network does) and started again
    on the same port; each run records to its own file."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.runs = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start the receiver; the UTC second it was first seen accepting connections."""
        out = self.folder / f"received-{self.runs}.hl7"
        self.runs += 1
        command = [sys.executable, str(RECORDER), "--port", str(self.port), "--out", str(out)]
        self._proc = subprocess.Popen(command, env=ENV, cwd=REPO)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # bounded: until it accepts connections
            if self._proc.poll() is not None:
                raise RuntimeError(f"MLLP recorder exited with {self._proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return time.time()
            time.sleep(0.05)
        raise RuntimeError("MLLP recorder did not listen within 30 s")

    def stop(self) -> float:
        """Kill the receiver; the UTC second it was killed (the earliest the gateway can
        have found it gone, so alarm times counted from here are never flattered)."""
        proc, self._proc = self._proc, None
        killed = time.time()
        if proc is not None:
            proc.kill()
            proc.wait()
        return killed

    def ledger(self) -> Ledger:
        ledger = Ledger()
        for n in range(self.runs):
            for text in read_messages(self.folder / f"received-{n}.hl7"):
                ledger.take(text)
        return ledger


# -- the daemon and its lives ------------------------------------------------------------------


@dataclass
class Life:
    pid: int
    started: float
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss kB, fds)
    ended: float | None = None
    end: str = ""

    def steady(self) -> list[tuple[float, int, int]]:
        return [s for s in self.samples if s[0] - self.started >= WARM_UP]

    def judged(self, min_life: float) -> bool:
        """Whether the life ran ``min_life`` seconds past its warm-up (else too short)."""
        steady = self.steady()
        return len(steady) >= 3 and steady[-1][0] - self.started >= min_life

    def slopes(self) -> dict[str, float | None]:
        steady = self.steady()
        if len(steady) < 3:
            return {"rss_mb_per_h": None, "fds_per_h": None}
        t = [s[0] for s in steady]
        rss = statistics.linear_regression(t, [s[1] / 1024 for s in steady]).slope * 3600
        fds = statistics.linear_regression(t, [s[2] for s in steady]).slope * 3600
        return {"rss_mb_per_h": round(rss, 2), "fds_per_h": round(fds, 2)}

    def summary(self) -> dict[str, Any]:
        rss = [s[1] for s in self.samples]
        steady = self.steady()
        slopes = self.slopes()
        # A handful of descriptors come and go all the time (page clients, the MLLP link,
        # the store's files): compare the peaks of the first and last thirds.
        third = max(1, len(steady) // 3)
        fds_start = max(s[2] for s in steady[:third]) if steady else None
        fds_end = max(s[2] for s in steady[-third:]) if steady else None
        return {
            "pid": self.pid,
            "seconds": round((self.ended or time.monotonic()) - self.started, 1),
            "end": self.end,
            "samples": len(self.samples),
            "rss_mb_first": round(rss[0] / 1024, 1) if rss else None,
            "rss_mb_last": round(rss[-1] / 1024, 1) if rss else None,
            "rss_mb_peak": round(max(rss) / 1024, 1) if rss else None,
            "fds_steady_start": fds_start,
            "fds_steady_end": fds_end,
            "rss_mb_each_minute": [
                round(max(r for t, r, _ in self.samples if (t - self.started) // 60 == m) / 1024, 1)
                for m in sorted({int((t - self.started) // 60) for t, _, _ in self.samples})
            ],
            **slopes,
            "rss_mb_fitted_growth": None
            if slopes["rss_mb_per_h"] is None
            else round(slopes["rss_mb_per_h"] * (steady[-1][0] - steady[0][0]) / 3600, 2),
        }


def proc_sample(pid: int) -> tuple[int, int] | None:
    """(VmRSS in kB, open descriptors) of a live process; ``None`` once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]), fds
    return None  # a zombie has no VmRSS


@dataclass
class Fault:
    kind: str
    target: str
    at: float  # seconds since the soak started
    utc: str = field(default_factory=lambda: time.strftime("%H:%M:%S", time.gmtime()))
    budget: float | None = None  # seconds allowed for the alarm
    alarm_after: float | None = None
    recovered_after: float | None = None
    recovery_budget: float | None = None
    cleared: bool | None = None
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.ok = False
        self.notes.append(why)


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.rng = random.Random(args.seed)
        self.receiver = Receiver(root)
        http_port = free_port()
        create_key_file(root / "keys" / "kek")
        self.ward = WardDir(root, http_port)
        self.ward.config.write_text(
            ward_config(
                root,
                beds=args.beds,
                ecg_beds=args.ecg_beds,
                http_port=http_port,
                peer_port=self.receiver.port,
                sync_alarm=args.sync_alarm,
            )
        )
        self.devices = devices_of(self.ward.config, args.seed)
        self.forkserver = ForkServer()
        self.lives: list[Life] = []
        self.faults: list[Fault] = []
        self.checks: list[tuple[str, bool, str]] = []
        self.snapshot = Snapshot()
        self.kills = 0
        self.kill_log: list[dict[str, Any]] = []
        self.loads: list[float] = []  # the box's 1-minute load average, each sample
        self.duplicates: dict[str, int] = {}
        self.t0 = time.monotonic()
        self.session: aiohttp.ClientSession | None = None

    # -- looking at the daemon ---------------------------------------------------------------

    @property
    def life(self) -> Life:
        return self.lives[-1]

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def get_json(self, path: str) -> Any | None:
        assert self.session is not None
        url = f"http://127.0.0.1:{self.ward.port}{path}"
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                return await r.json() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def alarms(self) -> set[Alarm] | None:
        active = await self.active()
        return None if active is None else set(active)

    async def active(self) -> dict[Alarm, dict[str, Any]] | None:
        """Every active alarm, by (bed, source, condition); ``None`` while the page is down."""
        body = await self.get_json("/api/alarms")
        if body is None:
            return None
        alarms = body["alarms"] if isinstance(body, dict) else body
        return {
            (a["bed"], a["source"], a["condition"]): a for a in alarms if a["state"] == "active"
        }

    async def raised_after(self, key: Alarm, since: float, grace: float, fault: Fault) -> None:
        """Wait (bounded) for alarm ``key``; record how long after ``since`` (UTC s) the
        gateway raised it (its own ``since``, so a slow page does not count) against its
        configured delay plus ``grace``."""
        found: dict[str, Any] = {}

        async def raised() -> bool:
            alarm = (await self.active() or {}).get(key)
            if alarm is not None:
                found.update(alarm)
            return alarm is not None

        if await self.until(raised, 120.0) is None:
            fault.fail(f"{key[2]} never raised (waited 120 s)")
            return
        fault.budget = round(float(found["delay"]) + grace, 2)
        fault.alarm_after = round(float(found["since"]) - since, 2)
        if key == SYNC:
            seen = self.logged_after("destination failing; will retry", since)
            if seen is not None:
                fault.notes.append(
                    f"the worker found it failing {seen - since:.2f} s after the fault, "
                    f"raised {float(found['since']) - seen:.2f} s after that"
                )
        if not 0 <= fault.alarm_after <= fault.budget:
            fault.fail(f"{key[2]} after {fault.alarm_after} s (allowed {fault.budget})")

    async def connected_at(self, bed: str, device: str) -> float | None:
        """UTC second the device's link last became connected; ``None`` if it is not."""
        beds = await self.get_json("/api/beds")
        now = time.time()
        for b in beds or ():
            for d in b["devices"] if b["id"] == bed else ():
                if d["id"] == device and d["state"] == "connected":
                    return now - float(d["state_age"])
        return None

    async def until(self, predicate: Callable[[], Any], within: float) -> float | None:
        """Seconds until ``await predicate()`` is true, or ``None`` after ``within``."""
        start = time.monotonic()
        while time.monotonic() - start <= within:
            if await predicate():
                return time.monotonic() - start
            await asyncio.sleep(POLL)
        return None

    async def sample(self) -> None:
        while True:
            self.loads.append(os.getloadavg()[0])
            if self.lives and self.life.ended is None:
                got = proc_sample(self.life.pid)
                if got is not None:
                    self.life.samples.append((time.monotonic(), *got))
            await asyncio.sleep(self.args.sample_every)

    # -- lives ---------------------------------------------------------------------------------

    async def start(self) -> None:
        log = self.root / f"life-{len(self.lives)}.log"
        pid = await asyncio.to_thread(self.forkserver.spawn, self.ward.config, log)
        self.lives.append(Life(pid, time.monotonic()))

    async def spawn(self) -> float | None:
        """Start a daemon; seconds until its page answers (``None``: it did not)."""
        await self.start()
        return await self.until(self.page_up, START_WITHIN)

    async def page_up(self) -> bool:
        return await self.alarms() is not None

    async def kill_now(self, how: str) -> None:
        life = self.life
        os.kill(life.pid, signal.SIGKILL)
        code = await asyncio.to_thread(self.forkserver.wait, life.pid)
        life.ended, life.end = time.monotonic(), how
        self.kills += 1
        if code != -signal.SIGKILL:
            self.check(f"kill {self.kills} exit code", False, f"{code}, expected -9")
        after = await asyncio.to_thread(Snapshot.read, self.ward.db, self.root / "copy")
        problems = []
        if after.integrity != "ok":
            problems.append(f"integrity_check: {after.integrity}")
        problems += self.snapshot.missing_from(after)
        problems += after.problems()
        grew = len(after.rows) + after.samples - len(self.snapshot.rows) - self.snapshot.samples
        self.kill_log.append({"kill": self.kills, "how": how, "rows_and_samples_added": grew})
        if problems:
            self.check(f"kill {self.kills}: nothing lost", False, "; ".join(problems[:5]))
        self.snapshot = after

    # -- faults --------------------------------------------------------------------------------

    async def unplug(self) -> Fault:
        device = self.rng.choice(self.devices)
        hold = self.rng.uniform(*self.args.unplug_seconds)
        fault = Fault("unplug", f"{device.bed}/{device.id}", round(self.now(), 1))
        sim = device.simulator
        sim.pulled = True
        # The pty closes at the simulator's next step (at most 1/3 s): timed from then.
        await self.until(lambda: _true(not sim.plugged), 5)
        key = (device.bed, device.id, "disconnected")
        await self.raised_after(key, sim.unplugged_at, self.args.grace, fault)
        await asyncio.sleep(hold)
        sim.pulled = False
        await self.until(lambda: _true(sim.plugged), 5)

        at: list[float] = []

        async def connected() -> bool:
            when = await self.connected_at(device.bed, device.id)
            at[:] = [] if when is None else [when]
            return when is not None

        fault.recovery_budget = RECONNECT_BOUND + self.args.grace
        if await self.until(connected, fault.recovery_budget + 30) is not None:
            fault.recovered_after = round(at[0] - sim.plugged_at, 2)
        if fault.recovered_after is None or fault.recovered_after > fault.recovery_budget:
            fault.fail(f"connected again after {fault.recovered_after} s")

        async def cleared() -> bool:
            alarms = await self.alarms()
            return alarms is not None and key not in alarms

        fault.cleared = await self.until(cleared, 10) is not None
        if not fault.cleared:
            fault.fail("disconnected alarm still active 10 s after reconnecting")
        return fault

    async def outage(self) -> Fault:
        hold = self.rng.uniform(*self.args.outage_seconds)
        with_kill = self.rng.random() < self.args.kill_in_outage
        fault = Fault("outage", "hie" + (" +kill" if with_kill else ""), round(self.now(), 1))
        started = time.monotonic()
        gone = await asyncio.to_thread(self.receiver.stop)
        await self.raised_after(SYNC, gone, self.args.grace, fault)
        if with_kill:
            kill = Fault("kill", "during the outage", fault.at)
            ready = await self.kill_and_restart(kill)
            fault.notes.append(f"killed; the beds' alarms back {kill.alarm_after} s after")
            if not kill.ok:
                fault.fail("; ".join(kill.notes))
            # The new daemon finds the receiver down on its own: timed from its start.
            again = Fault("outage", "hie", fault.at)
            await self.raised_after(SYNC, ready, self.args.grace, again)
            fault.notes.append(f"raised again {again.alarm_after} s after the restart")
            if not again.ok:
                fault.fail("after the restart: " + "; ".join(again.notes))
        await asyncio.sleep(max(0.0, hold - (time.monotonic() - started)))
        listening = await asyncio.to_thread(self.receiver.start)

        async def cleared() -> bool:
            alarms = await self.alarms()
            return alarms is not None and SYNC not in alarms

        # The worker retries within its backoff cap; timed by its own log line, so a slow
        # page does not count.
        fault.recovery_budget = SYNC_BACKOFF_CAP + SYNC_ATTEMPT + self.args.grace
        fault.cleared = await self.until(cleared, fault.recovery_budget + 60) is not None
        back = self.logged_after("destination reachable again", listening)
        fault.recovered_after = None if back is None else round(back - listening, 2)
        if not fault.cleared or back is None or back - listening > fault.recovery_budget:
            fault.fail(
                f"sync reachable again after {fault.recovered_after} s, alarm cleared: "
                f"{fault.cleared}"
            )
        return fault

    def logged_after(self, event: str, since: float) -> float | None:
        """UTC second the current daemon first logged ``event`` at or after ``since``."""
        log = self.root / f"life-{len(self.lives) - 1}.log"
        for line in log.read_text(errors="replace").splitlines():
            if f'"{event}"' not in line:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                stamp = json.loads(line)["timestamp"]
                at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                if at >= since:
                    return at
        return None

    async def kill(self) -> Fault:
        fault = Fault("kill", f"pid {self.life.pid}", round(self.now(), 1))
        await self.kill_and_restart(fault)
        return fault

    async def kill_and_restart(self, fault: Fault) -> float:
        """Kill, restart, check the alarms come back; the UTC second the page was up."""
        before = {a for a in (await self.alarms() or set()) if not a[0].startswith("_")}
        # What sync forwarding watches lives in memory and says nothing about the bed.
        before = {a for a in before if a[2] != "alarm_forwarding_failed"}
        await self.kill_now("killed")
        if self.rng.random() < self.args.startup_kill:
            # Killed again while starting: the store being opened, admissions bound.
            await self.start()
            await asyncio.sleep(self.rng.uniform(0.0, 2.5))
            fault.notes.append("killed again during start-up")
            await self.kill_now("killed in start-up")
        started = await self.spawn()
        ready = time.time()
        if started is None:
            fault.fail(f"restarted daemon served no page within {START_WITHIN} s")
            return ready
        fault.recovered_after = round(started, 2)

        async def restored() -> bool:
            return before <= (await self.alarms() or set())

        fault.budget = RESTORE_WITHIN
        fault.alarm_after = await self.until(restored, RESTORE_WITHIN)
        if fault.alarm_after is None:
            missing = before - (await self.alarms() or set())
            fault.fail(f"alarms active before the kill not back: {sorted(missing)}")
        return ready

    # -- the run ---------------------------------------------------------------------------------

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    async def run(self) -> None:
        self.receiver.start()
        simulators = [asyncio.create_task(d.simulator.run()) for d in self.devices]
        sampler = asyncio.create_task(self.sample())
        async with aiohttp.ClientSession() as self.session:
            try:
                started = await self.spawn()
                if started is None:
                    self.check("daemon starts", False, f"no page within {START_WITHIN} s")
                    return
                await self.faults_until(self.args.minutes * 60)
                await self.finish()
            finally:
                sampler.cancel()
                for task in simulators:
                    task.cancel()
                await asyncio.gather(*simulators, sampler, return_exceptions=True)
                if self.lives and self.life.ended is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.life.pid, signal.SIGKILL)
                    await asyncio.to_thread(self.forkserver.wait, self.life.pid)
                    self.life.ended, self.life.end = time.monotonic(), "killed at exit"
                self.forkserver.close()
                self.receiver.stop()

    async def faults_until(self, seconds: float) -> None:
        # Let the ward settle (devices connected, standing alarms up) before the first fault.
        await asyncio.sleep(min(30.0, seconds / 10))
        while self.now() < seconds:
            await asyncio.sleep(self.rng.uniform(*self.args.gap_seconds))
            if self.now() >= seconds:
                break
            kinds = ["unplug", "outage"]
            weights = [self.args.unplug_weight, self.args.outage_weight]
            if time.monotonic() - self.life.started >= self.args.min_life:
                kinds.append("kill")
                weights.append(self.args.kill_weight)
            kind = self.rng.choices(kinds, weights)[0]
            fault = await getattr(self, kind)()
            self.faults.append(fault)
            print(
                f"[{self.now():7.1f} s] {fault.kind:6} {fault.target:16} alarm "
                f"{_s(fault.alarm_after)} recovered {_s(fault.recovered_after)} "
                f"{'ok' if fault.ok else 'FAILED ' + '; '.join(fault.notes)}",
                flush=True,
            )

    async def finish(self) -> None:
        """Drain, check delivery, stop cleanly, check the store and memory."""
        cut = await asyncio.to_thread(_cut, self.ward.db)
        drained = await self.until(
            lambda: _true(_pending(self.ward.db, cut) == 0), self.args.drain_seconds
        )
        self.check(
            "sync drained",
            drained is not None,
            f"outbox up to the cut acknowledged {_s(drained)} after the last fault",
        )
        life = self.life
        os.kill(life.pid, signal.SIGTERM)
        try:
            code: int | str = await asyncio.to_thread(
                self.forkserver.wait_exit, life.pid, STOP_WITHIN
            )
        except AssertionError as exc:
            code = str(exc)
        life.ended, life.end = time.monotonic(), "SIGTERM"
        self.check("SIGTERM: exit 0 within 5 s", code == 0, f"exit {code}")
        final = await asyncio.to_thread(Snapshot.read, self.ward.db, self.root / "copy")
        lost = self.snapshot.missing_from(final) + final.problems()
        self.check(
            "store: nothing lost, no duplicates",
            final.integrity == "ok" and not lost,
            f"integrity {final.integrity}; {len(final.rows)} rows, {final.samples} samples; "
            f"{self.kills} kills; {'; '.join(lost[:5]) or 'nothing missing'}",
        )
        self.snapshot = final
        self.check_delivery(self.root / "copy" / self.ward.db.name, cut)
        self.check_faults()
        self.check_memory()

    def check_faults(self) -> None:
        for kind in ("unplug", "outage", "kill"):
            mine = [f for f in self.faults if f.kind == kind]
            failed = [f for f in mine if not f.ok]
            times = [f.alarm_after for f in mine if f.alarm_after is not None]
            back = [f.recovered_after for f in mine if f.recovered_after is not None]
            detail = (
                f"{len(mine)} injected, {len(failed)} failed; alarm (or alarms restored) "
                f"after max {_s(max(times, default=None))} median "
                f"{_s(statistics.median(times) if times else None)}; recovered max "
                f"{_s(max(back, default=None))}"
            )
            for f in failed[:3]:
                detail += f"; at {f.at} s {f.target}: {'; '.join(f.notes)}"
            self.check(f"faults matched: {kind}", not failed, detail)

    def check_delivery(self, db: Path, cut: dict[str, int] | None) -> None:
        """Rows up to ``cut`` (``None``: every row the outbox says was delivered) must be at
        the receiver; readings it got under two message ids are counted as duplicates."""
        due_ids: set[int] = set()
        unqueued = unacked = 0
        with contextlib.closing(sqlite3.connect(db)) as conn:
            query = (
                "SELECT n.id, o.id, o.acked FROM numerics n LEFT JOIN outbox o "
                "ON o.kind = 'numeric' AND o.row_id = n.id AND o.destination = 'hie'"
            )
            for row, outbox, acked in conn.execute(query):
                if cut is None or row <= cut["numerics"]:
                    unqueued += outbox is None
                    unacked += cut is not None and outbox is not None and acked is None
                    if cut is not None or acked is not None:
                        due_ids.add(row)
            query = (
                "SELECT l.id, o.id, o.acked FROM alarm_log l LEFT JOIN outbox o "
                "ON o.kind = 'alarm' AND o.row_id = l.id AND o.destination = 'hie'"
            )
            expected_alarms = set()
            for row, outbox, acked in conn.execute(query):
                if cut is None or row <= cut["alarm_log"]:
                    unqueued += outbox is None
                    unacked += cut is not None and outbox is not None and acked is None
                    if cut is not None or acked is not None:
                        expected_alarms.add(row)
            dead = conn.execute(
                "SELECT count(*) FROM dead_letters WHERE destination = 'hie'"
            ).fetchone()[0]
            beds = [b for (b,) in conn.execute("SELECT DISTINCT bed_id FROM admissions")]
        # Values are sealed: read them back with the ward's key.
        every: Counter[Reading] = Counter()
        due: Counter[Reading] = Counter()
        keyring = KeyRing(load_kek(key_file=self.root / "keys" / "kek"))
        with TwinStore(db, keyring) as store:
            for bed in beds:
                for row in store.rows("numeric", bed):
                    device, _, refid = row["stream"].rpartition("/")
                    value = row.get("value")
                    key = (
                        bed,
                        device,
                        refid,
                        timestamp(row["t"]),
                        _number(None if value is None else str(value)),
                    )
                    every[key] += 1
                    if row["id"] in due_ids:
                        due[key] += 1
        ledger = self.receiver.ledger()
        received = ledger.numerics
        missing = due - received  # Counter subtraction keeps only what is short
        missing_alarms = expected_alarms - ledger.alarms.keys()
        self.check(
            "sync: everything committed delivered",
            not (missing or missing_alarms or unqueued or unacked or dead),
            f"{due.total()} numerics and {len(expected_alarms)} alarm-log rows due "
            f"({'up to the cut' if cut else 'acknowledged'}); receiver got "
            f"{ledger.messages} messages; missing {missing.total()} numerics "
            f"{sorted(missing)[:3]} and {len(missing_alarms)} alarm rows "
            f"{sorted(missing_alarms)[:5]}; not queued {unqueued}, unacknowledged {unacked}, "
            f"dead letters {dead}",
        )
        resent = sum(n - 1 for n in ledger.controls.values() if n > 1)
        regrouped = received - every  # what a receiver de-duplicating by MSH-10 keeps twice
        per_time = Counter((k[:4]) for k in every.elements())
        self.duplicates = {
            "messages_resent_same_id": resent,
            "alarm_rows_received_twice": sum(1 for n in ledger.alarms.values() if n > 1),
            "numerics_received_again_under_another_id": regrouped.total(),
            "readings_sharing_a_time_in_a_stream_max": max(per_time.values(), default=0),
            "times_shared_by_several_readings_of_a_stream": sum(
                1 for n in per_time.values() if n > 1
            ),
            "observations_per_message": round(received.total() / max(1, len(ledger.by_control)), 2),
        }
        self.check(
            "sync: duplicates only by id",
            not regrouped,
            f"{resent} messages resent under their own id (receiver drops them); "
            f"{regrouped.total()} observations arrived again under another message id "
            f"{sorted(regrouped)[:2]}",
        )

    def check_memory(self) -> None:
        judged = [life for life in self.lives if life.judged(self.args.min_life)]
        bad = []
        for life in judged:
            s = life.summary()
            if s["rss_mb_fitted_growth"] > self.args.max_rss_growth:
                bad.append(f"pid {life.pid}: RSS grew {s['rss_mb_fitted_growth']} MB")
            if s["fds_steady_end"] > s["fds_steady_start"] + self.args.max_fd_rise:
                bad.append(f"pid {life.pid}: fds {s['fds_steady_start']} -> {s['fds_steady_end']}")
        rss_slopes = [life.slopes()["rss_mb_per_h"] for life in judged]
        fd_slopes = [life.slopes()["fds_per_h"] for life in judged]
        peak = max((s[1] for life in self.lives for s in life.samples), default=0) / 1024
        self.check(
            "memory and descriptors flat",
            bool(judged) and not bad,
            f"{len(judged)} of {len(self.lives)} lives long enough to judge; RSS slopes "
            f"{rss_slopes} MB/h (fitted growth allowed {self.args.max_rss_growth} MB a life); "
            f"fd slopes {fd_slopes} /h; "
            f"peak RSS {peak:.1f} MB; {'; '.join(bad) or 'no growth'}",
        )

    def report(self) -> dict[str, Any]:
        return {
            "command": "python " + " ".join(sys.argv),
            "args": {k: v for k, v in vars(self.args).items()},
            "seconds": round(self.now(), 1),
            "load_average": {
                "median": round(statistics.median(self.loads), 2) if self.loads else None,
                "max": round(max(self.loads), 2) if self.loads else None,
                "cores": os.cpu_count(),
            },
            "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in self.checks],
            "faults": [asdict(f) for f in self.faults],
            "kills": self.kill_log,
            "lives": [life.summary() for life in self.lives],
            "duplicates": self.duplicates,
            "daemon_log": self.log_events(),
            "store": {"rows": len(self.snapshot.rows), "samples": self.snapshot.samples},
        }

    def log_events(self) -> dict[str, int]:
        """Warnings and errors the daemon logged over all its lives, by event (what the
        faults should explain); lines that are not JSON (a traceback) count as such."""
        found: Counter[str] = Counter()
        for log in sorted(self.root.glob("life-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    found["(not JSON: traceback or print)"] += 1
                    continue
                if record.get("level") in ("warning", "error", "critical"):
                    found[f"{record['level']}: {record.get('event')}"] += 1
        return dict(found.most_common())


def _cut(db: Path) -> dict[str, int]:
    """The highest row ids committed now: what the delivery check covers."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.execute("BEGIN")  # one read snapshot: the rows and their outbox entries agree
        return {
            table: conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
            for table in ("numerics", "alarm_log", "outbox")
        }


def _pending(db: Path, cut: dict[str, int]) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        query = (
            "SELECT count(*) FROM outbox WHERE destination = 'hie' AND acked IS NULL AND id <= ?"
        )
        return int(conn.execute(query, (cut["outbox"],)).fetchone()[0])


async def _true(value: object) -> bool:
    return bool(value)


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--minutes", type=float, default=60.0, help="how long faults are injected")
    add("--seed", type=int, default=1)
    add("--beds", type=int, default=16)
    add("--ecg-beds", type=int, default=2, help="beds (from bed 1) that also have an ECG")
    add("--sync-alarm", type=float, default=15.0, help="sync_unreachable_seconds, seconds")
    add("--grace", type=float, default=2.0, help="seconds allowed beyond each alarm's delay")
    add("--gap-seconds", type=_pair, default=(5.0, 25.0), help="LOW,HIGH between faults")
    add("--unplug-seconds", type=_pair, default=(5.0, 40.0), help="LOW,HIGH cable out")
    add("--outage-seconds", type=_pair, default=(25.0, 90.0), help="LOW,HIGH receiver down")
    add("--unplug-weight", type=float, default=5.0)
    add("--outage-weight", type=float, default=2.0)
    add("--kill-weight", type=float, default=3.0)
    add("--kill-in-outage", type=float, default=0.3, help="chance an outage has a kill")
    add("--startup-kill", type=float, default=0.3, help="chance a restart is killed too")
    add("--min-life", type=float, default=300.0, help="seconds a life lasts before a kill")
    add("--sample-every", type=float, default=5.0, help="seconds between /proc samples")
    add("--max-rss-growth", type=float, default=4.0, help="MB a judged life may grow")
    add("--max-fd-rise", type=int, default=5, help="descriptors a judged life's peak may rise")
    add("--drain-seconds", type=float, default=240.0)
    add("--report", type=Path, help="write the result as JSON here")
    add("--keep", type=Path, help="run in this (new) directory and keep it")
    add(
        "--recheck",
        type=Path,
        metavar="DIR",
        help="no run: check the delivery of a kept run again (every acknowledged row)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.recheck is not None:
        return recheck(args.recheck.resolve())
    # Stopped from outside: clean up like Ctrl-C (kill the daemon and the receiver), never
    # leave a daemon behind holding ptys another run will reuse.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"command: python {' '.join(sys.argv)}", flush=True)
    with _workdir(args.keep) as root:
        soak = Soak(args, root)
        try:
            asyncio.run(soak.run())
        except KeyboardInterrupt:
            soak.check("completed", False, "interrupted")
        report = soak.report()
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nsoak: {report['seconds']} s, load average {report['load_average']}")
    for life in report["lives"]:
        print(f"  life {json.dumps(life)}")
    print(f"  duplicates and grouping: {json.dumps(report['duplicates'])}")
    print(f"  daemon warnings and errors: {json.dumps(report['daemon_log'])}")
    for name, ok, detail in soak.checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    failed = [c for c in soak.checks if not c[1]]
    print("soak " + ("FAILED" if failed or not soak.checks else "passed"))
    return 1 if failed or not soak.checks else 0


def recheck(root: Path) -> int:
    """The delivery check on a kept run's final copy of the store and received messages."""
    soak = Soak.__new__(Soak)
    soak.root, soak.checks = root, []
    soak.receiver = Receiver.__new__(Receiver)
    soak.receiver.folder = root
    soak.receiver.runs = len(list(root.glob("received-*.hl7")))
    soak.check_delivery(root / "copy" / "twin.sqlite", None)
    for name, ok, detail in soak.checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    print(f"  duplicates and grouping: {json.dumps(soak.duplicates)}")
    return 0 if all(ok for _, ok, _ in soak.checks) else 1


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    sys.exit(main())
