"""``bedside-gateway status`` against a running gateway: exit 0 healthy, 1 degraded (with the
reason a technician needs), 2 when no gateway answers (tests/gateway/test_cli.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.cli import main
from tests.integration.test_ward import fresh
from tests.support.ops_ward import OpsWard, running_ward

SPO2 = "MDC_PULS_OXIM_SAT_O2"


async def status(ward: OpsWard, *extra: str) -> int:
    # The command blocks on HTTP; in a thread, so this loop keeps serving it.
    url = f"http://127.0.0.1:{ward.gateway.web.port}"
    return await asyncio.to_thread(main, ["status", "--url", url, *extra])


async def test_healthy_ward_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running_ward(tmp_path, with_missing=False) as ward:
        await ward.until(lambda b: fresh(b["bed-1"], SPO2), 10)
        code = await status(ward)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "health: OK" in out
    assert "  store: ok: " in out and "  loop: ok: " in out
    assert "  device " not in out  # no device needs a technician
    assert f"  key: key file {tmp_path / 'state' / 'keys' / 'kek'}" in out


async def test_unplugged_device_exits_1_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_ward(tmp_path) as ward:
        await ward.until(lambda b: fresh(b["bed-1"], SPO2), 10)
        code = await status(ward)
        out = capsys.readouterr().out
        json_code = await status(ward, "--json")
        report = json.loads(capsys.readouterr().out)
    assert code == 1, out
    assert "health: OK" in out  # the gateway itself is fine ...
    line = next(x for x in out.splitlines() if x.startswith("  device ox-missing: "))
    assert "no such device (not plugged in, or wrong path)" in line  # ... this port is not
    assert json_code == 1
    assert report["verdict"]["devices"][0]["id"] == "ox-missing"


async def test_with_a_login_required_to_view_status_reports_healthz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_ward(tmp_path, web="require_login_to_view = true") as ward:
        status_code, _ = await ward.get_json("/api/health")
        assert status_code == 401  # the beds are not for anonymous eyes here
        for _ in range(6):
            await ward.step()
        code = await status(ward)
    out = capsys.readouterr().out
    assert code == 1, out
    assert "health only" in out and "health: OK" in out
    assert "  device ox-missing: disconnected: " in out
