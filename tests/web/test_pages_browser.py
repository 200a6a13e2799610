"""Every recipient page in a real Chromium, at desktop and phone width, in French and English:
screenshots kept, axe-core run inside each page with no violation, every action done with
the keyboard only.

Pages: consent, its confirmation, preference centre, withdrawal, its confirmation, the
objection page of a legacy recipient, its confirmation, and an error page. Screenshots go to
``test-artifacts/pages/``; with ``RELAY_DOCS_SCREENSHOTS=1`` the English phone-width ones are
also written to ``docs/recipient/`` (the README shows them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.model import ConsentEvent, EventType, Purpose
from relay.settings import ControllerSettings
from tests.conftest import ARTIFACTS
from tests.support.browser import screenshot, sync_chromium
from tests.support.web import WebServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "tests" / "web" / "js" / "node_modules" / "axe-core" / "axe.min.js"
DOCS = ROOT / "docs" / "recipient"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
SHOP = ControllerSettings(
    name="Boutique Exemple SAS",
    domains=("shop.example",),
    privacy_url="https://shop.example/privacy",
    contact="privacy@shop.example",
    third_parties=("SendGrid (Twilio Inc.)", "Mailchimp (Intuit Inc.)"),
)
H1 = {
    "en": {
        "consent": "Boutique Exemple SAS asks for your agreement",
        "saved": "Your choices are saved",
        "prefs": "Your email tracking choices",
        "withdraw": "Stop tracking of your emails",
        "withdrawn": "Tracking stopped",
        "object": "Object to the tracking of your emails",
        "objected": "Your objection is recorded",
        "error": "This link cannot be used",
    },
    "fr": {
        "consent": "Boutique Exemple SAS vous demande votre accord",
        "saved": "Vos choix sont enregistrés",
        "prefs": "Vos choix de suivi des e-mails",
        "withdraw": "Arrêter le suivi de vos e-mails",
        "withdrawn": "Suivi arrêté",
        "object": "Vous opposer au suivi de vos e-mails",
        "objected": "Votre opposition est enregistrée",
        "error": "Ce lien ne peut pas être utilisé",
    },
}
BUTTONS = {
    "en": {"accept_all": "Accept all", "stop": "Stop tracking", "object": "I object to tracking",
           "save": "Save my choices", "accept": "Accept"},
    "fr": {"accept_all": "Tout accepter", "stop": "Arrêter le suivi",
           "object": "Je m'oppose au suivi", "save": "Enregistrer mes choix", "accept": "Accepter"},
}  # fmt: skip


def axe_source() -> str:
    if not AXE.exists():
        if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{AXE} is required (RELAY_REQUIRE_TOOLS=1; .ci/run installs it)")
        pytest.skip("axe-core not installed: npm install --prefix tests/web/js")
    return AXE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_chromium() as instance:
        yield instance


@pytest.fixture
def web(redis_url: str) -> Iterator[WebServer]:
    server = WebServer(redis_url, {"shop": SHOP}).start()
    yield server
    server.stop()


def shot(page: Any, name: str, docs: bool) -> None:
    screenshot(page, ARTIFACTS / "pages" / f"{name}.png")
    if docs and os.environ.get("RELAY_DOCS_SCREENSHOTS") == "1":
        screenshot(page, DOCS / f"{name.rsplit('-', 2)[0]}.png", full_page=False)


def no_axe_violation(page: Any, source: str, name: str) -> None:
    page.evaluate(source)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    problems = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in result["violations"]
    ]
    assert problems == [], f"{name}: {problems}"


def press_with_keyboard(page: Any, name: str, *, role: str = "button") -> None:
    """Tab (never the mouse) until the control is focused, then Enter; wait for the page."""
    target = page.get_by_role(role, name=name, exact=True)
    for _ in range(40):
        page.keyboard.press("Tab")
        if target.evaluate("e => e === document.activeElement"):
            break
    else:
        pytest.fail(f"{name!r} cannot be reached with the keyboard")
    with page.expect_navigation():
        page.keyboard.press("Enter")


def legacy(web: WebServer, address: str) -> None:
    for kind, at in ((EventType.COLLECTED, "2025-01-10"), (EventType.INFORMED, "2026-05-02")):
        web.record(
            ConsentEvent(kind, (Purpose.CAMPAIGN_PERFORMANCE, Purpose.DELIVERABILITY), address,
                         datetime.fromisoformat(at + "T09:00:00+00:00"), actor="import",
                         method="import", notice={"version": "1"}, controller="shop")
        )  # fmt: skip


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
@pytest.mark.parametrize("lang", ["en", "fr"])
def test_every_page_in_chromium(browser: Any, web: WebServer, lang: str, viewport: str) -> None:
    source = axe_source()
    now = datetime.now(UTC)
    docs = lang == "en" and viewport == "phone"
    context = browser.new_context(
        viewport=VIEWPORTS[viewport], locale="de-DE", bypass_csp=True, device_scale_factor=1
    )  # the browser's language is neither: the email's language (in the token) decides
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    h1 = H1[lang]
    buttons = BUTTONS[lang]

    def check(name: str) -> None:
        assert page.locator("h1").inner_text() == h1[name], name
        assert page.locator("html").get_attribute("lang") == lang
        shot(page, f"{name}-{lang}-{viewport}", docs)
        no_axe_violation(page, source, f"{name}-{lang}-{viewport}")

    address = f"jeanne.{lang}.{viewport}@example.org"
    rkey = web.remember(address)
    # A new recipient: the consent page, accepted with the keyboard only.
    page.goto(web.minter.consent_url(rkey, "<ask@shop.example>", now, "shop", lang))
    check("consent")
    assert "j***@example.org" in page.locator(".who").inner_text()
    press_with_keyboard(page, buttons["accept_all"])
    check("saved")
    assert web.state(address, "shop").purposes[Purpose.FRAUD_DETECTION].state is EventType.GRANTED
    # The preference centre: one purpose refused with the keyboard (arrows move a radio group).
    page.goto(web.minter.preferences_url(rkey, "<m@shop.example>", now, "shop", lang))
    check("prefs")
    accept = page.get_by_role("radio", name=buttons["accept"]).first
    for _ in range(40):
        page.keyboard.press("Tab")
        if accept.evaluate("e => e === document.activeElement"):
            break
    page.keyboard.press("ArrowDown")  # from "accept" to "refuse" for the first purpose
    press_with_keyboard(page, buttons["save"])
    assert web.state(address, "shop").purposes[Purpose.DELIVERABILITY].state is EventType.WITHDRAWN
    # The withdrawal page, then its confirmation.
    page.goto(web.minter.withdraw_url(rkey, "<m@shop.example>", now, "shop", lang))
    check("withdraw")
    press_with_keyboard(page, buttons["stop"])
    check("withdrawn")
    state = web.state(address, "shop")
    assert all(state.purposes[p].state is EventType.WITHDRAWN for p in (Purpose.FRAUD_DETECTION,))
    # A legacy recipient: the objection page, then its confirmation.
    old = f"louis.{lang}.{viewport}@example.org"
    legacy(web, old)
    old_key = web.remember(old)
    page.goto(web.minter.withdraw_url(old_key, "<n@shop.example>", now, "shop", lang))
    check("object")
    press_with_keyboard(page, buttons["object"])
    check("objected")
    assert web.state(old, "shop").objected
    # An error page.
    page.goto(web.base + f"/w/forged.token?lang={lang}")
    check("error")
    assert all(u.startswith(web.base) for u in requested), requested  # no external asset
    context.close()
