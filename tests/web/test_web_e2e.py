"""Withdrawal from a relayed email, end to end, in a real Chromium.

The whole relay runs (SMTP + web, real Valkey, ``file:`` upstream); an email with a
consent-based tracker goes through it; the recipient opens the footer's withdrawal link,
loading the page changes nothing, the button withdraws; the next email to that recipient has
no tracker left and re-opening the old email gets the blank GIF instead of a redirect.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.model import ConsentEvent, EventType, Purpose
from relay.settings import Settings
from relay.store.consent import RedisConsentStore
from relay.store.redis_keys import Keys
from relay.web.gateway import GIF
from tests.conftest import ARTIFACTS, CHROMIUM_ARGS, SCREENSHOT_TRIES
from tests.support.browser import chromium_path
from tests.support.harness import HTML_WITH_PIXEL, PIXEL, asend, make_settings, message, start_relay
from tests.support.redis import async_client
from tests.support.web import http, snapshot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

ALICE = "alice@example.org"


async def shot(page: Any, name: str) -> None:
    from playwright.async_api import Error

    for attempt in range(SCREENSHOT_TRIES):
        try:
            await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            return
        except Error:
            if attempt == SCREENSHOT_TRIES - 1:
                raise
            await asyncio.sleep(0.5)


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    path = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


def html_of(eml: Path) -> str:
    parsed = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    for part in parsed.walk():
        if part.get_content_type() == "text/html":
            return str(part.get_content())
    raise AssertionError(f"{eml}: no HTML part")


async def store_for(settings: Settings, redis_url: str) -> tuple[RedisConsentStore, Any]:
    client = async_client(redis_url)
    keys = Keys(settings.redis.prefix)
    return RedisConsentStore(client, keys, settings.address_key, settings.consent), client


async def test_withdrawal_from_a_relayed_email(
    chromium: Any, tmp_path: Path, redis_url: str
) -> None:
    outbox = tmp_path / "outbox"
    settings = make_settings(tmp_path, redis_url, f"file:{outbox}")
    running = await start_relay(settings, redis_url)
    store, client = await store_for(settings, redis_url)
    try:
        await store.record(
            ConsentEvent(EventType.GRANTED, (Purpose.CAMPAIGN_PERFORMANCE,), ALICE,
                         datetime.now(UTC), actor="admin", method="admin")
        )  # fmt: skip
        raw = message(HTML_WITH_PIXEL, category="newsletter", message_id="<m1@shop.example>")
        code, _ = await asend(running.smtp_port, raw, [ALICE])
        assert code == 250
        (first,) = sorted(outbox.glob("*.eml"))
        html = html_of(first)
        base = re.escape(settings.web.public_url)
        gateway = re.search(rf"{base}/g/[A-Za-z0-9_.-]+", html)
        withdraw = re.search(rf"{base}/w/[A-Za-z0-9_.-]+", html)
        assert gateway and withdraw, html
        assert ALICE not in gateway.group(0) + withdraw.group(0)
        held = await asyncio.to_thread(http, "GET", gateway.group(0))
        assert held.status == 302 and held.headers["location"] == PIXEL

        page = await (await chromium.new_context(locale="en-GB")).new_page()
        before = await asyncio.to_thread(snapshot, redis_url, "relay:consent:*")
        await page.goto(withdraw.group(0))
        ARTIFACTS.mkdir(exist_ok=True)
        await shot(page, "e2e-withdraw")
        assert await asyncio.to_thread(snapshot, redis_url, "relay:consent:*") == before
        async with page.expect_navigation():
            await page.get_by_role("button", name="Stop tracking").click()
        assert await page.locator("h1").inner_text() == "Tracking stopped"
        await shot(page, "e2e-withdrawn")
        state = (await store.states([ALICE], datetime.now(UTC)))[ALICE]
        assert state.purposes[Purpose.CAMPAIGN_PERFORMANCE].state is EventType.WITHDRAWN

        raw = message(HTML_WITH_PIXEL, category="newsletter", message_id="<m2@shop.example>")
        code, _ = await asend(running.smtp_port, raw, [ALICE])
        assert code == 250
        second = next(p for p in sorted(outbox.glob("*.eml")) if p != first)
        later = html_of(second)
        assert PIXEL not in later and "/g/" not in later

        again = await asyncio.to_thread(http, "GET", gateway.group(0))
        assert again.status == 200 and again.body == GIF and "location" not in again.headers
    finally:
        await client.aclose()
        await running.stop()
