"""The conductor's delivery path with the new client: a running relay (real Redis, real rules)
whose upstream is ``RawSink``, messages handed to ``pipeline.process`` with the envelope the
inbound side builds (so that addresses and parameters the inbound side may refuse later still
reach the outbound defences).

Shown here: bytes upstream == bytes filtered for every group; a recipient the client cannot
write is answered by the relay and its group-mates are delivered once, audited, ledgered (three
attempts gave three copies and no audit record, issue 13.2); the "relayed" notice of RFC 3461
5.2.2; 8-bit mail converted for a 7-bit upstream; UTF-8 addresses refused 553 5.6.7.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.core.filtering import filter_message
from relay.model import Envelope, Purpose
from relay.service import Running
from tests.support.harness import HTML_WITH_PIXEL, PIXEL, make_settings, message, start_relay
from tests.support.raw_sink import DEFAULT_EXTENSIONS, RawSink, RawTransaction
from tests.support.relay import Relay

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def sink() -> AsyncIterator[RawSink]:
    s = await RawSink().start()
    yield s
    await s.stop()


@pytest.fixture
async def relay(tmp_path: Path, redis_url: str, sink: RawSink) -> AsyncIterator[Relay]:
    settings = make_settings(tmp_path, redis_url, sink.url)
    running: Running = await start_relay(settings, redis_url)
    yield Relay(running, settings, redis_url)
    await running.stop()


def copies(sink: RawSink, rcpt: str) -> list[RawTransaction]:
    line = f"RCPT TO:<{rcpt}>".encode()
    return [t for t in sink.transactions if any(r.startswith(line) for r in t.rcpts)]


async def audited(relay: Relay, message_id: str) -> list[str]:
    records = await relay.running.pipeline.audit.by_message(message_id)
    return sorted(r.rcpt for r in records)


async def test_every_group_upstream_is_byte_for_byte_what_was_filtered(
    relay: Relay, sink: RawSink
) -> None:
    await relay.grant("carol@example.org")
    raw = message(HTML_WITH_PIXEL)
    envelope = Envelope("app@shop.example", ("alice@example.org", "carol@example.org"))
    outcome = await relay.running.pipeline.process(raw, envelope, "r1")
    assert outcome.reply.code == 250
    # alice has no consent: her rendering carries no per-recipient link, so the pure core,
    # run again here, gives the very bytes the relay filtered for her.
    alone = Envelope("app@shop.example", ("alice@example.org",))
    now = datetime.now(UTC)
    (group,) = filter_message(relay.running.pipeline.context, raw, alone, {}, now).groups
    (copy,) = copies(sink, "alice@example.org")
    assert copy.data == group.data and PIXEL.encode() not in copy.data
    (carols,) = copies(sink, "carol@example.org")
    assert relay.settings.web.public_url.encode() + b"/g/" in carols.data
    assert copy.batched and carols.batched


async def test_an_unwritable_recipient_leaves_its_group_mates_delivered_once_and_audited(
    relay: Relay, sink: RawSink
) -> None:
    """aiosmtplib raised on the VT: 451, the consented group delivered on every retry (3
    attempts, 3 copies, 0 audit records), a pooled connection leaked each time."""
    await relay.grant("carol@example.org")
    bad = "vt\x0bname@example.org"
    envelope = Envelope("app@shop.example", ("carol@example.org", bad, "alice@example.org"))
    data = message(HTML_WITH_PIXEL, message_id="<vt@shop.example>")
    replies = []
    for attempt in range(3):  # a client that never saw the answer tries again, twice
        outcome = await relay.running.pipeline.process(data, envelope, f"r{attempt}")
        replies.append(outcome.reply.code)
    assert replies == [250, 250, 250]  # delivered to the others; a notice covers the bad one
    assert len(copies(sink, "carol@example.org")) == 1
    assert len(copies(sink, "alice@example.org")) == 1
    assert "553 5.1.3" in outcome.upstream[bad]  # "(delivered earlier)" by now: the ledger
    notices = [t for t in sink.transactions if t.mail.startswith(b"MAIL FROM:<>")]
    assert len(notices) == 1 and b"control character" in notices[0].data
    assert not any(b"\x0b" in line for s in sink.sessions for line in s.lines)
    records = await audited(relay, "<vt@shop.example>")
    assert {"alice@example.org", "carol@example.org"} <= set(records)
    assert sink.open <= relay.settings.upstream.pool_size


async def test_a_relayed_notice_for_success_requests_to_an_upstream_without_dsn(
    relay: Relay, sink: RawSink
) -> None:
    sink.extensions = [e for e in DEFAULT_EXTENSIONS if e != "DSN"]
    envelope = Envelope(
        "app@shop.example",
        ("alice@example.org", "bob@example.org"),
        mail_options=("RET=HDRS", "ENVID=Campaign+2B42"),
        rcpt_options=(("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Alice+2Bnews@Example.org"),
                      ("NOTIFY=NEVER",)),
    )  # fmt: skip
    outcome = await relay.running.pipeline.process(message("<p>hi</p>"), envelope, "r1")
    assert outcome.reply.code == 250
    (delivered,) = [t for t in sink.transactions if not t.mail.startswith(b"MAIL FROM:<>")]
    assert b"NOTIFY" not in b"".join(delivered.rcpts) and b"RET=" not in delivered.mail
    (notice,) = [t for t in sink.transactions if t.mail.startswith(b"MAIL FROM:<>")]
    assert notice.rcpts == [b"RCPT TO:<app@shop.example>"]
    report = email.message_from_bytes(notice.data, policy=email.policy.default)
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_bytes().decode()
    assert "Action: relayed" in text and "Original-Envelope-Id: Campaign+42" in text
    assert "Original-Recipient: rfc822; Alice+news@Example.org" in text
    assert "alice@example.org" in text and "bob@example.org" not in text


async def test_no_relayed_notice_when_the_upstream_announces_dsn(
    relay: Relay, sink: RawSink
) -> None:
    envelope = Envelope(
        "app@shop.example", ("alice@example.org",), rcpt_options=(("NOTIFY=SUCCESS",),)
    )
    outcome = await relay.running.pipeline.process(message("<p>hi</p>"), envelope, "r1")
    assert outcome.reply.code == 250
    (delivered,) = sink.transactions
    assert delivered.rcpts == [b"RCPT TO:<alice@example.org> NOTIFY=SUCCESS"]


async def test_8bit_mail_for_a_7bit_upstream_is_converted(relay: Relay, sink: RawSink) -> None:
    sink.extensions = [e for e in DEFAULT_EXTENSIONS if e not in ("8BITMIME", "SMTPUTF8")]
    data = message("<p>Crème brûlée</p>" + HTML_WITH_PIXEL)
    envelope = Envelope(
        "app@shop.example", ("alice@example.org", "jörg@example.org"),
        mail_options=("BODY=8BITMIME", "SMTPUTF8"),
    )  # fmt: skip
    outcome = await relay.running.pipeline.process(data, envelope, "r1")
    assert outcome.reply.code == 250  # alice delivered; jörg refused, reported in a notice
    assert outcome.upstream["jörg@example.org"].startswith("553 5.6.7")
    (copy,) = copies(sink, "alice@example.org")
    assert copy.data.isascii() and b"BODY=" not in copy.mail and b"SMTPUTF8" not in copy.mail
    parsed = email.message_from_bytes(copy.data, policy=email.policy.default)
    html = next(p for p in parsed.walk() if p.get_content_type() == "text/html")
    assert "Crème brûlée" in html.get_content() and PIXEL not in html.get_content()
    # The failure notice for jörg (its text holds the UTF-8 address) is converted as well.
    (notice,) = [t for t in sink.transactions if t.mail.startswith(b"MAIL FROM:<>")]
    assert notice.data.isascii() and b"j=C3=B6rg@example.org" in notice.data


async def test_consent_decided_for_an_address_is_the_address_sent(
    relay: Relay, sink: RawSink
) -> None:
    """Consent is looked up for ``(x)carol@example.org`` as written: that is what must go."""
    odd = "(x)carol@example.org"
    await relay.grant(odd, Purpose.CAMPAIGN_PERFORMANCE)
    envelope = Envelope("app@shop.example", (odd,))
    outcome = await relay.running.pipeline.process(message(HTML_WITH_PIXEL), envelope, "r1")
    assert outcome.reply.code == 250
    (copy,) = sink.transactions
    assert copy.rcpts == [f"RCPT TO:<{odd}>".encode()]
    assert relay.settings.web.public_url.encode() + b"/g/" in copy.data  # the consented rendering
