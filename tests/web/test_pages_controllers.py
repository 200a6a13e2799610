"""The pages say who asks, for which address, in the email's language; each controller's
consent is its own; the notice shown is hashed whole into the proof; actions are counted."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from relay.core.links import WITHDRAW
from relay.model import ConsentEvent, EventType, Purpose
from relay.ops.metrics import PAGE_ACTIONS
from relay.settings import ControllerSettings
from tests.support.redis import sync_client
from tests.support.web import ADDRESS, WebServer, form_post, http, nonce_of

SHOP = ControllerSettings(
    name="Shop SAS", domains=("shop.example",), privacy_url="https://shop.example/privacy",
    contact="privacy@shop.example", third_parties=("SendGrid (Twilio Inc.)", "Mailchimp"),
)  # fmt: skip
CLUB = ControllerSettings(
    name="Running Club", domains=("club.example",), contact="https://club.example/contact"
)


@pytest.fixture
def web(redis_url: str) -> Iterator[WebServer]:
    server = WebServer(redis_url, {"shop": SHOP, "club": CLUB}).start()
    yield server
    server.stop()


def now() -> datetime:
    return datetime.now(UTC)


def visible(page: str) -> str:
    """The text a reader sees (tags and hidden fields out)."""
    body = page.split("<body>", 1)[1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def test_the_consent_page_says_who_asks_for_which_address_and_how_to_withdraw(
    web: WebServer,
) -> None:
    rkey = web.remember()
    url = web.minter.consent_url(rkey, "<ask@shop.example>", now(), controller="shop", lang="en")
    page = http("GET", url, headers={"Accept-Language": "fr"})  # the email's language wins
    text = visible(page.text)
    assert 'lang="en"' in page.text
    assert "Shop SAS asks for your agreement" in text
    assert "Email address concerned: a***@example.org" in text and ADDRESS not in page.text
    assert "Third parties that use these trackers: SendGrid (Twilio Inc.), Mailchimp." in text
    assert "used by Shop SAS and its service providers (SendGrid (Twilio Inc.), Mailchimp)" in text
    assert "You can withdraw your consent at any time, as easily as you give it" in text
    assert (
        'href="https://shop.example/privacy"' in page.text and "Privacy policy of Shop SAS" in text
    )
    assert 'href="mailto:privacy@shop.example"' in page.text
    # The preference centre is one link away, for the same recipient and controller.
    prefs = re.search(r'href="(http://[^"]+/p/[^"]+)"', page.text)
    assert prefs and "Your email tracking choices" in http("GET", prefs.group(1)).text
    # The visitor's switch wins over the email's language.
    assert "Shop SAS vous demande votre accord" in http("GET", url + "?lang=fr").text


def test_withdrawal_and_preference_centre_link_to_each_other(web: WebServer) -> None:
    rkey = web.remember()
    web.grant((Purpose.CAMPAIGN_PERFORMANCE,), controller="club")
    withdraw = http("GET", web.minter.withdraw_url(rkey, "<m@club.example>", now(), "club", "fr"))
    assert "Expéditeur : Running Club" in visible(withdraw.text)
    assert 'href="https://club.example/contact"' in withdraw.text
    prefs_url = re.search(r'href="(http://[^"]+/p/[^"]+)"', withdraw.text)
    assert prefs_url
    prefs = http("GET", prefs_url.group(1))
    assert "Vos choix de suivi des e-mails" in prefs.text
    back = re.search(r'href="(http://[^"]+/w/[^"]+)"', prefs.text)
    assert back
    claims = web.signer.verify(back.group(1).rsplit("/", 1)[1], kinds={WITHDRAW}, now=now())
    assert (claims.rkey, claims.controller, claims.lang) == (rkey, "club", "fr")


def test_each_controller_keeps_its_own_consent_on_the_pages(web: WebServer) -> None:
    rkey = web.remember()
    web.grant((Purpose.CAMPAIGN_PERFORMANCE,), controller="shop")
    web.grant((Purpose.CAMPAIGN_PERFORMANCE,), controller="club")
    url = web.minter.withdraw_url(rkey, "<m@club.example>", now(), controller="club")
    page = http("GET", url, headers={"Accept-Language": "en"})
    assert form_post(url, {"nonce": nonce_of(page.text), "lang": "en"}).status == 200
    assert (
        web.state(controller="club").purposes[Purpose.CAMPAIGN_PERFORMANCE].state
        is EventType.WITHDRAWN
    )
    assert (
        web.state(controller="shop").purposes[Purpose.CAMPAIGN_PERFORMANCE].state
        is EventType.GRANTED
    )
    event = web.history(controller="club")[-1]
    assert (
        event.controller == "club" and web.history(controller="shop")[-1].event is EventType.GRANTED
    )


def test_the_whole_notice_is_hashed_into_the_proof_and_kept_for_auditors(web: WebServer) -> None:
    rkey = web.remember()
    url = web.minter.consent_url(rkey, "<ask@shop.example>", now(), controller="shop", lang="en")
    page = http("GET", url)
    posted = re.search(r'name="notice" value="([0-9a-f]{64})"', page.text)
    assert posted
    done = form_post(url, {"nonce": nonce_of(page.text), "action": "accept_all", "lang": "en",
                           "notice": posted.group(1)})  # fmt: skip
    assert done.status == 200
    event = web.history(controller="shop")[-1]
    assert event.notice["hash"] == posted.group(1) and event.notice["id"] == "relay-consent"
    assert event.notice["language"] == "en" and event.notice["version"] == "1"
    client = sync_client(web.redis_url)
    text = client.get(web.keys.notice_text(event.notice["hash"]))
    client.close()
    assert isinstance(text, bytes) and hashlib.sha256(text).hexdigest() == event.notice["hash"]
    wording = json.loads(text)
    assert wording["texts"]["intro"].startswith("Shop SAS would like to use trackers")
    assert "{address}" in wording["texts"]["intro"]  # one wording, one hash, whoever reads it
    assert len(wording["purposes"]) == 4 and "Shop SAS" in wording["purposes"][0][2]
    # The French page is another wording with another hash.
    fr = http("GET", url + "?lang=fr")
    assert re.search(r'name="notice" value="([0-9a-f]{64})"', fr.text).group(1) != posted.group(1)  # type: ignore[union-attr]


def test_a_form_shown_under_another_wording_records_nothing(web: WebServer) -> None:
    rkey = web.remember()
    url = web.minter.consent_url(rkey, "<ask@shop.example>", now(), controller="shop")
    page = http("GET", url)
    reply = form_post(
        url, {"nonce": nonce_of(page.text), "action": "accept_all", "notice": "0" * 64}
    )
    assert reply.status == 409 and "Recharger la page" in reply.text
    assert web.history(controller="shop") == []


def test_page_actions_are_counted_and_logged_masked(
    web: WebServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.web.pages")
    rkey = web.remember()
    counter = PAGE_ACTIONS.labels("granted", "fraud_detection", "shop")
    before = counter._value.get()
    url = web.minter.preferences_url(rkey, "<m@shop.example>", now(), controller="shop")
    page = http("GET", url)
    fields = {"nonce": nonce_of(page.text), "action": "save", "purpose_fraud_detection": "granted"}
    assert form_post(url, fields).status == 200
    assert counter._value.get() == before + 1
    assert PAGE_ACTIONS.labels("refused", "campaign_performance", "shop")._value.get() >= 1
    metrics = http("GET", web.base + "/metrics").text
    assert (
        'relay_page_actions_total{action="granted",controller="shop",purpose="fraud_detection"}'
        in metrics
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "relay.web.pages"]
    assert (
        "preferences page: granted fraud_detection for a***@example.org (controller shop)" in lines
    )
    assert all(ADDRESS not in line for line in lines)


def test_a_link_of_a_controller_no_longer_configured_is_a_clear_page(web: WebServer) -> None:
    rkey = web.remember()
    url = web.minter.withdraw_url(rkey, "<m@gym.example>", now(), controller="gym")
    reply = http("GET", url, headers={"Accept-Language": "en"})
    assert reply.status == 404 and "a sender this service no longer handles" in reply.text
    # A link from before controllers (none named) with two controllers and no owner of the
    # older consent: same clear page, nothing recorded anywhere.
    old = web.signer.mint("w", rkey, ref="r", ttl=None, now=now())
    assert http("GET", web.base + "/w/" + old).status == 404


def test_gateway_checks_the_consent_of_the_controller_its_link_names(web: WebServer) -> None:
    from relay.model import Action, GatewayLink
    from relay.store.link_store import store_gateway_links

    rkey = web.remember()
    web.grant((Purpose.CAMPAIGN_PERFORMANCE,), controller="shop")
    link = GatewayLink(
        "L1", "https://t.example/o.gif", Purpose.CAMPAIGN_PERFORMANCE, Action.GATEWAY
    )
    web.run(lambda _s, c: store_gateway_links(c, web.keys, [link], ttl_days=1))
    shop = web.minter.gateway_url(rkey, "L1", Purpose.CAMPAIGN_PERFORMANCE, now(), "shop")
    club = web.minter.gateway_url(rkey, "L1", Purpose.CAMPAIGN_PERFORMANCE, now(), "club")
    assert http("GET", shop).status == 302
    assert http("GET", club).status == 200  # the club holds no consent: the blank GIF


def test_the_api_records_for_the_named_controller(web: WebServer) -> None:
    from tests.support.web import API_TOKEN

    url = web.base + "/api/v1/consent"
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"}
    body = {"address": "bob@example.org", "event": "granted", "purposes": ["fraud_detection"],
            "method": "checkbox", "notice": {"version": "1"},
            "source": {"form_id": "signup"}}  # fmt: skip
    missing = http("POST", url, data=json.dumps(body).encode(), headers=auth)
    assert missing.status == 400 and "name one (shop, club)" in json.loads(missing.body)["error"]
    created = http(
        "POST", url, data=json.dumps({**body, "controller": "club"}).encode(), headers=auth
    )
    assert created.status == 201
    assert web.history("bob@example.org", "club")[0].controller == "club"
    assert web.history("bob@example.org", "shop") == []


def test_done_pages_say_what_happens_next(web: WebServer) -> None:
    rkey = web.remember()
    for kind, at in ((EventType.COLLECTED, "2025-01-10"), (EventType.INFORMED, "2026-05-02")):
        web.record(ConsentEvent(kind, (Purpose.CAMPAIGN_PERFORMANCE,), ADDRESS,
                                datetime.fromisoformat(at + "T09:00:00+00:00"), actor="import",
                                method="import", controller="shop"))  # fmt: skip
    url = web.minter.withdraw_url(rkey, "<m@shop.example>", now(), controller="shop", lang="en")
    page = http("GET", url)
    assert "Object to the tracking of your emails" in page.text
    done = visible(form_post(url, {"nonce": nonce_of(page.text), "lang": "en"}).text)
    assert (
        "Your objection is recorded" in done
        and "What happens next: future emails from Shop SAS to a***@example.org" in done
    )
    assert web.state(controller="shop").objected


def test_a_minimised_open_counts_for_its_own_controller_only(web: WebServer) -> None:
    """The last-open day is tracking data of the controller whose email was opened: an open
    of the shop's newsletter must not make the recipient look active on the club's list."""
    from relay.store.link_store import day_number
    from relay.web.gateway import GIF

    rkey = web.remember()
    client = sync_client(web.redis_url)
    bucket = web.keys.last_open(rkey)
    assert http("GET", web.minter.minimise_url(rkey, "L1", now(), controller="shop")).body == GIF
    assert client.zrange(bucket, 0, -1, withscores=True) == [
        (f"shop|{rkey}".encode(), float(day_number(now())))
    ]
    assert http("GET", web.minter.minimise_url(rkey, "L2", now(), controller="club")).body == GIF
    members = client.zrange(bucket, 0, -1)
    assert {m.decode() if isinstance(m, bytes) else m for m in members} == {
        f"shop|{rkey}",
        f"club|{rkey}",
    }
    # A link of a controller no longer configured still shows its image and records nothing.
    gone = web.minter.minimise_url(rkey, "L3", now(), controller="gone")
    assert http("GET", gone).body == GIF
    assert client.zcard(bucket) == 2
    client.close()
