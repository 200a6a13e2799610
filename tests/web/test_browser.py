"""Recipient pages in a real Chromium (Debian ``chromium`` driven by Playwright).

A screenshot of each page is kept in ``test-artifacts/`` (git-ignored) for people to look at.
Without Chromium the tests are skipped, unless ``RELAY_REQUIRE_TOOLS=1`` (CI) makes that a
failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from relay.core.links import gateway_link_id
from relay.model import Action, EventType, GatewayLink, Purpose
from relay.store.link_store import store_gateway_links
from relay.web.gateway import GIF
from tests.conftest import ARTIFACTS
from tests.support.browser import screenshot, sync_chromium
from tests.support.web import WebServer, http, snapshot

pytestmark = pytest.mark.browser

TRACKER = "https://tracker.example/open.gif?u=42"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_chromium() as instance:
        yield instance


@pytest.fixture
def web(redis_url: str) -> Iterator[WebServer]:
    server = WebServer(redis_url).start()
    yield server
    server.stop()


def shot(page: Any, name: str) -> None:
    screenshot(page, ARTIFACTS / f"{name}.png")


def test_withdraw_in_chromium(browser: Any, web: WebServer) -> None:
    now = datetime.now(UTC)
    rkey = web.remember()
    web.grant((Purpose.CAMPAIGN_PERFORMANCE, Purpose.DELIVERABILITY))
    link_id = gateway_link_id("<m1@shop.example>", TRACKER)
    link = GatewayLink(link_id, TRACKER, Purpose.CAMPAIGN_PERFORMANCE, Action.GATEWAY)
    web.run(lambda _s, c: store_gateway_links(c, web.keys, [link], ttl_days=1))
    gateway = web.minter.gateway_url(rkey, link_id, Purpose.CAMPAIGN_PERFORMANCE, now)
    assert http("GET", gateway).status == 302  # consent holds: the old email still tracks

    context = browser.new_context(locale="fr-FR", java_script_enabled=False)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    before = snapshot(web.redis_url, "relay:consent:*")
    url = web.minter.withdraw_url(rkey, "<m1@shop.example>", now)
    response = page.goto(url)
    assert response is not None and response.status == 200
    assert page.locator("h1").inner_text() == "Arrêter le suivi de vos e-mails"
    shot(page, "withdraw-fr")
    assert snapshot(web.redis_url, "relay:consent:*") == before  # loading changed nothing

    # The language switch is a plain link; the page works without JavaScript.
    page.get_by_role("link", name="English").click()
    assert page.locator("html").get_attribute("lang") == "en"
    shot(page, "withdraw-en")
    assert snapshot(web.redis_url, "relay:consent:*") == before

    # Keyboard only: Tab reaches the button (after the language link), Enter presses it.
    button = page.get_by_role("button", name="Stop tracking")
    for _ in range(10):
        page.keyboard.press("Tab")
        if button.evaluate("b => b === document.activeElement"):
            break
    else:
        pytest.fail("the Stop tracking button cannot be reached with the keyboard")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator("h1").inner_text() == "Tracking stopped"
    shot(page, "withdraw-done")

    state = web.state()
    assert state.purposes[Purpose.CAMPAIGN_PERFORMANCE].state is EventType.WITHDRAWN
    assert state.purposes[Purpose.DELIVERABILITY].state is EventType.WITHDRAWN
    proof = web.history()[-1]
    assert proof.evidence["user_agent"] and proof.evidence["ip"] == "127.0.0.1"

    # Reloading the confirmation re-posts the same form: harmless, same page.
    count = len(web.history())
    page.reload()
    assert page.locator("h1").inner_text() == "Tracking stopped"
    assert len(web.history()) == count

    # Re-opening the old email: the gateway now answers the blank GIF, no redirect.
    again = http("GET", gateway)
    assert again.status == 200 and again.body == GIF and "location" not in again.headers
    assert all(u.startswith(web.base) for u in requested), requested  # no external asset
    context.close()


def test_preferences_and_consent_pages_in_chromium(browser: Any, web: WebServer) -> None:
    now = datetime.now(UTC)
    rkey = web.remember()
    context = browser.new_context(locale="en-GB", java_script_enabled=False)
    page = context.new_page()
    page.goto(web.minter.preferences_url(rkey, "<m1@x>", now))
    assert page.locator("details").count() == 4
    page.locator("summary").first.click()  # the detailed description opens without JS
    assert page.locator("details").first.get_attribute("open") is not None
    shot(page, "preferences-en")
    page.get_by_role("group", name="Detection and analysis of suspected fraud").get_by_label(
        "Accept"
    ).check()
    with page.expect_navigation():
        page.get_by_role("button", name="Save my choices").click()
    assert page.locator("h1").inner_text() == "Your choices are saved"
    shot(page, "preferences-done")
    state = web.state()
    assert state.purposes[Purpose.FRAUD_DETECTION].state is EventType.GRANTED
    assert state.purposes[Purpose.CAMPAIGN_PERFORMANCE].state is EventType.REFUSED

    page.goto(web.minter.consent_url(rkey, "<ask@x>", now) + "?lang=fr")
    refuse, accept = (
        page.get_by_role("button", name="Tout refuser"),
        page.get_by_role("button", name="Tout accepter"),
    )
    # Refusing is as easy as accepting: same size, same colours.
    assert refuse.bounding_box() is not None and accept.bounding_box() is not None
    style = "b => [getComputedStyle(b).backgroundColor, getComputedStyle(b).fontWeight]"
    assert refuse.evaluate(style) == accept.evaluate(style)
    assert refuse.bounding_box()["height"] == accept.bounding_box()["height"]
    shot(page, "consent-fr")
    with page.expect_navigation():
        refuse.click()
    assert web.state().purposes[Purpose.FRAUD_DETECTION].state is EventType.WITHDRAWN

    page.goto(web.base + "/w/forged.token")
    assert page.locator("h1").inner_text() == "This link cannot be used"
    shot(page, "error-en")
    context.close()
