"""The web side over a real uvicorn server and a real Valkey: pages, CSRF, replay, gateway, API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from relay.core.links import GATEWAY_TTL, LinkSigner, gateway_link_id
from relay.model import Action, EventType, GatewayLink, Purpose
from relay.store.link_store import day_number, store_gateway_links
from relay.web.gateway import GIF
from tests.support.web import (
    ADDRESS,
    API_TOKEN,
    WebServer,
    form_post,
    http,
    nonce_of,
    snapshot,
)

CHOICES = (
    Purpose.DELIVERABILITY,
    Purpose.CAMPAIGN_PERFORMANCE,
    Purpose.CROSS_CONTEXT_PROFILING,
    Purpose.FRAUD_DETECTION,
)
TRACKER = "https://tracker.example/open.gif?u=12345"


@pytest.fixture
def web(redis_url: str) -> Iterator[WebServer]:
    server = WebServer(redis_url).start()
    yield server
    server.stop()


def now() -> datetime:
    return datetime.now(UTC)


def test_healthz(web: WebServer) -> None:
    assert http("GET", web.base + "/healthz").status == 200


def test_get_and_head_change_nothing(web: WebServer) -> None:
    rkey = web.remember()
    web.grant((Purpose.CAMPAIGN_PERFORMANCE,))
    urls = [
        web.minter.withdraw_url(rkey, "<m1@shop.example>", now()),
        web.minter.preferences_url(rkey, "<m1@shop.example>", now()),
        web.minter.consent_url(rkey, "<m1@shop.example>", now()),
    ]
    before = snapshot(web.redis_url, "relay:consent:*")
    nonces = snapshot(web.redis_url, "relay:nonce:*")
    for url in urls:
        head = http("HEAD", url)
        assert head.status == 200 and head.body == b""
    assert snapshot(web.redis_url, "relay:nonce:*") == nonces  # HEAD writes nothing at all
    for url in urls:
        page = http("GET", url)
        assert page.status == 200
        assert "no-store" in page.headers["cache-control"]
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "<script" not in page.text and "http" not in page.text.split("<body>")[0]
    assert snapshot(web.redis_url, "relay:consent:*") == before
    assert web.state().purposes[Purpose.CAMPAIGN_PERFORMANCE].state is EventType.GRANTED


def test_withdrawal_records_proof_and_a_second_post_is_harmless(web: WebServer) -> None:
    rkey = web.remember()
    web.grant((Purpose.CAMPAIGN_PERFORMANCE, Purpose.FRAUD_DETECTION))
    url = web.minter.withdraw_url(rkey, "<m1@shop.example>", now())
    page = http("GET", url, headers={"Accept-Language": "en-GB,en;q=0.9,fr;q=0.5"})
    assert "Stop tracking" in page.text and 'lang="en"' in page.text
    assert "Analysis of the email opening rate to measure and optimise" in page.text
    fields = {"nonce": nonce_of(page.text), "lang": "en"}
    agent = {"User-Agent": "TestBrowser/1.0"}
    first = form_post(url, fields, agent)
    assert first.status == 200 and "Tracking stopped" in first.text
    state = web.state()
    for purpose in CHOICES:
        assert state.purposes[purpose].state is EventType.WITHDRAWN
    history = web.history()
    event = history[-1]
    assert event.event is EventType.WITHDRAWN and set(event.purposes) == set(CHOICES)
    assert (event.actor, event.method, event.address) == ("recipient", "button", ADDRESS)
    assert event.evidence["ip"] == "127.0.0.1"
    assert event.evidence["user_agent"] == "TestBrowser/1.0"
    claims = web.signer.verify(url.rsplit("/", 1)[1], kinds={"w"}, now=now())
    assert event.evidence["token_id"] == claims.token_id
    assert event.source["message_ref"] == claims.ref
    assert event.notice["version"] == web.settings.consent.notice_version
    assert event.notice["language"] == "en" and event.notice["hash"]
    second = form_post(url, fields, agent)
    # The same confirmation; only its links may differ (they are minted at each answer, and
    # a token carries its second of issue).
    assert second.status == 200 and without_links(second.text) == without_links(first.text)
    assert len(web.history()) == len(history)


def without_links(text: str) -> str:
    return re.sub(r'href="[^"]*"', 'href=""', text)


def test_post_without_or_with_a_wrong_nonce_is_refused(web: WebServer) -> None:
    rkey = web.remember()
    web.grant((Purpose.CAMPAIGN_PERFORMANCE,))
    url = web.minter.withdraw_url(rkey, "<m1@shop.example>", now())
    other_url = web.minter.preferences_url(rkey, "<m1@shop.example>", now())
    foreign = nonce_of(http("GET", other_url).text)  # a nonce bound to another token
    before = snapshot(web.redis_url, "relay:consent:*")
    for fields in ({}, {"nonce": "made-up"}, {"nonce": foreign}):
        reply = form_post(url, fields)
        assert reply.status == 403
        assert "<h1>" in reply.text and "Traceback" not in reply.text
    assert snapshot(web.redis_url, "relay:consent:*") == before


@pytest.mark.parametrize(
    ("mangle", "status"),
    [
        (lambda t: t[:-3] + ("AAA" if t[-3:] != "AAA" else "BBB"), 403),  # forged signature
        (lambda t: "Zm9v" + t, 403),  # altered payload
        (lambda t: t.replace(".", ""), 400),  # malformed
        (lambda t: "%00%0a'\"<script>", 400),  # garbage
    ],
)
def test_bad_tokens_get_a_clear_page(web: WebServer, mangle: object, status: int) -> None:
    rkey = web.remember()
    token = web.minter.withdraw_url(rkey, "<m1@x>", now()).rsplit("/", 1)[1]
    assert callable(mangle)
    for path in ("/w/", "/p/", "/c/", "/g/", "/m/"):
        reply = http("GET", web.base + path + mangle(token), headers={"Accept-Language": "fr"})
        assert reply.status == status, path
        assert "Ce lien ne peut pas être utilisé" in reply.text
        assert "Traceback" not in reply.text and "<script>" not in reply.text
        assert form_post(web.base + path + mangle(token), {"nonce": "x"}).status in (status, 405)


def test_expired_wrong_kind_and_unknown_recipient(web: WebServer) -> None:
    rkey = web.remember()
    old = now() - timedelta(days=31)
    consent = web.minter.consent_url(rkey, "<m1@x>", old)
    assert http("GET", consent).status == 410
    gw_token = web.minter.gateway_url(rkey, "L1", Purpose.CAMPAIGN_PERFORMANCE, now())
    assert http("GET", web.base + "/w/" + gw_token.rsplit("/", 1)[1]).status == 404
    stranger = web.rkey("nobody@example.org")
    assert http("GET", web.minter.withdraw_url(stranger, "<m1@x>", now())).status == 404
    retired = LinkSigner("k1", b"old-key")
    token = retired.mint("w", rkey, ref="r", ttl=None, now=now())
    assert http("GET", web.base + "/w/" + token).status == 200  # rotated keys keep working


def test_gateway_redirects_only_while_consent_holds(web: WebServer) -> None:
    rkey = web.remember()
    web.grant((Purpose.CAMPAIGN_PERFORMANCE,))
    link_id = gateway_link_id("<m1@shop.example>", TRACKER)
    link = GatewayLink(link_id, TRACKER, Purpose.CAMPAIGN_PERFORMANCE, Action.GATEWAY)
    web.run(lambda _s, c: store_gateway_links(c, web.keys, [link], ttl_days=1))
    url = web.minter.gateway_url(rkey, link_id, Purpose.CAMPAIGN_PERFORMANCE, now())
    held = http("GET", url)
    assert held.status == 302 and held.headers["location"] == TRACKER
    assert "no-store" in held.headers["cache-control"]
    # Another purpose, never granted: the blank image.
    other = web.minter.gateway_url(rkey, link_id, Purpose.FRAUD_DETECTION, now())
    assert http("GET", other).body == GIF
    # Withdraw through the page, then re-open the old email.
    page = web.minter.withdraw_url(rkey, "<m1@shop.example>", now())
    assert form_post(page, {"nonce": nonce_of(http("GET", page).text)}).status == 200
    before = snapshot(web.redis_url)
    after = http("GET", url)
    assert after.status == 200 and after.body == GIF and len(GIF) == 43
    assert after.headers["content-type"] == "image/gif" and "location" not in after.headers
    assert "no-store" in after.headers["cache-control"]
    assert snapshot(web.redis_url) == before  # records nothing


def test_gateway_without_stored_target_or_address_gives_the_gif(web: WebServer) -> None:
    rkey = web.remember()
    web.grant((Purpose.CAMPAIGN_PERFORMANCE,))
    url = web.minter.gateway_url(rkey, "unknown-link", Purpose.CAMPAIGN_PERFORMANCE, now())
    assert http("GET", url).body == GIF
    expired = web.minter.gateway_url(rkey, "x", Purpose.CAMPAIGN_PERFORMANCE, now() - GATEWAY_TTL)
    assert http("GET", expired).body == GIF


def test_minimise_stores_only_the_day(web: WebServer) -> None:
    rkey = web.remember()
    url = web.minter.minimise_url(rkey, "L1", now())
    before = snapshot(web.redis_url)
    assert http("HEAD", url).status == 200
    assert snapshot(web.redis_url) == before
    reply = http("GET", url)
    assert reply.body == GIF and reply.headers["content-type"] == "image/gif"
    after = snapshot(web.redis_url)
    changed = {k for k in after if after[k] != before.get(k)}
    bucket = web.keys.last_open(rkey).encode()
    assert changed == {bucket}
    assert after[bucket] == [(rkey.encode(), float(day_number(now())))]
    http("GET", url)  # overwritten, not appended
    assert snapshot(web.redis_url)[bucket] == after[bucket]


def test_preference_centre_choices_and_language(web: WebServer) -> None:
    rkey = web.remember()
    url = web.minter.preferences_url(rkey, "<m1@x>", now())
    page = http("GET", url + "?lang=fr", headers={"Accept-Language": "en"})
    assert 'lang="fr"' in page.text and "Tout refuser" in page.text and "Tout accepter" in page.text
    assert page.text.count("<details>") == 4 and 'href="?lang=en"' in page.text
    fields = {
        "nonce": nonce_of(page.text),
        "action": "save",
        "purpose_campaign_performance": "granted",
        "purpose_fraud_detection": "refused",
    }
    done = form_post(url, fields)
    assert done.status == 200 and "Vos choix sont enregistrés" in done.text
    state = web.state()
    assert state.purposes[Purpose.CAMPAIGN_PERFORMANCE].state is EventType.GRANTED
    assert state.purposes[Purpose.FRAUD_DETECTION].state is EventType.REFUSED
    assert state.purposes[Purpose.DELIVERABILITY].state is EventType.REFUSED  # no answer
    # Refusing everything is one click, like accepting everything.
    page = http("GET", url)
    done = form_post(url, {"nonce": nonce_of(page.text), "action": "refuse_all"})
    assert done.status == 200
    state = web.state()
    assert state.purposes[Purpose.CAMPAIGN_PERFORMANCE].state is EventType.WITHDRAWN
    assert state.purposes[Purpose.FRAUD_DETECTION].state is EventType.REFUSED


def test_consent_page_accepts_with_proof(web: WebServer) -> None:
    rkey = web.remember()
    url = web.minter.consent_url(rkey, "<ask@x>", now())
    page = http("GET", url, headers={"Accept-Language": "en"})
    assert "The sender asks for your agreement" in page.text
    assert 'value="granted" checked' not in page.text  # nothing pre-ticked
    done = form_post(url, {"nonce": nonce_of(page.text), "action": "accept_all", "lang": "en"})
    assert done.status == 200
    event = web.history()[-1]
    assert event.event is EventType.GRANTED and event.method == "link_confirmation"
    assert set(event.purposes) == set(CHOICES)


def test_redis_down_gives_503_page_and_gif() -> None:
    from relay.store.embedded import free_port

    dead = WebServer(f"redis://127.0.0.1:{free_port()}/0").start()  # nothing listens there
    try:
        rkey = dead.rkey()
        page = http("GET", dead.minter.withdraw_url(rkey, "<m@x>", now()))
        assert page.status == 503 and "Traceback" not in page.text
        gw_url = dead.minter.gateway_url(rkey, "L", Purpose.CAMPAIGN_PERFORMANCE, now())
        assert http("GET", gw_url).body == GIF
        assert http("GET", dead.minter.minimise_url(rkey, "L", now())).body == GIF
    finally:
        dead.stop()


def test_api_authentication_and_validation(web: WebServer) -> None:
    url = web.base + "/api/v1/consent"
    body = {
        "address": "bob@example.org",
        "event": "granted",
        "purposes": ["campaign_performance"],
        "method": "checkbox",
        "source": {"form_id": "signup", "form_version": "3"},
        "notice": {"id": "tracking", "version": "2"},
    }
    data = json.dumps(body).encode()
    json_header = {"Content-Type": "application/json"}
    assert http("POST", url, data=data, headers=json_header).status == 401
    wrong = {**json_header, "Authorization": "Bearer nope"}
    assert http("POST", url, data=data, headers=wrong).status == 401
    auth = {**json_header, "Authorization": f"Bearer {API_TOKEN}"}
    bad = http("POST", url, data=b"{not json", headers=auth)
    assert bad.status == 400 and "body" in json.loads(bad.body)["error"]
    missing = http("POST", url, data=json.dumps({**body, "address": None}).encode(), headers=auth)
    assert missing.status == 400 and json.loads(missing.body)["error"].startswith("address")
    # Proof before reliance: a grant must say how, where and under which notice.
    bare = {k: v for k, v in body.items() if k not in ("method", "source", "notice")}
    unproved = http("POST", url, data=json.dumps(bare).encode(), headers=auth)
    error = json.loads(unproved.body)["error"]
    assert unproved.status == 400 and error.startswith("method: missing"), error
    assert "give method, source, notice.version" in error
    wrong_purpose = json.dumps({**body, "purposes": ["spying"]}).encode()
    reply = http("POST", url, data=wrong_purpose, headers=auth)
    assert reply.status == 400 and "purposes" in json.loads(reply.body)["error"]
    created = http("POST", url, data=data, headers=auth)
    assert created.status == 201
    event_id = json.loads(created.body)["id"]
    history = web.history("bob@example.org")
    assert [e.id for e in history] == [event_id]
    assert history[0].source["form_id"] == "signup"


def test_unknown_path_is_a_page(web: WebServer) -> None:
    reply = http("GET", web.base + "/nowhere", headers={"Accept-Language": "en"})
    assert reply.status == 404 and "This page does not exist" in reply.text


def test_oversized_form_is_a_page_not_a_crash(web: WebServer) -> None:
    rkey = web.remember()
    url = web.minter.withdraw_url(rkey, "<m1@x>", now())
    fields = {f"f{i}": "x" for i in range(50)}  # more fields than any of our forms has
    reply = form_post(url, fields, {"Accept-Language": "en"})
    assert reply.status == 400 and "could not be understood" in reply.text
    assert web.history() == []


def test_a_legacy_recipient_objects_rather_than_withdraws(web: WebServer) -> None:
    from relay.model import ConsentEvent

    rkey = web.remember()
    for kind, at in ((EventType.COLLECTED, "2025-01-10"), (EventType.INFORMED, "2026-05-02")):
        event = ConsentEvent(
            event=kind,
            purposes=(Purpose.CAMPAIGN_PERFORMANCE,),
            address=ADDRESS,
            occurred_at=datetime.fromisoformat(at + "T09:00:00+00:00"),
            actor="import",
            method="import",
        )
        web.record(event)
    url = web.minter.withdraw_url(rkey, "<m1@x>", now())
    page = http("GET", url, headers={"Accept-Language": "en"})
    assert "to measure and optimise campaign performance" in page.text  # shown as tracked
    # They never consented: the page offers to object, and never speaks of withdrawing.
    assert (
        "Object to the tracking of your emails" in page.text and "I object to tracking" in page.text
    )
    assert "withdraw" not in page.text.lower().replace("/w/", "")
    done = form_post(url, {"nonce": nonce_of(page.text), "lang": "en"})
    assert done.status == 200 and "Your objection is recorded" in done.text
    assert [e.event for e in web.history()][-1:] == [EventType.OBJECTED]
    assert web.history()[-1].notice["id"] == "relay-object"
    assert web.state().objected
