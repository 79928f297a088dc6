"""A real headless Chromium for the console's tests, driven through selenium.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when missing); the
system's chromedriver is named explicitly, so selenium-manager never downloads a driver or a
browser. Without them the tests skip, except under ``CI=true``, where they fail saying what to
install.

Selenium blocks; the app under test is served on the test's own event loop, so every browser
call runs in a thread (``await browser.get(...)``) while the loop goes on serving.

Screenshots go to ``$SPIRAL_SCREENSHOTS``, else ``.test-output/screenshots/``, named
``<page>-<width>.png``: ``await browser.screenshot("keys")`` takes the page at the window's size
and at a phone's, the whole page's height each time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = ["DESKTOP", "PHONE", "Browser", "browser", "phone_browser", "screenshot_dir"]

ROOT = Path(__file__).resolve().parent.parent
DESKTOP = (1280, 900)
PHONE = (390, 844)
_DRIVER = "/usr/bin/chromedriver"
_INSTALL = "apt-get install chromium chromium-driver"
_WAIT_SECONDS = 10.0

T = TypeVar("T")


def _chromium() -> tuple[str, str] | str:
    """(browser, driver) paths, or why they cannot be used."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = _DRIVER if os.access(_DRIVER, os.X_OK) else shutil.which("chromedriver")
    if browser is None or driver is None:
        return f"Chromium or its driver is not installed (Debian: {_INSTALL})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    return browser, driver


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs a headless Chromium for the console's tests: {reason}")
    pytest.skip(reason)


class Browser:
    """One Chromium window on ``base_url`` (the served app). Methods are coroutines: each runs
    its selenium call in a thread."""

    def __init__(self, driver: Any, base_url: str, shots: Path, size: tuple[int, int]) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.shots = shots
        self.size = size

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(call, *args)

    async def get(self, path: str) -> None:
        await self._run(self.driver.get, self.base_url + path)

    @property
    def path(self) -> str:
        """The current page's path (and query), without the server's address."""
        url: str = self.driver.current_url
        return url[len(self.base_url):] if url.startswith(self.base_url) else url

    async def find(self, css: str, *, timeout: float = _WAIT_SECONDS) -> Any:
        """The first element matching ``css`` once it is displayed."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        def wait() -> Any:
            return WebDriverWait(self.driver, timeout).until(
                ec.visibility_of_element_located((By.CSS_SELECTOR, css)),
                f"nothing displayed matches {css!r} on {self.path} after {timeout} s")

        return await self._run(wait)

    async def find_all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return await self._run(self.driver.find_elements, By.CSS_SELECTOR, css)

    async def text(self, css: str, *, timeout: float = _WAIT_SECONDS) -> str:
        element = await self.find(css, timeout=timeout)
        return await self._run(lambda: element.text)

    async def type(self, css: str, text: str) -> None:
        element = await self.find(css)
        await self._run(element.clear)
        await self._run(element.send_keys, text)

    async def select(self, css: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        element = await self.find(css)
        await self._run(lambda: Select(element).select_by_value(value))

    async def click(self, css: str) -> None:
        from selenium.common.exceptions import UnexpectedAlertPresentException

        element = await self.find(css)
        # A click that opens a confirm() is answered by accept_dialog.
        with contextlib.suppress(UnexpectedAlertPresentException):
            await self._run(element.click)

    async def wait_for_text(self, css: str, expected: str, *,
                            timeout: float = _WAIT_SECONDS) -> str:
        """Wait until the element matching ``css`` holds ``expected``; its whole text."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        def wait() -> str:
            WebDriverWait(self.driver, timeout).until(
                ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), expected),
                f"{css!r} on {self.path} never said {expected!r} within {timeout} s")
            return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

        return await self._run(wait)

    async def wait_for_attribute(self, css: str, name: str, values: tuple[str, ...], *,
                                 timeout: float = _WAIT_SECONDS) -> str:
        """Wait until the element's attribute ``name`` is one of ``values``; which one."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def value(_: Any) -> str | None:
            found = self.driver.find_element(By.CSS_SELECTOR, css).get_attribute(name)
            return found if found in values else None

        return await self._run(lambda: WebDriverWait(self.driver, timeout).until(
            value, f"{css!r}'s {name} never became one of {values} within {timeout} s"))

    async def wait_for_path(self, path: str, *, prefix: bool = False,
                            timeout: float = _WAIT_SECONDS) -> None:
        """Wait until the browser is on ``path`` (its query aside), or on a path under it when
        ``prefix``."""
        from selenium.webdriver.support.ui import WebDriverWait

        def there(_: Any) -> bool:
            current = self.path.partition("?")[0]
            return current.startswith(path) if prefix else current == path

        await self._run(lambda: WebDriverWait(self.driver, timeout).until(
            there, f"the browser did not reach {path} (it is on {self.path})"))

    async def accept_dialog(self, *, timeout: float = _WAIT_SECONDS) -> str:
        """Accept the page's confirm() dialog once it shows; its text."""
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        def accept() -> str:
            alert = WebDriverWait(self.driver, timeout).until(
                ec.alert_is_present(), f"no dialog showed within {timeout} s")
            text = str(alert.text)
            alert.accept()
            return text

        return await self._run(accept)

    async def page_problems(self) -> list[str]:
        """What the pages' consoles said since the last call of an uncaught script error or a
        Content Security Policy refusal (an inline script or style the CSP blocked)."""
        entries = await self._run(self.driver.get_log, "browser")
        return [entry["message"] for entry in entries
                if "Content Security Policy" in entry["message"]
                or "Uncaught" in entry["message"]]

    async def script(self, source: str, *args: Any) -> Any:
        return await self._run(self.driver.execute_script, source, *args)

    async def page_source(self) -> str:
        return await self._run(lambda: str(self.driver.page_source))

    async def cookies(self) -> list[dict[str, Any]]:
        return await self._run(self.driver.get_cookies)

    async def screenshot(self, name: str, *, phone: bool = True) -> list[Path]:
        """Save the whole page as ``<name>-<width>.png`` at the window's width and, unless
        ``phone`` is False, at a phone's; the paths saved."""
        saved = [await self._run(self._capture, name, self.size)]
        if phone and self.size != PHONE:
            try:
                saved.append(await self._run(self._capture, name, PHONE))
            finally:
                await self._run(self._resize, self.size)
        return saved

    def _resize(self, size: tuple[int, int]) -> None:
        width, height = size
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1,
            "mobile": size == PHONE})

    def _images_settled(self, timeout: float = 10.0) -> None:
        """Wait until the images chosen for the new width have loaded: a <picture> picks
        another source (the compact chart) once the width is a phone's."""
        time.sleep(0.3)  # the new width's source requested
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.driver.execute_script(
                "return Array.from(document.images).every((i) => i.complete);"):
            time.sleep(0.1)

    def _capture(self, name: str, size: tuple[int, int]) -> Path:
        self._resize(size)
        self._images_settled()
        # The page's height at the new width (reading it makes the layout pass).
        height = self.driver.execute_script(
            "return document.documentElement.scrollHeight")
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": max(size[1], height),
                     "scale": 1}})
        path = self.shots / f"{name}-{size[0]}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """Where this run's screenshots go: $SPIRAL_SCREENSHOTS or .test-output/screenshots/."""
    given = os.environ.get("SPIRAL_SCREENSHOTS")
    path = Path(given) if given else ROOT / ".test-output" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def _open(size: tuple[int, int], shots: Path) -> AsyncIterator[Callable[[str], Browser]]:
    found = _chromium()
    if isinstance(found, str):
        _unavailable(found)
        raise AssertionError("unreachable")
    binary, driver_path = found
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # A confirm() the page opens stays open until the test answers it (accept_dialog).
    options.unhandled_prompt_behavior = "ignore"
    # The page's console, for page_problems().
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--disable-extensions", "--no-first-run",
                     "--disable-background-networking", "--lang=en-US",
                     f"--window-size={size[0]},{size[1]}"):
        options.add_argument(argument)
    try:
        driver = await asyncio.to_thread(
            webdriver.Chrome, service=Service(driver_path), options=options)
    except Exception as exc:  # a driver that does not start says why in its own words
        _unavailable(f"Chromium did not start: {str(exc).splitlines()[0]}")
        raise AssertionError("unreachable") from None
    try:
        await asyncio.to_thread(Browser(driver, "", shots, size)._resize, size)
        yield lambda base_url: Browser(driver, base_url, shots, size)
    finally:
        await asyncio.to_thread(driver.quit)


@pytest.fixture
async def browser(screenshot_dir: Path) -> AsyncIterator[Callable[[str], Browser]]:
    """``browser(base_url)``: a headless Chromium window of 1280x900 on the served app."""
    async for opened in _open(DESKTOP, screenshot_dir):
        yield opened


@pytest.fixture
async def phone_browser(screenshot_dir: Path) -> AsyncIterator[Callable[[str], Browser]]:
    """``phone_browser(base_url)``: the same at a phone's size, 390x844."""
    async for opened in _open(PHONE, screenshot_dir):
        yield opened
