"""A real browser for the console's tests: Playwright for Python driving Debian's Chromium.

``playwright install`` downloads a browser and cannot work offline, so the tests use the system's
``/usr/bin/chromium`` (``make browser-tools`` installs it where it can). Without it, or without the
``playwright`` package, the browser tests skip with a message saying how to get them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("AICLOUD_TEST_CHROMIUM", "/usr/bin/chromium")
#: Generous: a loaded 2-core machine runs a browser, a control plane and its jobs at once.
TIMEOUT_MS = 60_000


def missing() -> str | None:
    """Why the browser tests cannot run here; None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[test]'"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return (
            f"no Chromium at {CHROMIUM}: run `make browser-tools` (apt-get install chromium) "
            "or set AICLOUD_TEST_CHROMIUM to a Chromium binary"
        )
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """One headless Chromium (``--no-sandbox`` as root: Chromium's own sandbox refuses root)."""
    reason = missing()
    if reason is not None:
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """A signed-in browser tab on one control plane, saving a screenshot of each page it shows."""

    def __init__(self, browser: Any, url: str, shots: Path) -> None:
        self.url = url
        self.shots = shots
        self.context = browser.new_context(viewport={"width": 1360, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def go(self, path: str) -> Any:
        self.page.goto(self.url + path)
        return self.page

    def sign_in(self, token: str) -> None:
        self.go("/signin")
        self.page.fill("input[name=token]", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(lambda u: "/signin" not in u)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.evaluate("window.scrollTo(0, 0)")  # a scrolled page keeps its sticky sidebar mid-page
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()
        assert not self.errors, f"script errors on the console's pages: {self.errors}"


def screenshots_dir(factory: pytest.TempPathFactory) -> Path:
    """One folder of screenshots for the whole test session (printed at the end of each module)."""
    folder = factory.getbasetemp() / "console-screenshots"
    folder.mkdir(exist_ok=True)
    return folder
