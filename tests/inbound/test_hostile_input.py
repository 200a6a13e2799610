"""Hostile and broken input through the whole relay (issue 13), with raw sockets.

Each test sends what a library would repair (lone CR, control characters, NULs) byte for byte,
and judges what the upstream received.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.harness import PIXEL
from tests.support.raw_sink import RawSink
from tests.support.raw_smtp import transaction
from tests.support.relay import RelayFactory
from tests.support.smtp_sink import Sink

pytestmark = pytest.mark.timeout(60)


def _headers(extra: bytes = b"") -> bytes:
    return (
        b"From: Shop <news@shop.example>\r\nTo: alice@example.org\r\nSubject: hi\r\n" + extra
        + b"Message-ID: <cr@shop.example>\r\nMIME-Version: 1.0\r\n"
    )  # fmt: skip


# A text/plain part whose lone CRs make, for any program that reads CR as a line break (as
# aiosmtplib does on the way out), a real text/html part carrying an open pixel.
BARE_CR_PART = (
    _headers()
    + b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
    + b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    + b"--b1\rContent-Type: text/html\r\r"
    + b'<p>hi</p><img src="' + PIXEL.encode() + b'" width=1 height=1>\r\n'
    + b"--b1--\r\n"
)  # fmt: skip


async def test_a_part_hidden_behind_lone_crs_is_filtered_like_the_upstream_reads_it(
    raw_relay_factory: RelayFactory, raw_sink: RawSink
) -> None:
    relay = await raw_relay_factory()
    replies = await asyncio.to_thread(transaction, relay.port, BARE_CR_PART)
    assert replies[-2].startswith(b"250"), replies
    [sent] = raw_sink.transactions
    assert PIXEL.encode() not in sent.wire  # no consent: the pixel was read, and neutralised
    assert b"\r" not in sent.wire.replace(b"\r\n", b"")
    assert b"--b1\r\nContent-Type: text/html\r\n\r\n" in sent.wire


async def test_a_header_hidden_behind_a_lone_cr_is_a_header_for_the_filter_too(
    raw_relay_factory: RelayFactory, raw_sink: RawSink
) -> None:
    """``Subject: x<CR>X-Relay-Category: ...`` is two header lines for every reader."""
    relay = await raw_relay_factory()
    data = _headers(b"X-Note: x\rX-Relay-Category: transactional\r\n") + b"\r\nbody\r\n"
    replies = await asyncio.to_thread(transaction, relay.port, data)
    assert replies[-2].startswith(b"250"), replies
    [sent] = raw_sink.transactions
    # The relay's own request header was seen (and so removed), as the upstream would read it.
    assert b"X-Relay-Category" not in sent.wire
    assert b"X-Note: x\r\n" in sent.wire


async def test_a_nul_in_the_data_is_refused_and_nothing_is_sent(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    """An upstream that drops NULs would read ``<CRLF><NUL>.<CRLF>`` as the end of data."""
    relay = await relay_factory()
    data = _headers() + b"\r\nbody\r\n\0.\r\nRSET\r\nMAIL FROM:<x@evil.example>\r\n"
    replies = await asyncio.to_thread(transaction, relay.port, data)
    assert replies[-2].startswith(b"554 5.6.0") and b"NUL" in replies[-2], replies
    assert sink.handler.received == []


SIMPLE = _headers() + b"\r\nbody\r\n"


@pytest.mark.parametrize(
    ("mail", "rcpt", "expected"),
    [
        (b'<"a\rRCPT TO:<injected@evil.example>"@shop.example>', b"<b@example.org>", b"553 5.1.7"),
        (b"<app@shop.example>", b"<(x)injected@evil.example>", b"553 5.1.3"),
        (b"<app@shop.example>", b"<a\0b@example.org>", b"553 5.1.3"),
        (b"<app@shop.example>", b"<a\x0bb@example.org>", b"553 5.1.3"),
        (b"<app\xff@shop.example>", b"<b@example.org>", b"553 5.1.7"),
        (b"<app@shop.example>", b"<j\xc3\xb6e@example.org>", b"553 5.6.7"),  # no SMTPUTF8
        (b"<app@shop.example> XFOO=1", b"<b@example.org>", b"555 5.5.4"),
        (b"<app@shop.example>", b"<b@example.org> NOTIFY=SOMETIMES", b"501 5.5.4"),
    ],
)  # fmt: skip
async def test_addresses_outside_the_grammar_are_refused_and_nothing_is_sent(
    raw_relay_factory: RelayFactory, raw_sink: RawSink, mail: bytes, rcpt: bytes, expected: bytes
) -> None:
    relay = await raw_relay_factory()
    replies = await asyncio.to_thread(transaction, relay.port, SIMPLE, mail=mail, rcpts=[rcpt])
    assert any(r.startswith(expected) for r in replies), replies
    assert raw_sink.transactions == []


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        (b'<"john doe"@example.org>', b'"john doe"@example.org'),
        (b"<@hop.example:bob@example.org>", b"bob@example.org"),
        (b"<bob@[192.0.2.7]>", b"bob@[192.0.2.7]"),
        (b'<"(x)a"@example.org>', b'"(x)a"@example.org'),
        (b'<"<a>,b"@example.org>', b'"<a>,b"@example.org'),
        (b"<Bob.Smith+news@Example.org>", b"Bob.Smith+news@Example.org"),
    ],
)
async def test_the_address_decided_is_the_address_sent(
    raw_relay_factory: RelayFactory, raw_sink: RawSink, written: bytes, sent: bytes
) -> None:
    relay = await raw_relay_factory()
    replies = await asyncio.to_thread(transaction, relay.port, SIMPLE, rcpts=[written])
    assert replies[-2].startswith(b"250"), replies
    [copy] = raw_sink.transactions
    assert copy.rcpt_addresses() == [sent]


async def test_duplicate_recipients_get_one_copy(
    raw_relay_factory: RelayFactory, raw_sink: RawSink
) -> None:
    """1,000 RCPTs naming two mailboxes (the domain in any case): two copies, not 1,000."""
    relay = await raw_relay_factory()
    rcpts = [b"<alice@example.org>", b"<alice@EXAMPLE.org>", b"<bob@Example.Org>"] * 333
    data = _headers() + b"\r\n<p>{{relay:withdraw_url}}</p>\r\n"  # one rendering per recipient
    replies = await asyncio.to_thread(
        transaction, relay.port, data, rcpts=[*rcpts, b"<x@y.example>"]
    )
    assert replies[-2].startswith(b"250"), replies[-3:]
    assert sum(r.startswith(b"250 2.1.5 Recipient OK (already") for r in replies) == 997
    delivered = [a for t in raw_sink.transactions for a in t.rcpt_addresses()]
    assert sorted(delivered) == [b"alice@example.org", b"bob@Example.Org", b"x@y.example"]


async def test_dsn_parameters_are_accepted_and_kept_as_written(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    server = relay.running.smtp
    seen: list[object] = []
    process = server.handler.process

    async def spy(raw: bytes, envelope: object, relay_id: str) -> object:
        seen.append(envelope)
        return await process(raw, envelope, relay_id)  # type: ignore[arg-type]

    server.handler.process = spy  # type: ignore[assignment]
    replies = await asyncio.to_thread(
        transaction, relay.port, SIMPLE,
        mail=b"<app@shop.example> RET=HDRS ENVID=QQ314159+2Bab",
        rcpts=[b"<a@example.org> NOTIFY=NEVER", b"<b@example.org>",
               b"<c@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;C+40example.org"],
    )  # fmt: skip
    assert b"250-DSN" in replies[0]
    assert replies[-2].startswith(b"250"), replies
    [envelope] = seen
    assert envelope.mail_options == ("RET=HDRS", "ENVID=QQ314159+2Bab")  # type: ignore[attr-defined]
    assert envelope.rcpt_options == (  # type: ignore[attr-defined]
        ("NOTIFY=NEVER",),
        (),
        ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;C+40example.org"),
    )
