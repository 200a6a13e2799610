"""Debian's Chromium for the browser tests, driven by Playwright: where it is, a browser for a
module, and screenshots that survive a renderer still settling.

``chromium_path`` skips the test when Chromium is missing, and fails it under ``.ci/run``
(``RELAY_REQUIRE_TOOLS=1``), where a missing browser means the install step did not run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM_ARGS, SCREENSHOT_TRIES

CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path is None:
        if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
            pytest.fail("chromium is required (RELAY_REQUIRE_TOOLS=1)")
        pytest.skip("chromium not installed")
    return path


@contextmanager
def sync_chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's sync API) for the ``with`` block."""
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


def screenshot(page: Any, path: Path, *, full_page: bool = True) -> None:
    """``page.screenshot`` retried a few times: a page still laying out can refuse once."""
    from playwright.sync_api import Error

    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(SCREENSHOT_TRIES):
        try:
            page.screenshot(path=str(path), full_page=full_page)
            return
        except Error:
            if attempt == SCREENSHOT_TRIES - 1:
                raise
            page.wait_for_timeout(500)
