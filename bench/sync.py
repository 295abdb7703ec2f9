"""Draining a backlog to each kind of destination on 127.0.0.1: observations per second and
gateway CPU per 1,000 observations.

A store is filled with ``--hours`` of a ``--beds``-bed ward's numerics (SpO2, pulse rate and
heart rate at 1 Hz per bed) and one alarm state change per bed per minute, all queued for
one destination; then the real sync worker (the gateway's code path: store batches on the
store thread, encoding, the real transport and acknowledgements) drains it with the system
clock. Receivers run in a child process so that the gateway's CPU (this process's
``process_time``) is measured alone:

* HL7 v2 over MLLP: a minimal asyncio MLLP receiver answering AA to each message (it
  does not parse: the gateway's cost is what is measured);
* FHIR over HTTPS (mutual TLS): an aiohttp server answering a batch-response;
* MQTT over TLS, QoS 1: mosquitto.

    .venv/bin/python bench/sync.py [--beds 16] [--hours 1] [--only hl7,fhir,mqtt]

The issue asks for a 24-hour backlog (``--hours 24``: 4.1 M numerics per destination,
about 15-20 minutes each); the rate is the same at one hour, which is the default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.clock import SystemClock
from drivers.codes import BEATS_PER_MINUTE, ECG_HEART_RATE, PERCENT, PULSE_RATE, SPO2
from drivers.readings import Numeric
from gateway.sync.delivery import Destination
from gateway.sync.fhir import FhirContext
from gateway.sync.hl7 import Sender
from gateway.sync.https import FhirDestination
from gateway.sync.mllp import MllpDestination
from gateway.sync.mqtt import MqttDestination
from gateway.sync.worker import SyncPolicy, SyncWorker
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import Destination as Queue
from gateway.twin.store import TwinStore
from gateway.twin.vocabulary import Patient
from tests.support.broker import mosquitto
from tests.support.net import free_port
from tests.support.tls import Pki, make_pki

T0 = 1_767_225_600.0


# -- receivers (child process) ----------------------------------------------------------------
def serve_mllp(port: int, ready: Any) -> None:
    """A minimal interface engine: frames in, AA with the message's control id out. It
    does not parse the message (the tests' receiver does, with hl7apy): here the gateway's
    cost is measured, not a Python HL7 parser's."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                block = await reader.readuntil(b"\x1c\r")
                msh = block.lstrip(b"\x0b").split(b"\r", 1)[0].split(b"|")
                ack = b"MSH|^~\\&|ENGINE||||||ACK|A|P|2.6\rMSA|AA|" + msh[9]
                writer.write(b"\x0b" + ack + b"\x1c\r")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, limit=64 * 1024 * 1024)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def serve_fhir(port: int, folder: str, ready: Any) -> None:
    from aiohttp import web

    pki = _pki(Path(folder))

    async def batch(request: web.Request) -> web.Response:
        body = await request.json()
        entries = [{"response": {"status": "201 Created"}} for _ in body["entry"]]
        return web.json_response(
            {"resourceType": "Bundle", "type": "batch-response", "entry": entries}
        )

    async def main() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/fhir", batch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=pki.server_context()).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _pki(folder: Path) -> Pki:
    return Pki(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )


# -- the backlog ---------------------------------------------------------------------------------
def fill(store: TwinStore, beds: int, hours: float) -> tuple[int, int]:
    seconds = int(hours * 3600)
    numerics = alarms = 0
    for bed in range(beds):
        store.admit(f"bed-{bed}", Patient("Test Patient", f"MRN{bed:04d}", "1970-01-01"), T0)
    for start in range(0, seconds, 60):
        batch: list[tuple[str, Numeric]] = []
        for bed in range(beds):
            b = f"bed-{bed}"
            for s in range(start, min(start + 60, seconds)):
                t = T0 + s
                batch.append((b, Numeric(f"ox-{bed}", SPO2, 90.0 + s % 9, PERCENT, t)))
                batch.append(
                    (b, Numeric(f"ox-{bed}", PULSE_RATE, 60.0 + s % 40, BEATS_PER_MINUTE, t))
                )
                batch.append(
                    (b, Numeric(f"ecg-{bed}", ECG_HEART_RATE, 61.0 + s % 40, BEATS_PER_MINUTE, t))
                )
        store.write(batch, T0 + start + 60)
        numerics += len(batch)
        for bed in range(beds):
            record = {
                "alarm": f"bed-{bed}/ox-{bed}/spo2_low/{start}",
                "change": "raised" if start % 120 == 0 else "cleared",
                "condition": "spo2_low",
                "alarm_kind": "physiological",
                "priority": "medium",
                "state": "active" if start % 120 == 0 else "cleared",
                "code": SPO2.refid,
                "value": 87.0,
                "limit": 90.0,
                "unit": "%",
                "message": "SpO2 low",
            }
            store.write_alarm(f"bed-{bed}", f"ox-{bed}", record, T0 + start + 30, T0 + start + 60)
            alarms += 1
    return numerics, alarms


async def drain(store: TwinStore, destination: Destination, batch: int) -> tuple[float, float]:
    clock = SystemClock()

    async def call(fn: Any, *args: Any) -> Any:
        return fn(*args)

    worker = SyncWorker(destination, store, call, clock, SyncPolicy(batch=batch, idle_poll=0.05))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(worker.run())
    while True:
        await asyncio.sleep(0.05)
        if worker.status.state == "idle" and not store.backlog(destination.info.name):
            break
        if worker.status.failures_in_a_row > 3:
            task.cancel()
            raise RuntimeError(f"{destination.info.name}: {worker.status.last_error}")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return wall, cpu


def run_one(kind: str, beds: int, hours: float, folder: Path, pki: Pki) -> dict[str, Any]:
    carries = {"hl7": {"numeric", "alarm"}, "fhir": {"numeric"}, "mqtt": {"numeric", "alarm"}}
    store = TwinStore(
        folder / f"{kind}.sqlite",
        KeyRing(generate_kek()),
        destinations=[Queue(kind, frozenset(carries[kind]))],
    )
    numerics, alarms = fill(store, beds, hours)
    sent = numerics + (alarms if "alarm" in carries[kind] else 0)
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    child = None
    broker = None
    clock = SystemClock()
    destination: Destination
    if kind == "hl7":
        child = ctx.Process(target=serve_mllp, args=(port, ready), daemon=True)
        destination = MllpDestination(
            kind,
            host="127.0.0.1",
            port=port,
            sender=Sender("gw-bench"),
            clock=clock,
            per_message=100,
            timeout=30.0,
        )
    elif kind == "fhir":
        child = ctx.Process(target=serve_fhir, args=(port, str(pki.ca.parent), ready), daemon=True)
        destination = FhirDestination(
            kind,
            base_url=f"https://localhost:{port}/fhir",
            context=FhirContext("gw-bench"),
            clock=clock,
            tls=pki.client_context(),
            timeout=30.0,
        )
    else:
        broker = mosquitto(folder / "broker", pki, port)
        broker.__enter__()
        ready.set()
        destination = MqttDestination(
            kind,
            host="localhost",
            port=port,
            gateway_id="gw-bench",
            clock=clock,
            tls=pki.client_context(),
            timeout=30.0,
        )
    try:
        if child is not None:
            child.start()
        ready.wait(30)
        wall, cpu = asyncio.run(drain(store, destination, batch=500))
    finally:
        if child is not None:
            child.terminate()
            child.join(5)
        if broker is not None:
            broker.__exit__(None, None, None)
        store.close()
    return {
        "destination": kind,
        "observations": sent,
        "seconds": round(wall, 2),
        "per_second": round(sent / wall),
        "cpu_ms_per_1000": round(cpu * 1000 / sent * 1000, 1),
        "cpu_share": round(cpu / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beds", type=int, default=16)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--only", default="hl7,fhir,mqtt")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pki = make_pki(folder / "pki")
        for kind in args.only.split(","):
            row = run_one(kind.strip(), args.beds, args.hours, folder, pki)
            rows.append(row)
            print(json.dumps(row), flush=True)
    command = "$ .venv/bin/python bench/sync.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print()
    print(command)
    print()
    print(
        "| destination | observations | seconds | observations/s | CPU ms per 1,000 | CPU share |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['destination']} | {r['observations']} | {r['seconds']} | {r['per_second']} "
            f"| {r['cpu_ms_per_1000']} | {r['cpu_share']} |"
        )


if __name__ == "__main__":
    main()
