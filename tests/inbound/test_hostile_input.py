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
