"""End to end: a simulated bed's readings go through the hub, the encrypted store and its
outbox to a real HL7 receiver and a real MQTT broker; /api/sync tells a technician how each
destination is doing; a high alarm that no central system confirms comes back on locally.

Real parts everywhere (ptys, production transport and codec, store, MLLP over TCP, TLS to
mosquitto, aiohttp page); time is a ManualClock the test advances in device-sized steps.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drivers.clock import ManualClock
from drivers.readings import Condition, DeviceEvent
from gateway.alarms.model import GATEWAY
from gateway.config import load
from gateway.daemon import Gateway
from gateway.supervisor import SdNotify
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import Destination, TwinStore
from gateway.web.auth import UserFile
from tests.support.broker import mosquitto
from tests.support.hl7_peer import PeerState, hl7_peer
from tests.support.net import free_port
from tests.support.tls import make_pki

CONFIG = """
[gateway]
id = "sync-ward"
data_dir = "state"
listen = "127.0.0.1:8080"
simulation = true

[[beds]]
id = "bed-1"
  [beds.patient]
  name = "Ann Lee"
  mrn = "MRN-0042"
  birth_date = 1970-01-02

  [[beds.devices]]
  id = "ox-1"
  driver = "nonin"
  simulate = "normal"

[[destinations]]
name = "hie"
protocol = "hl7-mllp"
host = "127.0.0.1"
port = {hl7_port}
facility = "WARD3"
confirm_alarms_within = 20

[[destinations]]
name = "cloud"
protocol = "mqtt"
host = "localhost"
port = {mqtt_port}
ca_file = "{pki}/ca.pem"
cert_file = "{pki}/client.pem"
key_file = "{pki}/client.key"
"""


PASSWORD = "correct horse battery"


class Ward:
    def __init__(self, gateway: Gateway, clock: ManualClock, session: aiohttp.ClientSession):
        self.gateway, self.clock, self.session = gateway, clock, session

    async def get(self, path: str) -> Any:
        async with self.session.get(f"http://127.0.0.1:{self.gateway.web.port}{path}") as r:
            assert r.status == 200
            return await r.json()

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.gateway.web.port}{path}"
        async with self.session.request(method, url, **kwargs) as r:
            return r.status, await r.json(content_type=None)

    async def login(self, name: str) -> str:
        status, body = await self.call(
            "POST", "/api/login", json={"name": name, "password": PASSWORD}
        )
        assert status == 200
        return str(body["csrf"])

    async def step(self, seconds: float = 1 / 3) -> None:
        await self.clock.advance(seconds)
        await asyncio.sleep(0.003)  # real turns for the ptys, sockets and store thread


@pytest.fixture
async def ward(tmp_path: Path) -> AsyncIterator[tuple[Ward, dict[str, Any]]]:
    pki = make_pki(tmp_path / "pki")
    hl7_port = free_port()
    with mosquitto(tmp_path / "broker", pki) as mqtt_port:
        path = tmp_path / "config.toml"
        path.write_text(
            textwrap.dedent(CONFIG).format(
                hl7_port=hl7_port, mqtt_port=mqtt_port, pki=pki.ca.parent
            )
        )
        clock = ManualClock()
        config = load(path)
        assert config.web.users_file is not None
        config.web.users_file.parent.mkdir(parents=True, exist_ok=True)
        UserFile(config.web.users_file).add("tom", "technician", PASSWORD, n=2**10)
        UserFile(config.web.users_file).add("ann", "nurse", PASSWORD, n=2**10)
        store = TwinStore(
            config.store.path,
            KeyRing(generate_kek()),
            destinations=[Destination(d.name, d.carries) for d in config.destinations],
        )
        gateway = Gateway(config, clock=clock, notify=SdNotify(), listen_port=0, store=store)
        runner = asyncio.create_task(gateway.run(handle_signals=False))
        await asyncio.wait_for(gateway.supervisor.ready.wait(), 10)
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            yield Ward(gateway, clock, session), {"hl7_port": hl7_port, "store": store}
        gateway.supervisor.stop()
        await asyncio.wait_for(runner, 10)
        store.close()


def observations(raw: str) -> set[tuple[str, str, str]]:
    """(OBX-3 code, OBX-5 value, OBX-14 time) of every metric OBX in a message."""
    fields = [seg.split("|") for seg in raw.split("\r") if seg.startswith("OBX|")]
    return {(f[3], f[5], f[14]) for f in fields if len(f) > 14 and f[5]}


def spo2_values(peer: PeerState) -> list[str]:
    return [
        seg.split("|")[5]
        for raw in peer.raw
        for seg in raw.split("\r")
        if seg.startswith("OBX|") and "|150456^" in seg
    ]


async def test_a_ward_syncs_through_an_outage_and_unconfirmed_alarms_come_back(
    ward: tuple[Ward, dict[str, Any]],
) -> None:
    w, ctx = ward
    # The HL7 receiver is down from the start: data waits in the outbox, MQTT gets it.
    for _ in range(60):
        await w.step()
    status = {d["name"]: d for d in (await w.get("/api/sync"))["destinations"]}
    assert status["hie"]["state"] == "backing_off"
    assert "cannot connect" in status["hie"]["last_error"]
    assert status["hie"]["backlog"].get("numeric", 0) > 0
    assert status["cloud"]["delivered"].get("numeric", 0) > 0

    # An asystole (high, physiological) the alert manager cannot confirm (MQTT's PUBACK
    # does not count: it is not an alert manager): after the configured 20 s the bedside
    # learns that forwarding failed.
    w.gateway.hub.publish(DeviceEvent("ox-1", Condition.ASYSTOLE, True, w.clock.wall(), "test"))
    for _ in range(66):
        await w.step()
    beds = {b["id"]: b for b in await w.get("/api/beds")}
    names = {a["condition"] for a in beds["bed-1"]["alarms"]}
    assert {"asystole", "alarm_forwarding_failed"} <= names

    # The receiver comes back: the backlog drains, the alarm first, and is confirmed.
    with hl7_peer(port=ctx["hl7_port"]) as (peer, _):
        hie = next(s for s in w.gateway.sync if s.name == "hie")
        for _ in range(3000):
            # Time moves only while the worker waits on the clock, not for a real answer:
            # the receiver runs in another thread at the machine's pace.
            if hie.status.state == "sending":
                await asyncio.sleep(0.005)
            else:
                await w.step(1.0)
            status = {d["name"]: d for d in (await w.get("/api/sync"))["destinations"]}
            # Caught up: what is still queued is only the last few seconds' readings.
            age = status["hie"]["oldest_unsent_age"]
            if status["hie"]["failures_in_a_row"] == 0 and (age is None or age < 5):
                break
        else:
            raise AssertionError(f"backlog did not drain: {status['hie']}")
        for _ in range(5):
            await w.step()
    assert status["hie"]["delivered"]["alarm"] >= 1 and status["hie"]["last_error"] == ""
    types = [raw.split("\r")[0].split("|")[8] for raw in peer.raw]
    assert types[0] == "ORU^R40^ORU_R40"  # the alarm went first
    assert "MRN-0042" in peer.raw[0]
    assert len(spo2_values(peer)) >= 10
    beds = {b["id"]: b for b in await w.get("/api/beds")}
    assert "alarm_forwarding_failed" not in {
        a["condition"] for a in beds["bed-1"]["alarms"] if a["state"] != "cleared"
    }


async def test_a_technician_reviews_refused_messages_and_replays_them(
    ward: tuple[Ward, dict[str, Any]],
) -> None:
    w, ctx = ward
    hie = next(s for s in w.gateway.sync if s.name == "hie")
    with hl7_peer(port=ctx["hl7_port"]) as (peer, _):
        peer.script = ["AE", "AR"]  # the interface engine refuses the first two messages
        for _ in range(600):
            await w.step()
            if len(peer.raw) >= 3:  # both refusals answered, and one more accepted
                break
        else:
            raise AssertionError(f"no dead letters: {hie.status}")
        await hie.refresh()
        await w.step()
        gateway_alarms = {
            (a["condition"], a["priority"]) for a in w.gateway.alarms.bed_alarms(GATEWAY)
        }
        assert ("sync_dead_letters", "low") in gateway_alarms

        # The desk is for technicians: no login 401, a nurse 403, an unknown destination 404.
        path = "/api/sync/hie/dead-letters"
        assert (await w.call("GET", path))[0] == 401
        nurse_csrf = await w.login("ann")
        assert (await w.call("GET", path))[0] == 403
        headers = {"X-CSRF-Token": nurse_csrf}
        body = {"action": "dismiss"}
        assert (await w.call("POST", path, json=body, headers=headers))[0] == 403
        csrf = await w.login("tom")
        headers = {"X-CSRF-Token": csrf}
        assert (await w.call("GET", "/api/sync/nope/dead-letters"))[0] == 404
        status, listed = await w.call("GET", path)
        # One dead letter per outbox entry (a refused message carries several readings).
        refused = listed["open"]
        assert status == 200 and refused == hie.status.dead_letters_open >= 2
        assert {d["reason"][:2] for d in listed["dead_letters"]} == {"AE", "AR"}
        assert "MRN-0042" not in str(listed)  # reasons and ids only, no patient data
        bad = {"action": "delete"}
        assert (await w.call("POST", path, json=bad, headers=headers))[0] == 400

        # Replay: the rows go again, the receiver (fixed) accepts them, the alarm ends.
        before = len(peer.raw)
        replay = {"action": "replay"}
        status, answer = await w.call("POST", path, json=replay, headers=headers)
        assert (status, answer) == (200, {"closed": refused, "open": 0})
        for _ in range(300):
            await w.step()
            if len(peer.raw) >= before + 2 and not hie.status.backlog.get("numeric"):
                break
        conditions = {a["condition"] for a in w.gateway.alarms.bed_alarms(GATEWAY)}
        assert "sync_dead_letters" not in conditions
        # Every observation of the two refused messages arrived again, with its original
        # values and times (the FHIR and MQTT ids derive from the same rows).
        refused_obs = observations(peer.raw[0]) | observations(peer.raw[1])
        replayed = set().union(*(observations(raw) for raw in peer.raw[before:]))
        assert refused_obs and refused_obs <= replayed
        status, closed = await w.call("GET", path + "?all=1")
        assert {d["resolution"] for d in closed["dead_letters"]} == {"replayed by tom"}
