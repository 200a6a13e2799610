"""Recipient journeys through the whole relay (SMTP + web, real Valkey, ``file:`` upstream) and a
real Chromium driven with the keyboard only.

1. A new recipient: a consent request without tracker -> the consent page -> accept -> the next
   marketing email is tracked through the gateway -> the footer's withdrawal link -> withdraw
   -> the next email is untracked and the old one's gateway answers the blank GIF.
2. A legacy recipient (collected before 2026-04-14, informed in time): tracked under the legacy
   regime with a footer offering to object, readable on a dark template -> the objection page
   -> object -> untracked.
3. Two controllers on one relay: consent given on one controller's page is not the other's.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from relay.model import ConsentEvent, EventType, Purpose
from relay.web.gateway import GIF
from tests.conftest import ARTIFACTS, CHROMIUM_ARGS
from tests.support.harness import PIXEL, asend, make_settings, message, start_relay
from tests.support.relay import OutboxRelay
from tests.support.web import http
from tests.web.test_pages_browser import axe_source

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

JEANNE = "jeanne@example.org"
CONTROLLERS: dict[str, object] = {
    "shop": {"name": "Boutique Exemple SAS", "domains": ["shop.example"],
             "privacy_url": "https://shop.example/privacy", "contact": "privacy@shop.example",
             "third_parties": ["SendGrid (Twilio Inc.)"]},
    "club": {"name": "Running Club", "domains": ["club.example"]},
}  # fmt: skip
ASK = (
    '<html lang="en"><body><p>Would you let us measure our newsletters?</p>'
    '<p><a href="{{relay:consent_url}}">Give or refuse your consent</a></p></body></html>'
)
NEWSLETTER = (
    '<html lang="en"><body style="background:#111111;color:#eeeeee">'
    '<table width="100%" bgcolor="#111111"><tr><td style="color:#eeeeee">'
    "<h1>Autumn news</h1><p>New shoes.</p>"
    '<a href="https://shop.example/unsubscribe" style="color:#eeeeee">Unsubscribe</a>'
    f'</td></tr></table><img src="{PIXEL}" width="1" height="1" alt=""></body></html>'
)


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    path = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
    if path is None:
        if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
            pytest.fail("chromium is required (RELAY_REQUIRE_TOOLS=1)")
        pytest.skip("chromium not installed")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield browser
        await browser.close()


class Relay(OutboxRelay):
    async def send(self, html: str, category: str, sender: str = "shop.example") -> str:
        raw = message(html, to=JEANNE, category=category, message_id=f"<{len(self.seen)}@{sender}>")
        raw = raw.replace(b"news@shop.example", f"news@{sender}".encode())
        code, reply = await asend(self.running.smtp_port, raw, [JEANNE], f"app@{sender}")
        assert code == 250, reply
        parsed = self.next_delivered()
        html_part = next(p for p in parsed.walk() if p.get_content_type() == "text/html")
        return str(html_part.get_content())

    def link(self, html: str, kind: str) -> str | None:
        base = re.escape(self.settings.web.public_url)
        found = re.search(rf"{base}/{kind}/[A-Za-z0-9_.-]+", html)
        return found.group(0) if found else None


@pytest.fixture
async def relay(tmp_path: Path, redis_url: str) -> AsyncIterator[Relay]:
    outbox = tmp_path / "outbox"
    settings = make_settings(tmp_path, redis_url, f"file:{outbox}", controllers=CONTROLLERS)
    running = await start_relay(settings, redis_url)
    r = Relay(running, settings, outbox, redis_url)
    yield r
    await r.client.aclose()
    await running.stop()


async def keyboard_press(page: Any, name: str) -> None:
    target = page.get_by_role("button", name=name, exact=True)
    for _ in range(40):
        await page.keyboard.press("Tab")
        if await target.evaluate("e => e === document.activeElement"):
            break
    else:
        pytest.fail(f"{name!r} cannot be reached with the keyboard")
    async with page.expect_navigation():
        await page.keyboard.press("Enter")


async def get(url: str) -> Any:
    return await asyncio.to_thread(http, "GET", url)


async def test_a_new_recipient_consents_then_withdraws(relay: Relay, chromium: Any) -> None:
    ask = await relay.send(ASK, "consent_request")
    consent_url = relay.link(ask, "c")
    assert consent_url and PIXEL not in ask
    page = await (await chromium.new_context(locale="en-GB")).new_page()
    await page.goto(consent_url)
    assert await page.locator("h1").inner_text() == "Boutique Exemple SAS asks for your agreement"
    assert "j***@example.org" in await page.locator(".who").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    await keyboard_press(page, "Accept all")
    assert await page.locator("h1").inner_text() == "Your choices are saved"

    tracked = await relay.send(NEWSLETTER, "marketing")
    gateway, withdraw = relay.link(tracked, "g"), relay.link(tracked, "w")
    assert gateway and withdraw and PIXEL not in tracked
    opened = await get(gateway)
    assert opened.status == 302 and opened.headers["location"] == PIXEL
    assert "Boutique Exemple SAS uses with your consent for: campaign performance" in tracked

    await page.goto(withdraw)
    assert await page.locator("h1").inner_text() == "Stop tracking of your emails"
    await keyboard_press(page, "Stop tracking")
    assert await page.locator("h1").inner_text() == "Tracking stopped"
    untracked = await relay.send(NEWSLETTER, "marketing")
    assert relay.link(untracked, "g") is None and PIXEL not in untracked
    again = await get(gateway)
    assert again.status == 200 and again.body == GIF


async def test_a_legacy_recipient_objects(relay: Relay, chromium: Any) -> None:
    for kind, at in ((EventType.COLLECTED, "2025-02-01"), (EventType.INFORMED, "2026-06-01")):
        await relay.store.record(ConsentEvent(
            kind, (Purpose.CAMPAIGN_PERFORMANCE,), JEANNE,
            datetime.fromisoformat(at + "T09:00:00+00:00"), actor="import", method="import",
            notice={"version": "1"}, controller="shop",
        ))  # fmt: skip
    tracked = await relay.send(NEWSLETTER, "marketing")
    gateway, objection = relay.link(tracked, "g"), relay.link(tracked, "w")
    assert gateway and objection
    assert "You can object to them at any time." in tracked and "Object to this tracking" in tracked
    assert (await get(gateway)).status == 302

    # The footer stays readable on this dark template: axe's contrast rule over the footer.
    context = await chromium.new_context(bypass_csp=True)
    mail = await context.new_page()
    await mail.set_content(tracked)
    await mail.evaluate(axe_source())
    result = await mail.evaluate(
        "async () => await axe.run('table[role=presentation][lang]', "
        "{runOnly: ['color-contrast'], resultTypes: ['violations', 'passes']})"
    )
    assert result["violations"] == [] and result["passes"], result["violations"]
    await mail.screenshot(path=str(ARTIFACTS / "footer-dark-template.png"), full_page=True)

    page = await (await chromium.new_context(locale="en-GB")).new_page()
    await page.goto(objection)
    assert await page.locator("h1").inner_text() == "Object to the tracking of your emails"
    await keyboard_press(page, "I object to tracking")
    assert await page.locator("h1").inner_text() == "Your objection is recorded"
    untracked = await relay.send(NEWSLETTER, "marketing")
    assert relay.link(untracked, "g") is None and PIXEL not in untracked
    assert (await get(gateway)).body == GIF


async def test_two_controllers_never_share_consent(relay: Relay, chromium: Any) -> None:
    ask = await relay.send(ASK, "consent_request")
    page = await (await chromium.new_context(locale="en-GB")).new_page()
    await page.goto(relay.link(ask, "c"))
    await keyboard_press(page, "Accept all")
    club = await relay.send(NEWSLETTER, "marketing", sender="club.example")
    assert relay.link(club, "g") is None and PIXEL not in club  # consent was given to the shop
    club_ask = await relay.send(ASK, "consent_request", sender="club.example")
    await page.goto(relay.link(club_ask, "c"))
    assert await page.locator("h1").inner_text() == "Running Club asks for your agreement"
    await keyboard_press(page, "Refuse all")
    shop = await relay.send(NEWSLETTER, "marketing")
    assert relay.link(shop, "g") is not None  # the club's refusal leaves the shop's consent
