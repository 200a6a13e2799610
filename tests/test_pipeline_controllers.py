"""The whole relay with controllers: every minted link works, mail is decided for the controller
of its From domain, and mail no controller covers gets no consent-based tracker."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.model import ConsentEvent, EventType, Purpose
from relay.store.audit import AuditLog
from relay.store.redis_keys import Keys
from tests.support.harness import HTML_WITH_PIXEL, PIXEL, asend, make_settings, message, start_relay
from tests.support.redis import async_client
from tests.support.relay import OutboxRelay
from tests.support.web import http

ALICE = "alice@example.org"
CONTROLLERS: dict[str, object] = {
    "shop": {"name": "Shop SAS", "domains": ["shop.example"], "contact": "privacy@shop.example",
             "privacy_url": "https://shop.example/privacy", "third_parties": ["SendGrid"]},
    "club": {"name": "Running Club", "domains": ["club.example"]},
}  # fmt: skip


class World(OutboxRelay):
    async def send(self, raw: bytes, sender: str = "app@shop.example") -> tuple[int, str]:
        return await asend(self.running.smtp_port, raw, [ALICE], sender)

    def delivered(self) -> str:
        """The HTML and text of the one message delivered since the last call."""
        parsed = self.next_delivered()
        return "\n".join(
            str(p.get_content()) for p in parsed.walk() if p.get_content_maintype() == "text"
        )

    def link(self, text: str, kind: str) -> str:
        found = re.search(
            rf"{re.escape(self.settings.web.public_url)}/{kind}/[A-Za-z0-9_.-]+", text
        )
        assert found, text
        return found.group(0)

    async def grant(self, controller: str, *purposes: Purpose) -> None:
        await self.store.record(ConsentEvent(
            EventType.GRANTED, purposes or (Purpose.CAMPAIGN_PERFORMANCE,), ALICE,
            datetime.now(UTC), actor="admin", method="admin", controller=controller,
        ))  # fmt: skip


@pytest.fixture
async def world(tmp_path: Path, redis_url: str) -> AsyncIterator[World]:
    outbox = tmp_path / "outbox"
    settings = make_settings(tmp_path, redis_url, f"file:{outbox}", controllers=CONTROLLERS)
    running = await start_relay(settings, redis_url)
    w = World(running, settings, outbox, redis_url)
    yield w
    await w.client.aclose()
    await running.stop()


def audit_log(world: World) -> AuditLog:
    keys = Keys(world.settings.redis.prefix)
    return AuditLog(world.client, keys, "/nonexistent", timeout=2, retention_days=30)


CONSENT_REQUEST = (
    '<html lang="en"><body><p>May we measure?</p>'
    '<a href="{{relay:consent_url}}">Choose</a></body></html>'
)


async def test_the_consent_link_of_a_request_without_tracker_works_for_a_new_recipient(
    world: World,
) -> None:
    code, _ = await world.send(message(CONSENT_REQUEST, category="consent_request"))
    assert code == 250
    url = world.link(world.delivered(), "c")
    page = await asyncio.to_thread(http, "GET", url)
    assert page.status == 200, page.text  # was 404 "We cannot find the recipient of this link"
    assert "Shop SAS asks for your agreement" in page.text  # the email's language: English
    assert "a***@example.org" in page.text and ALICE not in page.text
    # The relay recorded the request, for the shop only.
    (requested,) = await world.store.history(ALICE, "shop")
    assert requested.event is EventType.REQUESTED and requested.controller == "shop"
    assert await world.store.history(ALICE, "club") == []


async def test_the_objection_link_of_a_legacy_notice_works(world: World) -> None:
    notice = '<html><body><p>We track.</p><a href="{{relay:withdraw_url}}">Object</a></body></html>'
    code, _ = await world.send(message(notice, category="transactional"))
    assert code == 250
    page = await asyncio.to_thread(http, "GET", world.link(world.delivered(), "w"))
    assert page.status == 200 and "Shop SAS" in page.text


async def test_mail_from_a_domain_no_controller_covers(world: World) -> None:
    await world.grant("shop")
    other = message(HTML_WITH_PIXEL, category="newsletter").replace(
        b"news@shop.example", b"news@other.example"
    )
    code, _ = await world.send(other, sender="app@other.example")
    assert code == 250
    body = world.delivered()
    assert PIXEL not in body and "/g/" not in body and "/w/" not in body  # no consent to rely on
    ask = message(CONSENT_REQUEST, category="consent_request").replace(
        b"news@shop.example", b"a@other.example"
    )
    code, text = await world.send(ask, sender="app@other.example")
    assert code == 550 and "5.7.1" in text and "R-130" in text and "other.example" in text
    records = await audit_log(world).by_message("<m1@shop.example>")
    assert {r.controller for r in records} == {""}


async def test_two_controllers_on_one_relay_never_share_consent(world: World) -> None:
    await world.grant("shop")
    code, _ = await world.send(
        message(HTML_WITH_PIXEL, category="newsletter", message_id="<s1@shop.example>")
    )
    assert code == 250
    shop_copy = world.delivered()
    assert "/g/" in shop_copy and "que Shop SAS utilise avec votre consentement" in shop_copy
    club = message(HTML_WITH_PIXEL, category="newsletter", message_id="<c1@club.example>")
    club = club.replace(b"news@shop.example", b"news@club.example")
    code, _ = await world.send(club, sender="app@club.example")
    assert code == 250
    club_copy = world.delivered()
    assert "/g/" not in club_copy and PIXEL not in club_copy  # the shop's consent is not the club's
    log = audit_log(world)
    (shop_record,) = await log.by_message("<s1@shop.example>")
    (club_record,) = await log.by_message("<c1@club.example>")
    assert (shop_record.controller, club_record.controller) == ("shop", "club")
    assert shop_record.trackers[0].basis == "consent" and club_record.trackers[0].basis == "none"
    # The shop's gateway link checks the shop's consent at open time; a club withdrawal
    # does not silence it.
    gateway = world.link(shop_copy, "g")
    await world.store.record(ConsentEvent(
        EventType.WITHDRAWN, (Purpose.CAMPAIGN_PERFORMANCE,), ALICE, datetime.now(UTC),
        actor="admin", method="admin", controller="club",
    ))  # fmt: skip
    assert (await asyncio.to_thread(http, "GET", gateway)).status == 302


async def test_start_up_says_which_domains_are_covered(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.service")
    settings = make_settings(tmp_path, redis_url, f"file:{tmp_path}/o", controllers=CONTROLLERS)
    running = await start_relay(settings, redis_url)
    await running.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "relay.service"]
    assert "controller shop (Shop SAS): mail from shop.example (and subdomains)" in lines
    assert "mail from any other domain gets no consent-based tracker" in lines


async def test_links_that_cannot_be_stored_defer_the_message(
    tmp_path: Path, private_redis: Any
) -> None:
    """A Redis that refuses to keep recipient addresses (an ACL, a real server): the relay
    answers 451 and sends nothing, rather than mail links that would answer "unknown"."""
    server = private_redis()
    admin = async_client(server.url)
    await admin.execute_command(
        "ACL", "SETUSER", "relay", "on", ">pw", "+@all", "~relay:consent:*", "~relay:ledger:*",
        "~relay:audit:*", "~relay:gw:*", "~relay:nonce:*", "%R~relay:rcpt:*",
    )  # fmt: skip
    await admin.aclose()
    url = server.url.replace("redis://", "redis://relay:pw@")
    outbox = tmp_path / "outbox"
    settings = make_settings(tmp_path, url, f"file:{outbox}", controllers=CONTROLLERS)
    running = await start_relay(settings, url)
    try:
        code, text = await asend(
            running.smtp_port, message(CONSENT_REQUEST, category="consent_request"), [ALICE]
        )
        assert code == 451 and "R-230" in text
        assert not list(outbox.glob("*.eml"))
    finally:
        await running.stop()
