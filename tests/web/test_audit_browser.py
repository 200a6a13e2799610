"""The auditors' workspace in a real Chromium, served by ``relay serve`` (a child process): log
in, read a seeded day's counts, open "tracked without consent", drill down to a consent proof;
a screenshot of each step in ``test-artifacts/``; an axe-core check of each page."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.store.embedded import free_port
from tests.conftest import ARTIFACTS
from tests.support.auditui import AUDITOR, PASSWORD, Journey, audit_users, journey
from tests.support.axe import axe_source, violations
from tests.support.browser import screenshot, sync_chromium

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@dataclass
class Served:
    base: str
    smtp: int
    done: Journey


def _config(tmp: Path, smtp: int, web: int) -> Path:
    users = ", ".join(f'"{name}" = "{value}"' for name, value in audit_users().items())
    path = tmp / "config.toml"
    path.write_text(
        f"""
[smtp]
listen = "127.0.0.1:{smtp}"
process_pool = 0
[upstream]
url = "file:{tmp / "outbox"}"
[redis]
url = "embedded"
data_dir = "{tmp / "redis"}"
[web]
listen = "127.0.0.1:{web}"
public_url = "http://127.0.0.1:{web}"
api_tokens = ["test-api-token"]
[audit_ui]
users = {{ {users} }}
[secrets]
link_key = "browser-audit-key"
[rules]
local_dir = "{tmp / "rules.local"}"
[audit]
journal = "{tmp / "journal"}"
"""
    )
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("audit-browser")
    smtp, web = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(_config(tmp, smtp, web))],
        cwd=tmp,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{web}"
    try:
        deadline = time.monotonic() + 40
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield Served(base, smtp, journey(base, smtp))
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=60)
        assert "Traceback" not in err.decode(), err.decode()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_chromium() as instance:
        yield instance


def shot(page: Any, name: str) -> None:
    screenshot(page, ARTIFACTS / f"{name}.png")


def test_an_inspector_answers_from_the_browser(browser: Any, served: Served) -> None:
    context = browser.new_context(
        java_script_enabled=False,  # the workspace needs none
        http_credentials={"username": AUDITOR, "password": PASSWORD},
        viewport={"width": 1280, "height": 900},
    )
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    visited: list[str] = []

    response = page.goto(served.base + "/audit/")
    assert response is not None and response.status == 200
    assert page.locator("h1").inner_text().startswith("Counts per day")
    today = datetime.now(UTC).date().isoformat()
    table = page.locator(
        "table", has=page.locator("caption", has_text="Recipient copies by category")
    )
    row = table.locator("tr", has=page.get_by_role("rowheader", name=today))
    assert row.locator("td").all_inner_texts() == ["3", "3"]  # newsletters, total
    assert page.locator("#total-untracked").inner_text() == "1"
    assert page.locator("svg.chart").count() == 4  # four charts, each beside its table
    shot(page, "audit-overview")
    visited.append(page.url)

    page.get_by_role("navigation").get_by_role("link", name="Tracked without consent").click()
    assert page.locator("h1").inner_text().startswith("Tracked without consent")
    listed = page.locator("tbody tr")
    assert listed.count() == 1
    assert "b***@example.net" in listed.inner_text() and "legacy regime" in listed.inner_text()
    shot(page, "audit-without-consent")
    visited.append(page.url)

    listed.get_by_role("link", name=served.done.message_ids[0]).click()
    assert page.locator("h1").inner_text().startswith("Message")
    shot(page, "audit-message")
    visited.append(page.url)
    alice = page.locator(
        "section", has=page.get_by_role("heading", name="Recipient a***@example.org")
    )
    alice.get_by_role("link", name=served.done.grant_id).first.click()
    assert page.locator("h1").inner_text() == "Consent proof: granted campaign_performance"
    assert page.locator("#record-check").inner_text() == "hash verified"
    assert page.locator("#chain").inner_text() == "verified"
    facts = page.locator("dl.facts").inner_text()
    for fact in ("checkbox", "signup", "tracking-notice", "sha256:9f2c", "203.0.113.9"):
        assert fact in facts
    shot(page, "audit-proof")
    visited.append(page.url)

    page.get_by_role("link", name=re.compile(r"^[0-9a-f]{32}$")).click()  # the recipient
    assert page.locator("h1").inner_text() == "Recipient a***@example.org"
    assert "nothing tracked after it" in page.locator("main").inner_text()
    shot(page, "audit-recipient")
    visited.append(page.url)
    assert all(url.startswith(served.base) for url in requested), requested
    context.close()

    # Accessibility: axe-core on every page visited, no violation.
    source = axe_source()
    checker = browser.new_context(http_credentials={"username": AUDITOR, "password": PASSWORD})
    checking = checker.new_page()
    found = {}
    for url in visited:
        checking.goto(url)
        found[url] = violations(checking, source)
    checker.close()
    assert found == {url: [] for url in visited}
