"""The nurse page in headless Chromium, fed through the real server.

The server runs in the test's event loop; every blocking selenium call goes through
``asyncio.to_thread`` so the loop keeps serving the browser meanwhile. Waits on the browser
are bounded (WebDriverWait); time on the gateway moves only with ``clock.advance``.

The page keeps its own time too (values age on in the browser, a silent stream is declared
lost): the stall tests hold the gateway's clock still and let the browser's real clock run,
with thresholds of about a second so they stay short.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from drivers.clock import ManualClock
from drivers.codes import (
    BEATS_PER_MINUTE,
    DIMENSIONLESS,
    ECG_LEAD_II,
    MILLILITRE,
    MILLILITRE_PER_HOUR,
    MILLIVOLT,
    MINUTE,
    PERCENT,
    PLETH,
    PULSE_RATE,
    PUMP_RATE,
    PUMP_STATUS,
    PUMP_TIME_REMAINING,
    PUMP_VTBI_REMAINING,
    SPO2,
)
from drivers.readings import CodecCounters, Condition, DeviceEvent, Numeric, Waveform
from gateway.alarms import service
from gateway.alarms.model import AlarmSettings
from gateway.twin.crypto import KeyRing, generate_kek
from gateway.twin.state import BedSpec, Twin
from gateway.twin.store import TwinStore
from gateway.twin.vocabulary import Patient
from gateway.twin.writer import StoreWriter
from gateway.web.auth import Auth, UserFile
from gateway.web.server import WebServer
from gateway.web.waveforms import WaveformBuffer
from tests.support.browser import CHROMIUM_ARGS as HEADLESS_ARGS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = (*HEADLESS_ARGS, "--disable-quic", "--window-size=1280,900")
#: Real seconds allowed for the browser to show what the gateway pushed.
BROWSER_TIMEOUT = 15.0
STALE_AFTER = 5.0
#: stale_after for the stall tests: real seconds in the browser, so small.
STALL_STALE_AFTER = 1.0
#: Real seconds allowed for the page to notice a stall on its own.
STALL_TIMEOUT = 5.0

#: Installed before the page's own script: logs every data-stale and data-connection change
#: with the browser's clock, so a test sees states that lasted less than one of its polls.
RECORDER = """
window.pageLog = [];
new MutationObserver((records) => {
  for (const r of records) {
    const el = r.target;
    window.pageLog.push({
      at: performance.now() / 1000,
      bed: el.closest && el.closest("[data-bed]") ? el.closest("[data-bed]").dataset.bed : null,
      code: el.dataset.code || null,
      stale: el.dataset.stale || null,
      connection: document.body ? document.body.dataset.connection : null,
      all_stale: Array.from(document.querySelectorAll("[data-code]"), (e) => e.dataset.stale),
    });
  }
}).observe(document, {
  subtree: true,
  attributes: true,
  attributeFilter: ["data-stale", "data-connection"],
});
"""
BEDS = [BedSpec("bed-1", "Bed 1"), BedSpec("bed-2", "Bed 2"), BedSpec("bed-3", "Bed 3")]


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"the page test needs headless Chromium, missing: {', '.join(missing)}. "
            "Install the Debian packages 'chromium' and 'chromium-driver' (.ci/run does).",
            pytrace=False,
        )


def start_browser(profile: Path) -> webdriver.Chrome:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


class Page:
    """Blocking selenium helpers, each run in a worker thread by the async test."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def until(
        self,
        condition: Callable[[webdriver.Chrome], Any],
        what: str,
        within: float = BROWSER_TIMEOUT,
    ) -> Any:
        def wait() -> Any:
            return WebDriverWait(self.driver, within, poll_frequency=0.05).until(
                condition, message=f"page never showed: {what}"
            )

        return await asyncio.to_thread(wait)

    async def attribute(self, selector: str, name: str) -> str | None:
        def read() -> str | None:
            return self.driver.find_element(By.CSS_SELECTOR, selector).get_attribute(name)

        return await asyncio.to_thread(read)

    async def text(self, selector: str) -> str:
        def read() -> str:
            return str(self.driver.find_element(By.CSS_SELECTOR, selector).text)

        return await asyncio.to_thread(read)

    async def log(self) -> list[dict[str, Any]]:
        entries = await self.call(self.driver.execute_script, "return window.pageLog;")
        assert isinstance(entries, list)
        return entries


def shows(selector: str, *, text: str | None = None, **attributes: str) -> Callable[..., bool]:
    """Condition: the element exists, its visible text contains ``text`` (in any case: CSS
    may upper-case it), and its attributes match."""

    def check(driver: webdriver.Chrome) -> bool:
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        if not found:
            return False
        element = found[0]
        if text is not None and text.lower() not in element.text.lower():
            return False
        return all(element.get_attribute(k.replace("_", "-")) == v for k, v in attributes.items())

    return check


def value_of(bed: str, code: Any) -> str:
    return f'[data-bed="{bed}"] .value[data-code="{code.refid}"]'


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the module (starting one takes seconds), recording."""
    require_browser()
    driver = start_browser(tmp_path_factory.mktemp("chromium") / "profile")
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def page(browser: webdriver.Chrome) -> AsyncIterator[Page]:
    try:
        yield Page(browser)
    finally:
        # Leave no page behind that would keep reconnecting to the next test's server.
        await asyncio.to_thread(browser.get, "about:blank")


async def test_page_shows_pushed_vitals_staleness_devices_and_a_lost_gateway(
    page: Page, tmp_path: Path
) -> None:
    clock = ManualClock()
    twin = Twin(BEDS, clock, STALE_AFTER)
    for n in (1, 2, 3):
        twin.register_device(f"bed-{n}", f"ox-{n}", "nonin_xpod", CodecCounters())
        twin.apply(DeviceEvent(f"ox-{n}", Condition.DISCONNECTED, False, clock.wall()))
    server = WebServer(
        host="127.0.0.1",
        port=0,
        beds=twin.snapshot,
        health=lambda: {"gateway": "ward-7"},
        version=lambda: twin.version,
        wait_changed=twin.wait_changed,
        clock=clock,
        min_push_interval=0.25,
        # Long, so the page's watchdog (about twice this, in real time) cannot fire while
        # the test holds the gateway's clock still.
        heartbeat_interval=600.0,
        stale_after=STALE_AFTER,
    )
    await server.start()

    def publish(source: str, spo2: float, pulse: float) -> None:
        twin.apply(Numeric(source, SPO2, spo2, PERCENT, clock.wall()))
        twin.apply(Numeric(source, PULSE_RATE, pulse, BEATS_PER_MINUTE, clock.wall()))

    try:
        await page.call(page.driver.get, f"http://127.0.0.1:{server.port}/")
        await page.until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-bed]")) == 3, "3 tiles"
        )
        labels = await page.call(
            lambda: [e.text for e in page.driver.find_elements(By.CSS_SELECTOR, ".bed-label")]
        )
        assert labels == ["Bed 1", "Bed 2", "Bed 3"]
        await page.until(shows("#gateway-name", text="ward-7"), "the gateway name")
        await page.until(shows("body", data_connection="live"), "a live connection")
        # No value yet: nothing to show as current.
        assert await page.text(value_of("bed-1", SPO2)) == "---"
        assert await page.attribute(value_of("bed-1", SPO2), "data-stale") == "true"
        await page.call(page.driver.execute_script, "window.sameDocument = true;")

        # Push: a published value appears without a reload.
        await clock.advance(1.0)
        publish("ox-1", 97.0, 72.0)
        await page.until(shows(value_of("bed-1", SPO2), text="97", data_stale="false"), "SpO2")
        await page.until(shows(value_of("bed-1", PULSE_RATE), text="72", data_stale="false"), "PR")
        assert await page.call(page.driver.execute_script, "return window.sameDocument === true;")
        assert await page.text('[data-bed="bed-1"] .metric-spo2 .unit') == "%"
        assert await page.text('[data-bed="bed-1"] .metric-pr .unit') == "/min"

        # Staleness: no new reading for longer than stale_after, and the push that follows.
        await clock.advance(STALE_AFTER + 1.0)
        await page.until(shows(value_of("bed-1", SPO2), data_stale="true"), "SpO2 stale")
        await page.until(
            shows('[data-bed="bed-1"] .metric-spo2 .stale-badge', text="stale"), "badge"
        )
        assert await page.text(value_of("bed-1", SPO2)) == "97"  # kept, but struck through
        decoration = await page.call(
            lambda: page.driver.find_element(
                By.CSS_SELECTOR, value_of("bed-1", SPO2)
            ).value_of_css_property("text-decoration-line")
        )
        assert "line-through" in decoration

        # A live bed, a bed whose device is gone and a technical condition, in one push.
        publish("ox-3", 95.0, 64.0)
        twin.apply(Numeric("ox-2", SPO2, 94.0, PERCENT, clock.wall()))
        twin.apply(DeviceEvent("ox-2", Condition.DISCONNECTED, True, clock.wall(), "port gone"))
        twin.apply(DeviceEvent("ox-1", Condition.SENSOR_OFF, True, clock.wall()))
        await clock.advance(0.25)
        await page.until(
            shows('[data-device="ox-2"]', text="disconnected", data_state="disconnected"),
            "ox-2 disconnected",
        )
        await page.until(shows('[data-bed="bed-1"] .conditions', text="sensor off"), "sensor off")
        await page.until(shows(value_of("bed-3", SPO2), text="95", data_stale="false"), "bed 3")
        assert await page.attribute(value_of("bed-2", SPO2), "data-stale") == "true"
        assert await page.attribute('[data-device="ox-3"]', "data-state") == "connected"

        screenshot = tmp_path / "nurse-page.png"
        assert await page.call(page.driver.save_screenshot, str(screenshot))
        data = screenshot.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000

        # The gateway goes away: the page says so and nothing is shown as current.
        await server.stop()
        await page.until(
            lambda d: (
                "connection to gateway lost" in d.find_element(By.TAG_NAME, "body").text.lower()
            ),
            "the lost-connection banner",
        )
        assert await page.call(
            lambda: page.driver.find_element(By.ID, "lost-banner").is_displayed()
        )
        states = await page.call(
            lambda: [
                e.get_attribute("data-stale")
                for e in page.driver.find_elements(By.CSS_SELECTOR, "[data-code]")
            ]
        )
        assert states and set(states) == {"true"}
    finally:
        await server.stop()


# -- a stream that stalls without closing ----------------------------------------------------

HEART_RATE = "MDC_ECG_HEART_RATE"


def stalled_ward() -> list[dict[str, Any]]:
    """What a twin reports just before the gateway hangs: one fresh value, one the device
    marks invalid, one already stale, and a device that is connected but silent."""

    def vital(value: float, unit: str, *, stale: bool, status: list[str]) -> dict[str, Any]:
        return {
            "value": value,
            "unit": unit,
            "age": 0.0,
            "stale": stale,
            "status": status,
            "source": "ox-1",
            "time": 1_700_000_000.0,
        }

    return [
        {
            "id": "bed-1",
            "label": "Bed 1",
            "vitals": {
                SPO2.refid: vital(97.0, "%", stale=False, status=[]),
                PULSE_RATE.refid: vital(80.0, "/min", stale=False, status=["invalid"]),
                HEART_RATE: vital(70.0, "/min", stale=True, status=[]),
            },
            "devices": [
                {
                    "id": "ox-1",
                    "driver": "nonin_xpod",
                    "state": "connected",
                    "detail": "",
                    "conditions": ["no_data"],
                }
            ],
        }
    ]


async def never_changes(seen: int) -> int:
    """The hung gateway's ``wait_changed``: nothing ever changes."""
    await asyncio.Event().wait()
    return seen


def stalled_server(snapshot: list[dict[str, Any]], heartbeat_interval: float) -> WebServer:
    # The gateway's clock never moves, so after the first push the stream stays open and
    # silent: no change, no stale check, no heartbeat.
    return WebServer(
        host="127.0.0.1",
        port=0,
        beds=lambda: snapshot,
        health=lambda: {"gateway": "ward-7"},
        version=lambda: 1,
        wait_changed=never_changes,
        clock=ManualClock(),
        heartbeat_interval=heartbeat_interval,
        stale_after=STALL_STALE_AFTER,
    )


def changes(log: list[dict[str, Any]], code: str) -> list[tuple[float, str]]:
    return [(e["at"], e["stale"]) for e in log if e["code"] == code]


async def test_a_value_turns_stale_in_the_browser_while_the_stream_is_silent(
    page: Page,
) -> None:
    snapshot = stalled_ward()
    # Heartbeat long enough that the page's watchdog cannot be what greys the value.
    server = stalled_server(snapshot, heartbeat_interval=600.0)
    await server.start()
    try:
        await page.call(page.driver.get, f"http://127.0.0.1:{server.port}/")
        await page.until(
            shows(value_of("bed-1", SPO2), text="97", data_stale="true"),
            "SpO2 stale without a word from the gateway",
            within=STALL_TIMEOUT,
        )
        # The gateway still calls it fresh, and the stream is still up: the page aged it.
        assert server.beds()[0]["vitals"][SPO2.refid]["stale"] is False
        assert server.clients == 1
        assert await page.attribute("body", "data-connection") == "live"
        badge = await page.text('[data-bed="bed-1"] .metric-spo2 .stale-badge')
        assert "stale" in badge.lower()

        log = await page.log()
        spo2 = changes(log, SPO2.refid)
        fresh_at = next(at for at, stale in spo2 if stale == "false")
        stale_at = next(at for at, stale in spo2 if stale == "true" and at > fresh_at)
        # Shown as current first, for about stale_after (the log's times are when the
        # browser got round to recording, a little after each change); greyed then.
        assert STALL_STALE_AFTER - 0.25 <= stale_at - fresh_at < STALL_STALE_AFTER + 1.0
        assert all(e["connection"] == "live" for e in log if e["at"] >= fresh_at)

        # A value the gateway calls stale was never shown as current, not even at first.
        assert {stale for _, stale in changes(log, HEART_RATE)} == {"true"}
        # Invalid: the value stays, out of the live colours, and the flag says why.
        pulse = value_of("bed-1", PULSE_RATE)
        assert await page.text(pulse) == "80"
        assert await page.attribute(pulse, "data-invalid") == "true"
        assert await page.text('[data-bed="bed-1"] .metric-pr .flags') == "invalid"
        assert await page.attribute(value_of("bed-1", SPO2), "data-invalid") == "false"
        # Conditions in words.
        assert await page.text('[data-bed="bed-1"] .conditions') == "no data"
    finally:
        await server.stop()


async def test_a_silent_stream_is_lost_after_the_heartbeat_or_stale_after(page: Page) -> None:
    heartbeat = 0.5
    # The page's watchdog: max(2 heartbeats, stale_after) + 1 second of silence.
    watchdog = max(2 * heartbeat, STALL_STALE_AFTER) + 1.0
    server = stalled_server(stalled_ward(), heartbeat_interval=heartbeat)
    await server.start()
    try:
        await page.call(page.driver.get, f"http://127.0.0.1:{server.port}/")

        def lost_and_back(driver: webdriver.Chrome) -> bool:
            states = [e["connection"] for e in driver.execute_script("return window.pageLog;")]
            return "lost" in states and "live" in states[states.index("lost") :]

        # Bounded well below the old 15 s: lost, then reconnected (the gateway still answers).
        await page.until(lost_and_back, "lost, then live again", within=STALL_TIMEOUT + 1.0)
        log = await page.log()
        live_at = next(e["at"] for e in log if e["connection"] == "live")
        lost = next(e for e in log if e["connection"] == "lost")
        # Not at stale_after (1 s), not at the old 2 heartbeats + 5 s: at the watchdog.
        assert watchdog - 0.25 <= lost["at"] - live_at < watchdog + 1.0
        assert lost["all_stale"] and set(lost["all_stale"]) == {"true"}
    finally:
        await server.stop()


# -- alarms: the real engine behind the real server ------------------------------------------

NURSE, NURSE_PASSWORD = "alice", "alice's password"
#: Limits of the "adult" profile the engine starts from (gateway/alarms/limits.py).
SPO2_LOW, SPO2_EXTREME_LOW, SPO2_DELAY = 90.0, 80.0, 10.0
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


def style_of(driver: webdriver.Chrome, selector: str) -> dict[str, Any]:
    """Computed animation and colours of the first element matching ``selector``."""
    found = driver.execute_script(
        """
        const el = document.querySelector(arguments[0]);
        if (!el) return null;
        const s = getComputedStyle(el);
        const r = el.getBoundingClientRect();
        return {name: s.animationName, duration: s.animationDuration,
                timing: s.animationTimingFunction, count: s.animationIterationCount,
                background: s.backgroundColor, color: s.color, visible: r.width > 0,
                text: el.textContent};
        """,
        selector,
    )
    assert isinstance(found, dict), f"no element {selector}"
    return found


def flash_hz(style: dict[str, Any]) -> float:
    duration = str(style["duration"])
    assert duration.endswith("s") and not duration.endswith("ms"), duration
    return 1.0 / float(duration[:-1])


def value_of_detail(code: Any) -> str:
    return f'#detail .value[data-code="{code.refid}"]'


def save_artifact(driver: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    """A screenshot for people to look at: in the test's tmp dir and in test-artifacts/."""
    path = tmp_path / name
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(data)
    return path


async def test_a_desaturation_raises_alarms_that_the_page_shows_sounds_and_lets_a_nurse_handle(
    page: Page, tmp_path: Path
) -> None:
    clock = ManualClock()
    beds = BEDS[:2]
    twin = Twin(beds, clock, STALE_AFTER)
    bed_of = {"ox-1": "bed-1", "ox-2": "bed-2"}
    for device, bed_id in bed_of.items():
        twin.register_device(bed_id, device, "nonin_xpod", CodecCounters())
    twin.register_device("bed-1", "pump-1", "modbus-pump-tcp", CodecCounters())
    store = TwinStore(tmp_path / "twin.sqlite", KeyRing(generate_kek()))
    for n, spec in enumerate(beds):
        # Alarm records belong to an admission: the store refuses them for an empty bed.
        store.admit(spec.id, Patient(f"Test Patient {n}", f"T-{n}", "1970-01-01"), clock.wall())
    writer = StoreWriter(store, bed_of.get, clock, data_dir=tmp_path)
    users = UserFile(tmp_path / "users.json")
    users.add(NURSE, "nurse", NURSE_PASSWORD, n=2**10)
    servers: list[WebServer] = []
    engine, version = service.build(
        beds=[(b.id, "adult", None) for b in beds],
        # The self-check's heartbeats are not what this test is about: rare, so jumps of
        # the test's clock cannot fail it; the page's confirmations are checked below.
        # No escalation: the pause below must run out by itself, not be broken through.
        settings=AlarmSettings(
            escalate_after=None, self_check_interval=3600.0, self_check_timeout=3600.0
        ),
        clock=clock,
        twin=twin,
        bed_of=bed_of.get,
        writer=writer,
        pages=lambda: sum(s.clients for s in servers),
    )

    async def audit(actor: str, action: str, detail: str) -> None:
        now = clock.wall()
        await writer.call(lambda: store.audit(actor, action, bed_id=None, detail=detail, now=now))

    def snapshot() -> list[dict[str, Any]]:
        ward = twin.snapshot()
        engine.decorate(ward)
        return ward

    waveforms = WaveformBuffer(bed_of.get)
    server = WebServer(
        host="127.0.0.1",
        port=0,
        beds=snapshot,
        health=lambda: {"gateway": "ward-7"},
        version=version.version,
        wait_changed=version.wait_changed,
        clock=clock,
        heartbeat_interval=600.0,
        stale_after=STALE_AFTER,
        auth=Auth(users, clock, audit=audit),
        waveforms=waveforms,
        alarms=engine,
    )
    servers.append(server)
    tasks = [asyncio.create_task(engine.run_timers()), asyncio.create_task(engine.log.run())]

    def reading(r: Any) -> None:
        twin.apply(r)
        engine.observe(r)

    def spo2(source: str, value: float) -> None:
        reading(Numeric(source, SPO2, value, PERCENT, clock.wall()))
        reading(Numeric(source, PULSE_RATE, 72.0, BEATS_PER_MINUTE, clock.wall()))

    async def second(bed1_spo2: float) -> None:
        """One second of the ward: bed 1 at ``bed1_spo2``, bed 2 steady."""
        spo2("ox-1", bed1_spo2)
        spo2("ox-2", 97.0)
        await clock.advance(1.0)

    def tile_alarm(bed: str) -> str:
        return f'[data-bed="{bed}"] .tile-alarm'

    async def audit_rows() -> list[tuple[str, str, str | None]]:
        rows = await writer.call(
            lambda: store.db.conn.execute(
                "SELECT actor, action, bed_id FROM audit_log ORDER BY id"
            ).fetchall()
        )
        return [tuple(r) for r in rows]

    await server.start()
    try:
        for device in bed_of:
            reading(DeviceEvent(device, Condition.DISCONNECTED, False, clock.wall()))
        await page.call(page.driver.get, f"http://127.0.0.1:{server.port}/")
        await page.until(shows("body", data_connection="live"), "a live connection")

        # Sound: blocked until a tap, and the page says so; a tap turns it on.
        await page.until(shows("body", data_sound="blocked"), "sound blocked")
        assert await page.call(
            lambda: page.driver.find_element(By.ID, "audio-prompt").is_displayed()
        )
        assert "tap" in (await page.text("#audio-prompt")).lower()
        await page.call(lambda: page.driver.find_element(By.ID, "audio-prompt").click())
        await page.until(shows("body", data_sound="on"), "sound on after a tap")
        assert not await page.call(
            lambda: page.driver.find_element(By.ID, "audio-prompt").is_displayed()
        )
        assert await page.attribute("#sound", "data-playing") == "none"

        for _ in range(3):
            await second(97.0)
        # The desaturation: below the low limit, above the extreme one. Nothing for the
        # condition's delay...
        for _ in range(int(SPO2_DELAY) - 1):
            await second(85.0)
        await page.until(shows(value_of("bed-1", SPO2), text="85", data_stale="false"), "85")
        assert await page.attribute('[data-bed="bed-1"]', "data-alarm") == "none"
        assert engine.bed_alarms("bed-1") == []
        # ...then a medium alarm, on the page without a reload.
        await second(85.0)
        (alarm,) = engine.bed_alarms("bed-1")
        assert (alarm["priority"], alarm["kind"], alarm["state"]) == (
            "medium",
            "physiological",
            "active",
        )
        await page.until(shows(tile_alarm("bed-1"), data_priority="medium"), "a medium alarm")
        medium = await page.call(style_of, page.driver, tile_alarm("bed-1"))
        assert medium["name"] == "flash-medium" and medium["count"] == "infinite"
        assert 0.4 <= flash_hz(medium) <= 0.8
        # Yellow (in one of its two phases), with the mark and the words, not colour alone.
        assert medium["background"] in ("rgb(255, 212, 0)", "rgb(58, 48, 0)")
        assert "!!" in medium["text"] and "MEDIUM" in medium["text"]
        assert alarm["message"] in medium["text"]
        assert await page.attribute('[data-bed="bed-2"]', "data-alarm") == "none"
        await page.until(shows("#sound", data_playing="medium", data_pulses="3"), "3 pulses")
        # The page confirmed a push carrying the alarm (the alarm-path self-check).
        check = engine.self_check
        assert check is not None
        shown_version = version.version()
        await page.until(
            lambda d: check.confirmed_version >= shown_version, "the page's confirmation"
        )
        await page.call(save_artifact, page.driver, tmp_path, "ward-medium-alarm.png")

        # Deeper: below the extreme limit for its delay -> high priority, red, 2 Hz.
        for _ in range(int(SPO2_DELAY)):
            await second(75.0)
        await page.until(shows(tile_alarm("bed-1"), data_priority="high"), "a high alarm")
        high = await page.call(style_of, page.driver, tile_alarm("bed-1"))
        assert high["name"] == "flash-high" and 1.4 <= flash_hz(high) <= 2.8
        assert high["background"] in ("rgb(224, 0, 27)", "rgb(42, 0, 5)")
        assert "!!!" in high["text"] and "HIGH" in high["text"]
        assert "+1 more" in high["text"]  # the medium one is still there
        await page.until(shows("#sound", data_playing="high", data_pulses="10"), "10 pulses")
        await page.call(save_artifact, page.driver, tmp_path, "ward-high-alarm.png")

        # The bed in detail: its alarms, history and waveforms.
        t = clock.wall()
        waveforms.add(
            Waveform("ox-1", PLETH, PERCENT, 75.0, t - 4, np.sin(np.arange(300) / 75 * 2 * np.pi))
        )
        beats = np.where(np.arange(1000) % 200 < 6, 1.2, 0.0)
        waveforms.add(Waveform("ox-1", ECG_LEAD_II, MILLIVOLT, 250.0, t - 4, beats))
        # An infusion on bed 1 (a pump's numerics; the twin's view is all the page needs).
        twin.apply(DeviceEvent("pump-1", Condition.DISCONNECTED, False, clock.wall()))
        for code, value, unit in (
            (PUMP_RATE, 50.0, MILLILITRE_PER_HOUR),
            (PUMP_VTBI_REMAINING, 75.0, MILLILITRE),
            (PUMP_TIME_REMAINING, 90.0, MINUTE),
            (PUMP_STATUS, 3.0, DIMENSIONLESS),
        ):
            twin.apply(Numeric("pump-1", code, value, unit, clock.wall()))
        await clock.advance(0.25)
        await page.call(
            lambda: page.driver.find_element(By.CSS_SELECTOR, '[data-bed="bed-1"]').click()
        )
        await page.until(shows("body", data_view="bed"), "the bed view")
        await page.until(shows("#detail-label", text="Bed 1"), "the bed's name")
        await page.until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#detail-alarms .alarm")) == 2,
            "both alarms listed",
        )
        await page.until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history tr")) == 2, "the history"
        )
        inked = """
            const c = document.getElementById(arguments[0]);
            const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n += 1;
            return n;
        """

        def inked_pixels(canvas: str) -> Callable[[webdriver.Chrome], bool]:
            return lambda d: int(d.execute_script(inked, canvas)) > 100

        for canvas in ("ecg", "pleth"):
            await page.until(inked_pixels(canvas), f"a {canvas} trace")
        await page.until(
            shows("#detail-pumps .pump-head", text="pump-1: running · ends in 1 h 30 min"),
            "the infusion and its time to end",
        )
        assert await page.text(value_of_detail(PUMP_RATE)) == "50"
        await page.call(save_artifact, page.driver, tmp_path, "bed-in-alarm.png")

        # Acknowledge needs a login: the page asks, then acts, and the store records both.
        high_alarm = engine.bed_alarms("bed-1")[0]
        assert high_alarm["priority"] == "high"
        ack = f'#detail-alarms .alarm[data-alarm-id="{high_alarm["id"]}"] .ack'
        await page.call(lambda: page.driver.find_element(By.CSS_SELECTOR, ack).click())
        await page.until(shows("#login", open="true"), "the login dialog")
        assert engine.bed_alarms("bed-1")[0]["state"] == "active"  # nothing done yet

        def log_in(driver: webdriver.Chrome) -> None:
            driver.find_element(By.ID, "login-name").send_keys(NURSE)
            driver.find_element(By.ID, "login-password").send_keys(NURSE_PASSWORD)
            driver.find_element(By.ID, "login-submit").click()

        await page.call(log_in, page.driver)
        await page.until(
            lambda d: engine.bed_alarms("bed-1")[0]["state"] == "acknowledged", "the engine acks"
        )
        # The stream paces pushes on the gateway's clock (min_push_interval).
        await clock.advance(0.25)
        await page.until(shows("#user-name", text=f"{NURSE} (nurse)"), "logged in")
        await page.until(
            shows(
                f'#detail-alarms .alarm[data-alarm-id="{high_alarm["id"]}"]',
                text=f"acknowledged by {NURSE}",
                data_state="acknowledged",
            ),
            "the acknowledgement",
        )
        acked = style_of(page.driver, tile_alarm("bed-1"))
        assert acked["name"] == "none"  # acknowledged: steady, still shown
        await page.until(shows("#sound", data_playing="medium"), "the medium one sounds on")
        rows = await audit_rows()
        assert (NURSE, "login", None) in rows
        assert (NURSE, "alarm.acknowledge", "bed-1") in rows

        # Audio pause: a countdown from 2:00 on the gateway's clock, then it ends.
        await page.call(lambda: page.driver.find_element(By.ID, "pause-audio").click())
        await page.until(lambda d: engine.audio("bed-1")["paused_until"], "the engine pauses")
        await clock.advance(0.25)
        await page.until(shows("#detail-audio", text="audio paused by alice"), "the pause")
        countdown = await page.text("#detail-audio")
        assert "2:00" in countdown or "1:59" in countdown, countdown
        await page.until(shows("#sound", data_playing="none"), "silence while paused")
        assert (NURSE, "audio.pause", "bed-1") in await audit_rows()
        for _ in range(60):
            await second(75.0)
        await page.until(shows("#detail-audio", text="returns in 1:0"), "a minute gone")
        for _ in range(61):
            await second(75.0)
        await page.until(
            lambda d: "paused" not in d.find_element(By.ID, "detail-audio").text.lower(),
            "the pause over",
        )
        assert engine.audio("bed-1")["paused_until"] is None
        await page.until(shows("#sound", data_playing="medium"), "sound back after the pause")

        # A pause can also be ended at once by the nurse (the same button, relabelled).
        await page.call(lambda: page.driver.find_element(By.ID, "pause-audio").click())
        await page.until(lambda d: engine.audio("bed-1")["paused_until"], "paused again")
        await clock.advance(0.25)
        await page.until(shows("#pause-audio", text="sound back on now"), "the resume button")
        await page.call(lambda: page.driver.find_element(By.ID, "pause-audio").click())
        await page.until(lambda d: engine.audio("bed-1")["paused_until"] is None, "resumed")
        await clock.advance(0.25)
        await page.until(shows("#sound", data_playing="medium"), "sound back on at once")
        assert (NURSE, "audio.resume", "bed-1") in await audit_rows()

        # The gateway goes away: the whole screen says so, with its own sound.
        await server.stop()
        await page.until(shows("body", data_connection="lost"), "the lost connection")
        banner = await page.call(
            page.driver.execute_script,
            "const r = document.getElementById('lost-banner').getBoundingClientRect();"
            "const v = document.documentElement;"
            "return [r.width, r.height, v.clientWidth, v.clientHeight];",
        )
        assert banner[0] >= banner[2] and banner[1] >= banner[3]
        assert "connection to gateway lost" in (await page.text("#lost-banner")).lower()
        await page.until(shows("#sound", data_playing="lost"), "the lost-connection sound")
        await page.call(save_artifact, page.driver, tmp_path, "connection-lost.png")
    finally:
        await server.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await writer.call(lambda: None)
        store.close()


async def test_a_ward_that_needs_a_login_to_view_and_the_gateways_own_alarms(
    page: Page, tmp_path: Path
) -> None:
    clock = ManualClock()
    twin = Twin(BEDS[:1], clock, STALE_AFTER)
    twin.register_device("bed-1", "ox-1", "nonin_xpod", CodecCounters())
    users = UserFile(tmp_path / "users.json")
    users.add(NURSE, "viewer", NURSE_PASSWORD, n=2**10)
    engine, version = service.build(
        beds=[("bed-1", "adult", None)],
        settings=AlarmSettings(
            sync_unreachable_after=60.0, self_check_interval=3600.0, self_check_timeout=3600.0
        ),
        clock=clock,
        twin=twin,
        bed_of={"ox-1": "bed-1"}.get,
        writer=None,
        pages=lambda: 1,
    )

    def snapshot() -> list[dict[str, Any]]:
        ward = twin.snapshot()
        engine.decorate(ward)
        return ward

    server = WebServer(
        host="127.0.0.1",
        port=0,
        beds=snapshot,
        health=lambda: {"gateway": "ward-7"},
        version=version.version,
        wait_changed=version.wait_changed,
        clock=clock,
        heartbeat_interval=600.0,
        auth=Auth(users, clock, require_login_to_view=True),
        alarms=engine,
    )
    timers = asyncio.create_task(engine.run_timers())
    await server.start()
    try:
        await page.call(page.driver.get, f"http://127.0.0.1:{server.port}/")
        # Nothing of the ward before a login; the page asks for one.
        await page.until(shows("#login", open="true"), "the login dialog")
        assert "log in to view" in (await page.text("#login-reason")).lower()
        assert await page.call(
            lambda: page.driver.find_elements(By.CSS_SELECTOR, "[data-bed]") == []
        )

        def log_in(driver: webdriver.Chrome) -> None:
            driver.find_element(By.ID, "login-name").send_keys(NURSE)
            driver.find_element(By.ID, "login-password").send_keys(NURSE_PASSWORD)
            driver.find_element(By.ID, "login-submit").click()

        await page.call(log_in, page.driver)
        await page.until(shows("body", data_connection="live"), "the ward after the login")
        await page.until(shows('[data-bed="bed-1"] .bed-label', text="Bed 1"), "the tile")

        # A gateway-wide condition (no bed): a strip above the ward, in words and colour.
        engine.sync_status("central", False, "no route")
        await clock.advance(61.0)
        assert engine.bed_alarms("_gateway")[0]["condition"] == "sync_unreachable"
        await page.until(
            shows("#ward-alarms", text="central system unreachable", data_priority="medium"),
            "the gateway's alarm",
        )
        strip = await page.call(style_of, page.driver, "#ward-alarms")
        assert strip["name"] == "flash-medium" and "!!" in strip["text"]
        assert await page.attribute("#sound", "data-playing") == "medium"
    finally:
        await server.stop()
        timers.cancel()
        await asyncio.gather(timers, return_exceptions=True)


async def test_killing_the_gateway_process_takes_over_the_screen(
    page: Page, tmp_path: Path
) -> None:
    """The real daemon in its own process, killed outright (SIGKILL: no goodbye)."""
    with socket.socket() as probe:  # a free port for the daemon (config needs a number)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config.toml"
    config.write_text(
        f'[gateway]\nid = "ward-kill"\ndata_dir = "var"\nlisten = "127.0.0.1:{port}"\n'
        "simulation = true\n\n"
        '[[beds]]\nid = "bed-1"\nlabel = "Bed 1"\n'
        '[[beds.devices]]\nid = "ox-1"\ndriver = "nonin"\nsimulate = "normal"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )

    async def listening() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "page listening":
                return
        raise AssertionError(f"the gateway exited ({await proc.wait()}) without listening")

    drain: asyncio.Task[bytes] | None = None
    try:
        await asyncio.wait_for(listening(), 60)
        assert proc.stdout is not None
        # Keep reading the log, so a full pipe can never be what stalls the daemon.
        drain = asyncio.create_task(proc.stdout.read())
        await page.call(page.driver.get, f"http://127.0.0.1:{port}/")
        await page.until(shows("body", data_connection="live"), "the live ward")
        await page.until(shows(value_of("bed-1", SPO2), data_stale="false"), "a fresh SpO2")
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 30)
        await page.until(shows("body", data_connection="lost"), "the lost connection")
        assert await page.call(
            lambda: page.driver.find_element(By.ID, "lost-banner").is_displayed()
        )
        await page.until(shows(value_of("bed-1", SPO2), data_stale="true"), "SpO2 not current")
        await page.until(shows("#sound", data_playing="lost"), "the lost-connection sound")
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 30)
        if drain is not None:
            await drain
