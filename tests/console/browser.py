"""A headless chromium (Debian's `chromium` + `chromium-driver`) for the console tests.

Selenium's calls block, and the service under test runs in the test's own event loop: every
call goes through `asyncio.to_thread`, so the service keeps serving while the browser waits.
Screenshots go to `.local/screenshots/` (gitignored), to be looked at after a run.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ".local" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1400, 900)
PHONE = (390, 844)

# The machine has no internet: without these chromium tries to reach Google's services
# (component updates, sync, first-run pages) and stalls or misbehaves.
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--hide-scrollbars",
)  # fmt: skip


class Browser:
    """The few things the tests do with a page, each awaitable."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def open(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, script, *args)

    async def text(self, css: str = "main") -> str:
        return str(await self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css
        ))  # fmt: skip

    async def wait(self, script: str, timeout: float, what: str, *args: Any) -> Any:
        """Until the script returns something truthy (checked every 50 ms): its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; page:\n"
                                     + (await self.text("body"))[-2500:])  # fmt: skip
            await asyncio.sleep(0.05)

    async def click(self, css: str, timeout: float = 10) -> None:
        """Click the element once it is there and enabled (a live redraw may be replacing it,
        or the page may show a transient error instead)."""
        await self.wait(
            "const e = document.querySelector(arguments[0]);"
            " if (!e || e.disabled) return false; e.click(); return true;",
            timeout, f"{css} to click", css,
        )  # fmt: skip

    async def size(self, width: int, height: int) -> None:
        """The page's viewport exactly (the window's outer size is not the viewport's)."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1,
                   "mobile": width < 600}  # fmt: skip
        await self.call(self.driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", metrics)

    async def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self.call(self.driver.save_screenshot, str(path))
        return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium per test module (started in ~1 s), quit at its end."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are missing: `make setup` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": DESKTOP[0], "height": DESKTOP[1], "deviceScaleFactor": 1, "mobile": False},
        )
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
