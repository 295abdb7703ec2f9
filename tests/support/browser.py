"""Headless Chromium for the benchmarks that watch the nurse's page paint (selenium with the
system's /usr/bin/chromium and /usr/bin/chromedriver, installed by .ci/run)."""

from __future__ import annotations

from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)


def start_browser(profile: Path, observer: str, window: str = "1280,900") -> webdriver.Chrome:
    """A headless Chromium with its own profile folder that runs ``observer`` (JavaScript)
    in every page before the page's own scripts, e.g. to stamp when something is painted."""
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in (*CHROMIUM_ARGS, f"--window-size={window}", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": observer})
    return driver
