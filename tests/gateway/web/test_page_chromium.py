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
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from drivers.clock import ManualClock
from drivers.codes import BEATS_PER_MINUTE, PERCENT, PULSE_RATE, SPO2
from drivers.readings import CodecCounters, Condition, DeviceEvent, Numeric
from gateway.twin.state import BedSpec, Twin
from gateway.web.server import WebServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1280,900",
)
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
