"""The oracle: what a real browser fetches when it shows a relayed newsletter (issue 12).

Each newsletter of ``tests/fixtures/newsletters/`` (our own, in the markup MJML, Foundation for
Emails, an ESP's gallery and a retail sender produce, with the vendors' trackers where they
put them) goes through the real relay (real SMTP in, real upstream out, real Redis) to a
recipient who gave no consent. The message delivered upstream is decoded and its HTML shown in
Chromium (Debian ``chromium`` driven by Playwright, JavaScript off as in mail clients), on a
desktop and on a phone screen, every request answered by request interception (nothing leaves
the machine). The same is done with the original HTML. Then:

- the relayed message requests nothing but the relay itself and what was content in the
  original (``content:`` lines of each file); no tracker (``trackers:`` lines) at all;
- every content resource the original makes the browser fetch, the relayed one fetches too;
- the original does fetch every tracker and only labelled URLs (else the oracle proves
  nothing, or the file's labels are wrong).

Without Chromium the tests are skipped, unless ``RELAY_REQUIRE_TOOLS=1`` (CI) makes that a
failure.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from relay.web.gateway import GIF
from tests.conftest import CHROMIUM_ARGS
from tests.support.browser import chromium_path
from tests.support.harness import asend, make_settings, message, start_relay
from tests.support.smtp_sink import Sink

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

NEWSLETTERS = Path(__file__).resolve().parents[1] / "fixtures" / "newsletters"
PAGE = "https://webmail.example/message"
LABEL = re.compile(r"^(content|trackers): (\S+)$", re.MULTILINE)
# A desktop client, then a phone (media queries swap images, srcset picks the 2x file).
SCREENS = [
    {"viewport": {"width": 1024, "height": 4000}, "device_scale_factor": 1},
    {"viewport": {"width": 375, "height": 4000}, "device_scale_factor": 2, "is_mobile": True},
]


def _labels(html: str) -> tuple[set[str], set[str]]:
    found: dict[str, set[str]] = {"content": set(), "trackers": set()}
    for kind, url in LABEL.findall(html):
        found[kind].add(url)
    return found["content"], found["trackers"]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    path = chromium_path()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield instance
        await instance.close()


async def _requests(browser: Any, html: str) -> set[str]:
    """Every URL Chromium asks for while it shows ``html``, on each screen."""
    requested: set[str] = set()
    for screen in SCREENS:
        context = await browser.new_context(java_script_enabled=False, **screen)

        async def answer(route: Any) -> None:
            if route.request.url == PAGE:
                await route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)
            else:
                await route.fulfill(status=200, content_type="image/gif", body=GIF)

        await context.route("**/*", answer)
        page = await context.new_page()
        page.on("request", lambda request: requested.add(request.url))
        await page.goto(PAGE, wait_until="load")
        await page.wait_for_load_state("networkidle")
        await context.close()
    return {url for url in requested if url != PAGE and not url.startswith("data:")}


def _html(data: bytes) -> str:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(("html",))
    assert body is not None
    content = body.get_content()
    assert isinstance(content, str)
    return content


@pytest.mark.parametrize("name", sorted(p.name for p in NEWSLETTERS.glob("*.html")))
async def test_a_relayed_newsletter_fetches_only_content_and_the_relay(
    tmp_path: Path, redis_url: str, sink: Sink, browser: Any, name: str
) -> None:
    original = (NEWSLETTERS / name).read_text()
    content, trackers = _labels(original)
    assert content and trackers, f"{name}: no content:/trackers: lines"

    settings = make_settings(tmp_path, redis_url, sink.url)
    running = await start_relay(settings, redis_url)
    try:
        code, reply = await asend(running.smtp_port, message(original), ["alice@example.org"])
    finally:
        await running.stop()
    assert code == 250, reply
    (delivered,) = sink.handler.received
    relayed = _html(delivered.data)

    before = await _requests(browser, original)
    after = await _requests(browser, relayed)
    relay = settings.web.public_url.rstrip("/") + "/"

    # The oracle sees what it should: every tracker fires in the original, nothing unlabelled.
    assert trackers <= before, f"{name}: trackers the original never fetched: {trackers - before}"
    unlabelled = before - content - trackers
    assert not unlabelled, f"{name}: unlabelled requests: {unlabelled}"
    # Without consent: nothing but content and the relay itself.
    leaks = {url for url in after - content if not url.startswith(relay)}
    assert not leaks, f"{name}: requests that are neither content nor the relay: {leaks}"
    assert not after & trackers
    # And no content lost.
    lost = (before & content) - after
    assert not lost, f"{name}: content the relayed message no longer fetches: {lost}"
