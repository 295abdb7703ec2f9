"""End to end: the shipped ward's desaturating bed and probe-off bed raise their alarms.

Beds 2 and 3 of the shipped ``config.toml`` (their oximeters, limits and the ``[alarms]``
section as shipped) run in a real gateway: simulators on ptys, production drivers, hub,
twin, alarm engine, encrypted store and the page server with its real login. Time is a
ManualClock advanced in device-sized steps. Within a minute of clock time the page's beds
show a physiological alarm (SpO2 low) and a technical one (probe off); a nurse logs in and
acknowledges, which is committed to the store's alarm log with her name.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drivers.clock import ManualClock
from gateway.config import parse
from gateway.daemon import Gateway
from gateway.supervisor import SdNotify
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.store import TwinStore
from gateway.web.auth import UserFile

SHIPPED = Path(__file__).resolve().parents[2] / "config.toml"
PASSWORD = "correct horse battery"


def ward_config(tmp_path: Path) -> dict[str, Any]:
    """The shipped config, cut to the oximeters of beds 2 and 3, state under tmp_path."""
    raw = tomllib.loads(SHIPPED.read_text())
    raw["gateway"]["data_dir"] = str(tmp_path / "state")
    raw["gateway"]["listen"] = "127.0.0.1:8080"  # the test binds port 0 instead
    raw.pop("ble", None)
    beds = [b for b in raw["beds"] if b["id"] in ("bed-2", "bed-3")]
    for bed in beds:
        bed["devices"] = [d for d in bed["devices"] if d["id"].endswith("-spo2")]
    raw["beds"] = beds
    return raw


class Ward:
    def __init__(self, gateway: Gateway, clock: ManualClock, http: aiohttp.ClientSession):
        self.gateway, self.clock, self.http = gateway, clock, http
        self.base = f"http://127.0.0.1:{gateway.web.port}"

    async def get(self, path: str) -> Any:
        async with self.http.get(self.base + path) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def beds(self) -> dict[str, dict[str, Any]]:
        return {bed["id"]: bed for bed in await self.get("/api/beds")}

    async def step(self, seconds: float = 1 / 3) -> None:
        await self.clock.advance(seconds)
        for _ in range(3):
            await asyncio.sleep(0)

    async def until(
        self, predicate: Callable[[dict[str, dict[str, Any]]], bool], within: float
    ) -> dict[str, dict[str, Any]]:
        start = self.clock.monotonic()
        while self.clock.monotonic() - start <= within:
            beds = await self.beds()
            if predicate(beds):
                return beds
            await self.step()
        raise AssertionError(f"not reached within {within} s of device time")


@pytest.fixture
async def ward(tmp_path: Path) -> AsyncIterator[Ward]:
    config = parse(ward_config(tmp_path), path=SHIPPED)
    assert config.web.users_file is not None
    config.web.users_file.parent.mkdir(parents=True, exist_ok=True)
    UserFile(config.web.users_file).add("ann", "nurse", PASSWORD, n=2**10)
    clock = ManualClock()
    store = TwinStore(config.store.path, KeyRing(generate_kek()))
    gateway = Gateway(config, clock=clock, notify=SdNotify(), listen_port=0, store=store)
    runner = asyncio.create_task(gateway.run(handle_signals=False))
    await asyncio.wait_for(gateway.supervisor.ready.wait(), 10)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield Ward(gateway, clock, http)
    gateway.supervisor.stop()
    await asyncio.wait_for(runner, 5)
    store.close()


def conditions(bed: dict[str, Any]) -> set[str]:
    return {a["condition"] for a in bed["alarms"]}


async def test_shipped_ward_shows_a_physiological_and_a_technical_alarm_within_a_minute(
    ward: Ward,
) -> None:
    seen: dict[str, dict[str, Any]] = {}

    def note(beds: dict[str, dict[str, Any]]) -> bool:
        for bed in beds.values():
            for alarm in bed["alarms"]:
                seen.setdefault(alarm["condition"], {**alarm, "audio": bed["audio"]})
        return "spo2_low" in seen and "sensor_off" in seen

    await ward.until(note, 60)
    desat, probe = seen["spo2_low"], seen["sensor_off"]
    assert desat["bed"] == "bed-2" and probe["bed"] == "bed-3"
    assert (desat["kind"], desat["priority"], desat["state"]) == (
        "physiological",
        "medium",
        "active",
    )
    assert desat["value"] < desat["limit"] == 95 and desat["delay"] == 10
    assert desat["audio"] == {"priority": "medium", "paused_until": None, "paused_by": None}
    assert (probe["kind"], probe["priority"], probe["delay"]) == ("technical", "medium", 5)
    listed = await ward.get("/api/alarms")  # the probe alarm may have cleared: recent
    assert {"spo2_low", "sensor_off"} <= {a["condition"] for a in listed}
    health = await ward.get("/api/health")
    assert health["alarms"]["open"] >= 1 and health["alarms"]["log"]["trouble"] is None


async def test_acknowledge_needs_login_and_is_committed_with_the_nurses_name(ward: Ward) -> None:
    beds = await ward.until(lambda b: "spo2_low" in conditions(b["bed-2"]), 60)
    alarm = next(a for a in beds["bed-2"]["alarms"] if a["condition"] == "spo2_low")
    ack = f"{ward.base}/api/alarms/{alarm['id']}/acknowledge"
    async with ward.http.post(ack) as response:
        assert response.status == 401
    async with ward.http.post(
        ward.base + "/api/login", json={"name": "ann", "password": PASSWORD}
    ) as response:
        assert response.status == 200
        csrf = (await response.json())["csrf"]
    async with ward.http.post(ack) as response:
        assert response.status == 403  # logged in, but no CSRF token
    async with ward.http.post(ack, headers={"X-CSRF-Token": csrf}) as response:
        assert response.status == 200
        body = await response.json()
    assert body["recorded"] is True
    assert (body["alarm"]["state"], body["alarm"]["acknowledged_by"]) == ("acknowledged", "ann")
    beds = await ward.beds()
    shown = next(a for a in beds["bed-2"]["alarms"] if a["id"] == alarm["id"])
    assert shown["state"] == "acknowledged"
    writer = ward.gateway.writer
    assert writer is not None
    store = writer.store
    rows = await writer.call(lambda: list(store.rows("alarm", "bed-2")))
    mine = [(r["change"], r["by"]) for r in rows if r["alarm"] == alarm["id"]]
    assert mine == [("raised", None), ("acknowledged", "ann")]


async def test_a_page_that_stops_confirming_raises_the_self_check_alarm(ward: Ward) -> None:
    last_id: list[int] = []

    async def read_stream(response: aiohttp.ClientResponse) -> None:
        async for line in response.content:
            if line.startswith(b"id: "):
                last_id.append(int(line[4:]))

    async def gateway_alarms() -> set[str]:
        return {
            a["condition"]
            for a in await ward.get("/api/alarms")
            if a["bed"] == "_gateway" and a["state"] != "cleared"
        }

    async with ward.http.get(ward.base + "/api/stream") as stream:
        reader = asyncio.create_task(read_stream(stream))
        try:
            # A page that confirms every push keeps the path healthy ...
            for _ in range(30):
                await ward.step()
                if last_id:
                    async with ward.http.post(
                        ward.base + "/api/alarm-path/confirm",
                        json={"seen": last_id[-1], "client": "test-page"},
                    ) as response:
                        assert response.status == 204
            assert "alarm_path_failed" not in await gateway_alarms()
            # ... one that stops (a hung script, a frozen browser) is noticed within seconds.
            for _ in range(24):
                await ward.step()
            assert "alarm_path_failed" in await gateway_alarms()
            health = await ward.get("/api/health")
            assert health["alarms"]["self_check"]["failing"].startswith("no page confirmed")
            assert health["alarms"]["sound"]["on"] is True
            async with ward.http.post(
                ward.base + "/api/alarm-path/confirm",
                json={"seen": last_id[-1], "client": "test-page"},
            ) as response:
                assert response.status == 204
            assert "alarm_path_failed" not in await gateway_alarms()
        finally:
            reader.cancel()
