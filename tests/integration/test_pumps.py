"""End to end for infusion pumps: simulated pumps (Modbus TCP on 127.0.0.1, and two pumps of
two beds sharing one simulated RTU line on ptys) -> transports -> pump models -> hub -> twin
-> GET /api/beds. Time is a ManualClock stepped in 50 ms increments; after each step the
test waits (bounded) until every line has its replies. Also: the read-only guarantee over a
whole run, and configuration that asks for writes or names a bad profile."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drivers.clock import ManualClock
from drivers.transport.modbus import READ_FUNCTION_CODES
from gateway.cli import main
from gateway.config import load
from gateway.daemon import Gateway
from gateway.supervisor import SdNotify
from tests.drivers.infusion.support import eventually, line_settled

CONFIG = """
[gateway]
id = "pump-ward"
data_dir = "state"
listen = "127.0.0.1:8080"
stale_after = 5.0

[[beds]]
id = "bed-1"

  [[beds.devices]]
  id = "pump-tcp"
  driver = "modbus-pump-tcp"
  simulate = "occlusion"

[[beds]]
id = "bed-2"

  [[beds.devices]]
  id = "pump-rtu-a"
  driver = "modbus-pump-rtu"
  profile = "cdab-tenths"
  unit = 1
  baudrate = 115200
  simulate = "normal"

[[beds]]
id = "bed-3"

  [[beds.devices]]
  id = "pump-rtu-b"
  driver = "modbus-pump-rtu"
  unit = 2
  baudrate = 115200
  stale_limit = 4.0
  simulate = "silence"
"""

STEP = 0.05
TIME_TO_END = "MDC_TIME_PD_REMAIN"


class Ward:
    def __init__(self, gateway: Gateway, clock: ManualClock, session: aiohttp.ClientSession):
        self.gateway, self.clock, self.session = gateway, clock, session

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.web.port}"

    async def beds(self) -> dict[str, dict[str, Any]]:
        async with self.session.get(f"{self.url}/api/beds") as response:
            assert response.status == 200
            return {bed["id"]: bed for bed in await response.json()}

    def settled(self) -> bool:
        fleet = self.gateway.modbus
        return all(
            line_settled(transport, fleet.simulated[address])
            for address, transport in fleet.lines.items()
        )

    async def until(
        self, predicate: Callable[[dict[str, dict[str, Any]]], bool], within: float
    ) -> dict[str, dict[str, Any]]:
        start = self.clock.monotonic()
        while self.clock.monotonic() - start <= within:
            beds = {bed["id"]: bed for bed in self.gateway.beds()}
            if predicate(beds):
                return await self.beds()
            await self.clock.advance(STEP)
            await eventually(self.settled, "replies on every line")
            await asyncio.sleep(0)
        raise AssertionError(f"not reached within {within} s of device time")


@pytest.fixture
async def ward(tmp_path: Path) -> AsyncIterator[Ward]:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(CONFIG))
    clock = ManualClock()
    gateway = Gateway(load(path), clock=clock, notify=SdNotify(), listen_port=0)
    runner = asyncio.create_task(gateway.run(handle_signals=False))
    await asyncio.wait_for(gateway.supervisor.ready.wait(), 10)
    for server in gateway.modbus.simulated.values():
        await asyncio.wait_for(server.ready.wait(), 10)
    async with aiohttp.ClientSession() as session:
        yield Ward(gateway, clock, session)
    gateway.supervisor.stop()
    await asyncio.wait_for(runner, 5)


def device(bed: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = bed["devices"][0]
    return entry


def has_time_to_end(bed: dict[str, Any]) -> bool:
    vital = bed["vitals"].get(TIME_TO_END)
    return vital is not None and vital["value"] is not None and not vital["stale"]


async def test_every_pump_reaches_the_twin_with_time_to_end(ward: Ward) -> None:
    beds = await ward.until(lambda b: all(has_time_to_end(b[i]) for i in b), 5)
    for bed_id in ("bed-1", "bed-2", "bed-3"):
        vitals = beds[bed_id]["vitals"]
        rate, remaining = vitals["MDC_FLOW_FLUID_PUMP"], vitals["MDC_VOL_FLUID_TBI_REMAIN"]
        assert rate["unit"] == "mL/h" and rate["value"] == pytest.approx(125.0)
        assert remaining["unit"] == "mL"
        end = vitals[TIME_TO_END]
        assert end["unit"] == "min"
        assert end["value"] == pytest.approx(remaining["value"] / 125.0 * 60, abs=0.1)
        assert vitals["MDC_PUMP_STAT"]["value"] == 3  # running
        entry = device(beds[bed_id])
        assert entry["state"] == "connected"
        assert entry["infusion"]["state"] == "running"
        assert entry["infusion"]["drug"] == "Heparin 25000 IU"
        assert entry["infusion"]["time_to_end_min"] == end["value"]
        assert entry["identity"]["serial"] in ("", "SIM-0001", "SIM-0002")
    # Two pumps of two beds share one simulated RS-485 line; the TCP pump has its own.
    assert len(ward.gateway.modbus.lines) == 2


async def test_occlusion_alarm_reaches_the_twin_and_clears(ward: Ward) -> None:
    beds = await ward.until(lambda b: "occlusion" in device(b["bed-1"])["conditions"], 25)
    assert device(beds["bed-1"])["infusion"]["state"] == "alarm"
    assert beds["bed-1"]["vitals"]["MDC_FLOW_FLUID_PUMP"]["value"] == 0.0
    assert beds["bed-1"]["vitals"][TIME_TO_END]["value"] is None  # no flow, no end
    beds = await ward.until(lambda b: "occlusion" not in device(b["bed-1"])["conditions"], 20)
    assert device(beds["bed-1"])["infusion"]["state"] == "running"
    assert "occlusion" not in device(beds["bed-2"])["conditions"]


async def test_silent_pump_raises_no_data_without_stalling_its_line(ward: Ward) -> None:
    # pump-rtu-b falls silent 20 s into its minute; its stale limit is 4 s.
    beds = await ward.until(lambda b: "no_data" in device(b["bed-3"])["conditions"], 30)
    # no_data comes at the pump's 4 s stale limit; the twin shows its values stale after
    # its own stale_after (5 s), so a second later at most.
    beds = await ward.until(lambda b: b["bed-3"]["vitals"][TIME_TO_END]["stale"], 1.5)
    assert "no_data" not in device(beds["bed-2"])["conditions"]
    fresh = await ward.until(lambda b: not b["bed-2"]["vitals"][TIME_TO_END]["stale"], 2)
    assert device(fresh["bed-2"])["state"] == "connected"
    await ward.until(lambda b: "no_data" not in device(b["bed-3"])["conditions"], 30)


async def test_no_write_request_ever_leaves_the_gateway(ward: Ward) -> None:
    await ward.until(lambda b: all(has_time_to_end(b[i]) for i in b), 5)
    body = {"rate": 999, "vtbi": 0, "command": "stop", "unit": 1, "address": 0, "value": 1}
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/api/beds", "/api/beds/bed-1", "/api/devices/pump-tcp",
                     "/api/pumps/pump-tcp", "/api/devices/pump-tcp/write"):  # fmt: skip
            async with ward.session.request(method, ward.url + path, json=body) as response:
                assert 400 <= response.status < 500, (method, path, response.status)
    await ward.until(lambda b: ward.clock.monotonic() >= 1008, 10)
    requests = [r for s in ward.gateway.modbus.simulated.values() for r in s.requests]
    assert len(requests) > 20
    assert {fc for _, fc, _ in requests} <= {3, 4} <= READ_FUNCTION_CODES


def _config_with(tmp_path: Path, extra: str, *, profile_dir: Path | None = None) -> Path:
    pump = textwrap.dedent(
        """
        [gateway]
        id = "w"

        [[beds]]
        id = "bed-1"

          [[beds.devices]]
          id = "pump-1"
          driver = "modbus-pump-tcp"
          host = "10.0.0.21"
        """
    )
    path = tmp_path / "config.toml"
    dir_line = f'  profile_dir = "{profile_dir}"\n' if profile_dir else ""
    path.write_text(pump + dir_line + extra)
    return path


@pytest.mark.parametrize("key", ["write_enable = true", "control = true", "setpoint_rate = 5.0"])
def test_config_cannot_ask_for_writes(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(_config_with(tmp_path, f"  {key}\n"))]) == 2
    err = capsys.readouterr().err
    assert f"beds[0].devices[0].{key.split()[0]}: unknown key" in err


def test_bad_profile_stops_start_up_naming_file_key_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    from drivers.infusion.profile import SHIPPED_DIR

    text = (SHIPPED_DIR / "generic.toml").read_text()
    (folder / "site.toml").write_text(text.replace("address = 28", "address = 13"))
    config = _config_with(tmp_path, '  profile = "site"\n', profile_dir=folder)
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "beds[0].devices[0]" in err
    assert f"profile {folder / 'site.toml'}: values." in err
    assert "register 13 is also used by values." in err
    assert main(["run", "--config", str(config), "--data-dir", str(tmp_path / "d")]) == 2
