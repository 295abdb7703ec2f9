"""MQTT with TLS and QoS 1 through a real broker (mosquitto started by the test): topics,
payloads, ids, the online status and the last will when the gateway dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from drivers.clock import ManualClock
from gateway.sync.delivery import Batch, DestinationUnavailable
from gateway.sync.mqtt import MqttDestination, payloads
from gateway.twin.store import OutboxItem
from tests.support.broker import mosquitto
from tests.support.sync import PATIENT, T0
from tests.support.tls import Pki, make_pki


def items() -> tuple[OutboxItem, ...]:
    def numeric(r: int, bed: str = "bed-1") -> OutboxItem:
        return OutboxItem(
            r,
            "numeric",
            r,
            0,
            T0,
            bed,
            1 if bed == "bed-1" else 2,
            "ox-1/MDC_PULS_OXIM_SAT_O2",
            r,
            T0 + r,
            {"value": 90.0 + r, "unit": "%", "status": []},
        )

    alarm = OutboxItem(
        9,
        "alarm",
        9,
        0,
        T0,
        "bed-1",
        1,
        "alarms/bed-1",
        9,
        T0 + 9,
        {"alarm": "a9", "change": "raised", "priority": "high"},
    )
    event = OutboxItem(
        10,
        "event",
        10,
        0,
        T0,
        "bed-1",
        1,
        "ox-1/sensor_off",
        10,
        T0 + 10,
        {"type": "condition", "condition": "sensor_off", "active": True},
    )
    return (alarm, numeric(1), numeric(2), numeric(3, "bed-2"), event)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@asynccontextmanager
async def listener(port: int, pki: Pki, topic: str) -> AsyncIterator[list[Any]]:
    got: list[Any] = []
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="test-listener", tls_context=pki.client_context()
    ) as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                got.append((str(message.topic), json.loads(bytes(message.payload)), message.retain))

        task = asyncio.create_task(collect())
        try:
            yield got
        finally:
            task.cancel()


async def wait_for(got: list[Any], n: int) -> None:
    for _ in range(3000):
        if len(got) >= n:
            return
        await asyncio.sleep(0.002)  # the broker forwards in its own process
    raise AssertionError(f"only {len(got)} of {n} messages arrived")


def test_payloads_group_runs_of_a_bed_and_kind_in_order() -> None:
    out = payloads(
        items(), gateway_id="gw", prefix="bedside", patients={1: PATIENT}, include_patient=False
    )
    assert [(t, [i.row_id for i in c]) for t, _, c in out] == [
        ("bedside/gw/beds/bed-1/alarms", [9]),
        ("bedside/gw/beds/bed-1/numerics", [1, 2]),
        ("bedside/gw/beds/bed-2/numerics", [3]),
        ("bedside/gw/beds/bed-1/events", [10]),
    ]
    body = json.loads(out[1][1])
    assert body["id"] == "numeric-1-2" and "patient" not in body
    assert body["items"][0]["code"] == "MDC_PULS_OXIM_SAT_O2" and body["items"][0]["value"] == 91
    with_patient = payloads(
        items(), gateway_id="gw", prefix="bedside", patients={1: PATIENT}, include_patient=True
    )
    assert json.loads(with_patient[1][1])["patient"] == {"mrn": "MRN-0042"}


def test_a_non_finite_value_goes_as_null_in_strict_json() -> None:
    nan = OutboxItem(
        1, "numeric", 1, 0, T0, "bed-1", 1, "ox-1/MDC_PULS_OXIM_PERF_REL", 1, T0,
        {"value": float("nan"), "unit": "1", "status": []},
    )  # fmt: skip
    ((_, payload, _),) = payloads(
        [nan], gateway_id="gw", prefix="bedside", patients={}, include_patient=False
    )

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    body = json.loads(payload, parse_constant=refuse)
    assert body["items"][0]["value"] is None


async def test_publishes_with_tls_qos1_and_announces_itself(tmp_path: Path, pki: Pki) -> None:
    clock = ManualClock()
    with mosquitto(tmp_path / "broker", pki) as port:
        async with listener(port, pki, "bedside/#") as got:
            dest = MqttDestination(
                "cloud",
                host="localhost",
                port=port,
                gateway_id="gw-ward3",
                clock=clock,
                tls=pki.client_context(),
            )
            delivery = await dest.send(Batch(items(), {1: PATIENT}))
            await wait_for(got, 5)
            await dest.close()
            await wait_for(got, 6)
    assert [i.row_id for i in delivery.accepted] == [9, 1, 2, 3, 10]
    topics = [t for t, _, _ in got]
    assert topics[0] == "bedside/gw-ward3/status" and got[0][1]["state"] == "online"
    assert topics[1:5] == [
        "bedside/gw-ward3/beds/bed-1/alarms",
        "bedside/gw-ward3/beds/bed-1/numerics",
        "bedside/gw-ward3/beds/bed-2/numerics",
        "bedside/gw-ward3/beds/bed-1/events",
    ]
    assert got[-1][0] == "bedside/gw-ward3/status" and got[-1][1]["state"] == "offline"


async def test_a_dead_broker_is_unavailable(tmp_path: Path, pki: Pki) -> None:
    clock = ManualClock()
    with mosquitto(tmp_path / "broker", pki) as port:
        pass  # started and stopped: nobody listens on the port now
    dest = MqttDestination(
        "cloud", host="localhost", port=port, gateway_id="gw", clock=clock, tls=pki.client_context()
    )
    with pytest.raises(DestinationUnavailable, match="cannot connect"):
        await dest.send(Batch(items()))
    await dest.close()


CHILD = """
import asyncio, sys
from drivers.clock import SystemClock
from gateway.sync.delivery import Batch
from gateway.sync.mqtt import MqttDestination
from tests.support.tls import Pki
from pathlib import Path
folder = Path(sys.argv[2])
pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key",
          folder / "client.pem", folder / "client.key")
async def main():
    dest = MqttDestination("cloud", host="localhost", port=int(sys.argv[1]),
                           gateway_id="gw-killed", clock=SystemClock(), tls=pki.client_context())
    await dest.send(Batch(()))
    print("connected", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def test_the_last_will_says_offline_when_the_gateway_is_killed(
    tmp_path: Path, pki: Pki
) -> None:
    with mosquitto(tmp_path / "broker", pki) as port:
        async with listener(port, pki, "bedside/gw-killed/status") as got:
            child = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-c", CHILD, str(port), str(pki.ca.parent)],
                stdout=subprocess.PIPE,
                cwd=Path(__file__).parents[3],
                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
            )
            try:
                assert child.stdout is not None
                line = await asyncio.to_thread(child.stdout.readline)
                assert line.strip() == b"connected"
                await wait_for(got, 1)
                child.send_signal(signal.SIGKILL)
                await asyncio.to_thread(child.wait, 10)
                await wait_for(got, 2)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    assert [g[1]["state"] for g in got] == ["online", "offline"]
