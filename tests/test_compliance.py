"""Issue 10 through the running relay: the defaults follow the recommendation's text.

Each test starts a whole relay (SMTP in, web, real Valkey, a real aiosmtpd upstream), submits
with a real SMTP client and reads what reached the upstream, what the client was told and what
the audit log recorded. The messages are written for these tests in the shapes real mailings
have (a Mailchimp campaign's 20x20 open pixel, a LiveIntent ad impression, an S/MIME-signed
SendGrid newsletter, an ESP click-tracked consent request).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest

from relay.model import ConsentEvent, EventType, Purpose
from relay.service import Running
from relay.settings import Settings
from relay.store.audit import AuditLog
from relay.store.audit_record import DecisionRecord
from relay.store.consent import RedisConsentStore
from relay.store.redis_keys import Keys
from tests.store.test_retention import last_opens
from tests.support.harness import asend, make_settings, message, start_relay
from tests.support.redis import async_client
from tests.support.smtp_sink import Sink

pytestmark = pytest.mark.timeout(60)

ALICE = "alice@example.org"
BOB = "bob@example.org"
# A Mailchimp campaign's open pixel as Mailchimp writes it (declared 20x20 in some templates)
# and a LiveIntent newsletter ad impression carrying a hashed address.
MAILCHIMP = (
    "https://runclub.us16.list-manage.com/track/open.php"
    "?u=d4e7136c9e800768b99309b5c&id=b258016522&e=55bf2cbd2b"
)
LIVEINTENT = "https://sli.komando.com/imp?s=810140&e=55bf2cbd2b0a&p=1647437190982&stpe=default"
SENDGRID = "https://u32411132.ct.sendgrid.net/wf/open?upn=GVnML5ShO6DRrz_yQHubxcd_n7ulhQKU4rt"


class Relay:
    def __init__(self, running: Running, settings: Settings, redis_url: str) -> None:
        self.running = running
        self.settings = settings
        self.redis_url = redis_url

    @property
    def port(self) -> int:
        return self.running.smtp_port

    async def record(
        self, event: EventType, address: str, *purposes: Purpose, **kw: object
    ) -> None:
        client = async_client(self.redis_url)
        store = RedisConsentStore(
            client, Keys(self.settings.redis.prefix), self.settings.address_key,
            self.settings.consent,
        )  # fmt: skip
        at = kw.pop("at", datetime.now(UTC))
        assert isinstance(at, datetime)
        await store.record(
            ConsentEvent(
                event=event,
                purposes=purposes or (Purpose.CAMPAIGN_PERFORMANCE,),
                address=address,
                occurred_at=at,
                actor="recipient",
                method="checkbox",
                source={"form_id": "signup", "form_version": "3"},
                notice={"id": "tracking", "version": "1"},
            )
        )
        await client.aclose()

    async def grant(self, address: str, *purposes: Purpose) -> None:
        await self.record(EventType.GRANTED, address, *purposes)

    async def audit(self, message_id: str) -> list[DecisionRecord]:
        client = async_client(self.redis_url)
        log = AuditLog(
            client, Keys(self.settings.redis.prefix), self.settings.audit.journal,
            timeout=2.0, retention_days=self.settings.audit.retention_days,
        )  # fmt: skip
        try:
            return await log.by_message(message_id)
        finally:
            await client.aclose()


class RelayFactory(Protocol):
    async def __call__(self, **sections: dict[str, object]) -> Relay: ...


@pytest.fixture
async def relay_factory(tmp_path: Path, redis_url: str, sink: Sink) -> AsyncIterator[RelayFactory]:
    started: list[Running] = []

    async def make(**sections: dict[str, object]) -> Relay:
        settings = make_settings(tmp_path, redis_url, sink.url, **sections)
        running = await start_relay(settings, redis_url)
        started.append(running)
        return Relay(running, settings, redis_url)

    yield make
    for running in started:
        await running.stop()


def by_rcpt(records: list[DecisionRecord]) -> dict[str, DecisionRecord]:
    return {r.rcpt: r for r in records}


# ---------------------------------------------------------------------------------------------
# Item 1: "no consent" means no request reaches the tracker (recommendation 2.1).


async def test_no_consent_sends_no_request_to_a_visible_pixel_or_an_ad_impression(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    html = (
        "<html><body><p>Race day!</p>"
        f'<img src="{MAILCHIMP.replace("&", "&amp;")}" width="20" height="20" alt="">'
        f'<p><img src="{LIVEINTENT.replace("&", "&amp;")}" width="300" height="250"></p>'
        "</body></html>"
    )
    code, _ = await asend(relay.port, message(html, category="newsletter"), [ALICE])
    assert code == 250
    out = sink.handler.copies_for(ALICE)[0].data
    for host in (b"list-manage.com", b"komando.com"):
        assert host not in out  # not even with the identifier stripped
    assert b"Race day!" in out
    (record,) = await relay.audit("<m1@shop.example>")
    decided = {t.rule: (t.action, t.basis, t.policy_rule) for t in record.trackers}
    assert decided == {
        "mailchimp-open": ("remove", "none", "cnil-default"),
        "liveintent-impression": ("remove", "none", "cnil-default"),
    }


# ---------------------------------------------------------------------------------------------
# Item 7 and issue 14 item 6: the edits keep SMTP's line limit and the sender's bytes.


def _single_html(body: bytes, cte: str) -> bytes:
    return (
        b"From: Shop <news@shop.example>\r\nTo: alice@example.org\r\nSubject: Sale\r\n"
        b"Message-ID: <long@shop.example>\r\nX-Relay-Category: newsletter\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body + b"\r\n"
    )


async def test_a_consenting_recipient_gets_no_line_over_998_octets(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    await relay.grant(ALICE)
    # A 584-octet 8bit line holding the open pixels and the </body>: with the gateway URLs
    # and the footer on it, it became 1,195 octets and the upstream said "500 Line too long".
    pixels = "".join(
        f'<img src="https://u{n}.ct.sendgrid.net/wf/open?upn=Q{n}xZ" width="1" height="1">'
        for n in range(4)
    )
    line = "<td>Caf\u00e9 " + "x" * (584 - 22 - len(pixels)) + pixels + "</td></body>"
    assert len(line.encode()) == 584
    raw = _single_html(f"<html><body><table><tr>\r\n{line}\r\n</html>".encode(), "8bit")
    code, reply = await asend(relay.port, raw, [ALICE])
    assert code == 250, reply
    (copy,) = sink.handler.copies_for(ALICE)
    assert max(len(x) for x in copy.data.split(b"\r\n")) <= 998
    assert b"/g/" in copy.data.replace(b"=\r\n", b"")  # kept behind the gateway
    (record,) = await relay.audit("<long@shop.example>")
    assert record.footer_injected and {t.action for t in record.trackers} == {"gateway"}


async def test_an_html_part_encoding_line_feeds_as_0a_keeps_them(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    # Template engines write the document as one soft-broken hard line with "=0A" for its
    # line feeds; the pixel sits inside it.
    html = (
        "<!DOCTYPE html>\n<html>\n<body>\n<p>Spring sale</p>\n"
        f'<img src="{SENDGRID}" width="1" height="1">\n<p>Bye</p>\n</body>\n</html>'
    )
    encoded, line = [], b""
    for byte in html.encode():
        token = b"=0A" if byte == 10 else b"=3D" if byte == 61 else bytes([byte])
        if len(line) + len(token) > 75:
            encoded.append(line + b"=")
            line = b""
        line += token
    body = b"\r\n".join([*encoded, line])
    code, _ = await asend(relay.port, _single_html(body, "quoted-printable"), [ALICE])
    assert code == 250
    data = sink.handler.copies_for(ALICE)[0].data
    assert data.replace(b"\r\n", b"").count(b"\n") == 0  # no bare LF
    assert data.count(b"=0A") == body.count(b"=0A") == 7
    out_body = data[data.index(b"\r\n\r\n") + 4 :].rstrip(b"\r\n")
    assert all(x.endswith(b"=") for x in out_body.split(b"\r\n")[:-1])  # still one hard line
    assert out_body.startswith(body[: body.index(b"https")])


# ---------------------------------------------------------------------------------------------
# Item 4: proof before reliance (recommendation section 6).


async def test_a_grant_without_proof_is_refused_by_the_api_and_never_tracked_on(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    import asyncio
    import json

    from tests.support.web import http

    relay = await relay_factory()
    api = relay.settings.web.public_url + "/api/v1/consent"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer test-api-token"}
    bare = {"address": ALICE, "event": "granted", "purposes": ["campaign_performance"]}
    reply = await asyncio.to_thread(http, "POST", api, data=json.dumps(bare).encode(),
                                    headers=headers)  # fmt: skip
    assert reply.status == 400
    assert json.loads(reply.body)["error"].endswith("give method, source, notice.version")
    html = f'<html><body><img src="{SENDGRID}" width="1" height="1"></body></html>'
    assert (await asend(relay.port, message(html, category="newsletter"), [ALICE]))[0] == 250
    assert b"sendgrid.net" not in sink.handler.copies_for(ALICE)[0].data  # nothing relied on

    proved = {
        **bare,
        "method": "checkbox",
        "source": {"form_id": "signup", "form_version": "3"},
        "notice": {"id": "tracking", "version": "1"},
    }
    reply = await asyncio.to_thread(http, "POST", api, data=json.dumps(proved).encode(),
                                    headers=headers)  # fmt: skip
    assert reply.status == 201
    again = message(html, category="newsletter", message_id="<m2@shop.example>")
    assert (await asend(relay.port, again, [ALICE]))[0] == 250
    (record,) = await relay.audit("<m2@shop.example>")
    assert [(t.action, t.basis) for t in record.trackers] == [("gateway", "consent")]
    assert record.consent_event_ids == (json.loads(reply.body)["id"],)


# ---------------------------------------------------------------------------------------------
# Item 8: retention, applied by `relay serve` like the audit trim.


async def test_serve_applies_the_retention_of_last_opens_and_consent_proofs(
    relay_factory: RelayFactory, redis_url: str
) -> None:
    import asyncio

    from relay.core.recipients import recipient_key
    from relay.store.link_store import day_number

    client = async_client(redis_url)
    keys = Keys("relay:")
    now = datetime.now(UTC)
    today = day_number(now)
    for member, day in (("r-old", today - 400), ("r-recent", today - 30)):
        await client.zadd(keys.last_open(member), {member: day})
    # A refusal recorded eight years ago, and one recorded today.
    settings = make_settings(Path("/nonexistent"), redis_url, "file:/nonexistent")
    store = RedisConsentStore(client, keys, settings.address_key, settings.consent)
    for address, at in ((ALICE, now - timedelta(days=8 * 365)), (BOB, now)):
        event = ConsentEvent(
            event=EventType.REFUSED, purposes=(Purpose.CAMPAIGN_PERFORMANCE,), address=address,
            occurred_at=at, actor="recipient", method="button", source={"page": "prefs"},
        )  # fmt: skip
        await store.append_many([store.prepare(event, at)])
    relay = await relay_factory()
    assert relay.settings.address_key == settings.address_key
    old = keys.consent_events(recipient_key(ALICE, settings.address_key))
    for _ in range(100):
        if not await client.exists(old) and await last_opens(client, keys) == {"r-recent"}:
            break
        await asyncio.sleep(0.05)
    assert await last_opens(client, keys) == {"r-recent"}
    assert not await client.exists(old)
    assert await client.exists(keys.consent_events(recipient_key(BOB, settings.address_key)))
    await client.aclose()


# ---------------------------------------------------------------------------------------------
# Item 2: signed mail. Parts stay unmodified; a recipient without a basis gets no copy.


def signed_newsletter(message_id: str = "<signed@shop.example>", pixel: bool = True) -> bytes:
    """An S/MIME-signed (multipart/signed, detached) marketing email with a SendGrid pixel
    inside the signed HTML, in the shape Outlook and Thunderbird send."""
    img = f'<img src=3D"{SENDGRID.replace("=", "=3D")}" width=3D"1" height=3D"1">' if pixel else ""
    return (
        "From: Shop <news@shop.example>\r\nTo: alice@example.org\r\nSubject: Spring sale\r\n"
        f"Message-ID: {message_id}\r\nX-Relay-Category: marketing\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        'micalg=sha-256; boundary="sig"\r\n\r\n'
        "This is a cryptographically signed message in MIME format.\r\n\r\n--sig\r\n"
        'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n--alt\r\n'
        "Content-Type: text/plain; charset=utf-8\r\n\r\nSpring sale: 20% off.\r\n--alt\r\n"
        "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        f"\r\n\r\n<html><body><p>Spring sale: 20% off.</p>{img}</body></html>\r\n--alt--\r\n\r\n"
        "--sig\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
        "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAKCAMIIF\r\n"
        "--sig--\r\n"
    ).encode()


async def test_a_signed_part_with_a_tracker_is_not_delivered_without_a_basis(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    code, reply = await asend(relay.port, signed_newsletter(), [ALICE])
    assert code == 550, reply
    assert "5.7.1" in reply and "sendgrid-open (campaign_performance)" in reply
    assert "signed-no-basis" in reply and "[R-140]" in reply
    assert sink.handler.received == []
    (record,) = await relay.audit("<signed@shop.example>")
    assert [(t.rule, t.action, t.basis, t.policy_rule) for t in record.trackers] == [
        ("sendgrid-open", "remove", "none", "signed-no-basis")
    ]
    assert record.upstream_reply.startswith("550 5.7.1")


async def test_a_signed_message_reaches_unchanged_who_has_a_basis_and_notices_the_others(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    await relay.grant(BOB)
    raw = signed_newsletter()
    # First attempt: BOB's copy is deferred upstream, so the client retries; no notice yet.
    sink.handler.faults.fail_data_for[BOB] = "451 4.3.0 try again later"
    assert (await asend(relay.port, raw, [ALICE, BOB]))[0] == 451
    assert sink.handler.received == []
    code, reply = await asend(relay.port, raw, [ALICE, BOB])
    assert code == 250 and "1 recipient(s) refused, notice sent" in reply
    (bob,) = sink.handler.copies_for(BOB)
    # Unmodified: the signature still verifies. Only the relay's request header is gone.
    assert bob.data == raw.replace(b"X-Relay-Category: marketing\r\n", b"")
    assert sink.handler.copies_for(ALICE) == []
    (notice,) = [r for r in sink.handler.received if r.mail_from == ""]
    assert notice.rcpt_tos == ["app@shop.example"]
    text = notice.data.decode()
    assert "Final-Recipient: rfc822; alice@example.org" in text and "Status: 5.7.1" in text
    assert "the relay did not deliver it" in text and "signed-no-basis" in text
    assert len(sink.handler.received) == 2  # BOB's copy once, one notice
    records = by_rcpt((await relay.audit("<signed@shop.example>"))[-2:])
    assert [(t.action, t.basis) for t in records[BOB].trackers] == [("keep", "consent")]
    assert records[ALICE].trackers[0].policy_rule == "signed-no-basis"


async def test_a_signed_message_without_trackers_goes_to_everyone_unchanged(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    raw = signed_newsletter(pixel=False)
    assert (await asend(relay.port, raw, [ALICE, BOB]))[0] == 250
    (copy,) = sink.handler.received
    assert sorted(copy.rcpt_tos) == [ALICE, BOB]
    assert copy.data == raw.replace(b"X-Relay-Category: marketing\r\n", b"")


# ---------------------------------------------------------------------------------------------
# Item 3: the ESP's own pixel gets the footer and a decision record.


async def test_the_esps_own_pixel_is_recorded_and_its_consenting_recipients_get_the_footer(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory(upstream={"profile": "sendgrid"})
    await relay.grant(BOB)
    # No tracker in the HTML: only the pixel SendGrid would add downstream.
    html = "<html><body><p>Your order has shipped.</p></body></html>"
    code, _ = await asend(relay.port, message(html, category="newsletter"), [ALICE, BOB])
    assert code == 250
    alice = sink.handler.copies_for(ALICE)[0].data
    bob = sink.handler.copies_for(BOB)[0].data
    # Without consent both of SendGrid's controls are off (SPEC 2: opens and clicks).
    assert b'"opentrack": {"settings": {"enable": 0}}' in alice
    assert b'"clicktrack": {"settings": {"enable": 0}}' in alice
    # With consent SendGrid tracks, and the email carries the withdrawal link like any other.
    assert b"X-SMTPAPI" not in bob
    assert relay.settings.web.public_url.encode() + b"/w/" in bob
    records = by_rcpt(await relay.audit("<m1@shop.example>"))
    assert [(t.rule, t.vendor, t.purpose, t.action, t.basis) for t in records[BOB].trackers] == [
        ("esp-open-tracking", "SendGrid", "campaign_performance", "keep", "consent")
    ]
    assert records[BOB].footer_injected and records[BOB].consent_event_ids
    assert [(t.action, t.basis) for t in records[ALICE].trackers] == [("remove", "none")]
    assert not records[ALICE].footer_injected


async def test_esp_tracking_off_lets_the_relays_gateway_carry_the_tracking(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory(upstream={"profile": "sendgrid", "esp_tracking": "off"})
    await relay.grant(BOB)
    html = f'<html><body><p>Hi</p><img src="{SENDGRID}" width="1" height="1"></body></html>'
    assert (await asend(relay.port, message(html, category="newsletter"), [BOB]))[0] == 250
    bob = sink.handler.copies_for(BOB)[0].data
    assert b'"opentrack": {"settings": {"enable": 0}}' in bob  # SendGrid adds nothing
    assert b"/g/" in bob and b"sendgrid.net" not in bob  # the app's pixel, through the gateway
    (record,) = await relay.audit("<m1@shop.example>")
    assert [(t.rule, t.action, t.policy_rule) for t in record.trackers] == [
        ("sendgrid-open", "gateway", "cnil-consent"),
        ("esp-open-tracking", "remove", "esp-tracking-off"),
    ]


# ---------------------------------------------------------------------------------------------
# Item 5: a consent request carries no other tracking.


CONSENT_HTML = (
    "<html><body><p>May we measure whether you open our emails?</p>"
    '<p><a href="{{relay:consent_url}}">Choose</a></p>{extra}</body></html>'
)


async def test_a_consent_request_with_click_tracking_links_is_refused_naming_their_rules(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    click = "https://u6698898.ct.sendgrid.net/ls/click?upn=38Ony1dHqceytDbKPTF_n_pGz3cW0uABBrDSx"
    html = CONSENT_HTML.replace("{extra}", f'<a href="{click}">Our shop</a>')
    code, reply = await asend(relay.port, message(html, category="consent_request"), [ALICE])
    assert code == 554 and "5.7.1" in reply and "rules: sendgrid-click" in reply, reply
    assert "[R-141]" in reply and sink.handler.received == []


async def test_a_click_link_behind_a_base_href_is_seen_as_the_client_follows_it(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    """``<base href>`` makes a relative link the vendor's click link (the shape of real mails
    with a base, maildev/maildev#97): a consent request must not carry it unseen."""
    relay = await relay_factory()
    base = '<base href="https://u6698898.ct.sendgrid.net/">'
    link = '<a href="ls/click?upn=38Ony1dHqceytDbKPTF_n_pGz3cW0uABBrDSx">Our shop</a>'
    html = CONSENT_HTML.replace("<html><body>", f"<html><head>{base}</head><body>").replace(
        "{extra}", link
    )
    code, reply = await asend(relay.port, message(html, category="consent_request"), [ALICE])
    assert code == 554 and "rules: sendgrid-click" in reply and "[R-141]" in reply, reply
    assert sink.handler.received == []


async def test_a_consent_request_switches_off_the_esps_click_tracking_and_records_its_link(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory(upstream={"profile": "mailgun"})
    html = CONSENT_HTML.replace("{extra}", '<a href="https://shop.example/">Our shop</a>')
    raw = message(html, category="consent_request")
    assert (await asend(relay.port, raw, [ALICE]))[0] == 250
    data = sink.handler.copies_for(ALICE)[0].data
    assert b"X-Mailgun-Track-Opens: no\r\n" in data and b"X-Mailgun-Track-Clicks: no\r\n" in data
    assert relay.settings.web.public_url.encode() + b"/c/" in data  # the consent link is there
    (record,) = await relay.audit("<m1@shop.example>")
    assert [(t.rule, t.purpose, t.action, t.basis, t.policy_rule) for t in record.trackers] == [
        ("relay-consent-link", "authentication_security", "keep", "exempt", "consent-link"),
        ("esp-open-tracking", "campaign_performance", "remove", "none", "cnil-consent-request"),
    ]


# ---------------------------------------------------------------------------------------------
# Item 6: the re-ask window everywhere.


async def test_a_consent_link_placeholder_inside_the_reask_window_is_left_empty(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    await relay.record(EventType.REFUSED, ALICE, at=datetime.now(UTC) - timedelta(days=30))
    html = CONSENT_HTML.replace("{extra}", "<p>This week's news.</p>")
    code, _ = await asend(relay.port, message(html, category="newsletter"), [ALICE, BOB])
    assert code == 250  # the newsletter still goes out
    alice = sink.handler.copies_for(ALICE)[0].data
    bob = sink.handler.copies_for(BOB)[0].data
    assert b'<a href="">Choose</a>' in alice and b"/c/" not in alice and b"{{relay:" not in alice
    assert relay.settings.web.public_url.encode() + b"/c/" in bob  # never asked: filled
    records = by_rcpt(await relay.audit("<m1@shop.example>"))
    assert [(t.action, t.basis, t.policy_rule) for t in records[ALICE].trackers] == [
        ("remove", "none", "reask-window")
    ]
    assert [(t.action, t.policy_rule) for t in records[BOB].trackers] == [("keep", "consent-link")]
