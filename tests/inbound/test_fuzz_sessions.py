"""Generated hostile SMTP sessions against the running relay, judged at a raw-bytes upstream.

Hypothesis writes whole sessions byte for byte: senders and recipients with control
characters, invalid UTF-8, comments and quotes; duplicate and case-folded recipients; messages
with lone CRs, lone LFs and NULs anywhere, and MIME nested deep or wide with an open pixel in
any leaf. After every session:

- no reply is aiosmtpd's "500 Error" or the relay's internal error (a crash);
- no mailbox got two copies of the message;
- the open pixel never reaches the upstream in clear (the recipients hold no consent for it,
  or hold it through the relay's gateway only);
- the bytes the upstream received are exactly the bytes the filter produced (the data handed
  to the upstream connection, recorded as it leaves the pipeline).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.model import Purpose
from relay.smtp.address import fold
from tests.detect.test_htmlscan_reference import expected
from tests.support.harness import PIXEL
from tests.support.raw_sink import RawSink
from tests.support.raw_smtp import transaction
from tests.support.relay import RelayFactory

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SESSIONS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

GOOD = [b"alice@example.org", b"alice@EXAMPLE.org", b"Alice@example.ORG", b"carol@example.org"]
HOSTILE = [
    b'"a\rRCPT TO:<injected@evil.example>"@shop.example',
    b"(x)injected@evil.example",
    b"a\0b@example.org",
    b"a\x0bb@example.org",
    b"a\xffb@example.org",
    b"a..b@example.org",
    b'"quoted \\" ok"@example.org',
    b"bob@[192.0.2.7]",
]
rcpt = st.sampled_from(GOOD + HOSTILE)
sender = st.sampled_from([b"app@shop.example", b"", *HOSTILE[:5]])

HEADERS = (
    b"From: Shop <news@shop.example>\r\nTo: list@example.org\r\nSubject: fuzz\r\n"
    b"MIME-Version: 1.0\r\n"
)
LEAF_HTML = (
    b'Content-Type: text/html\r\n\r\n<p>hi</p><img src="'
    + PIXEL.encode()
    + b'" width=1 height=1>\r\n'
)
LEAF_TEXT = b"Content-Type: text/plain\r\n\r\nplain text\r\n"


@st.composite
def mime(draw: Any, depth: int = 0, limit: int = -1) -> bytes:
    """A part: a leaf, or a multipart of 1-6 parts, nested up to 24 deep (past the parser's 20)."""
    if limit < 0:
        limit = draw(st.sampled_from([0, 1, 2, 3, 22, 24]))
    if depth >= limit or (0 < depth < 3 and draw(st.integers(0, 3)) == 0):
        leaf: bytes = draw(st.sampled_from([LEAF_HTML, LEAF_TEXT]))
        return leaf
    boundary = f"b{depth}x".encode()
    parts = draw(st.lists(mime(depth + 1, limit), min_size=1, max_size=6 if depth < 3 else 1))
    body = b"".join(b"--" + boundary + b"\r\n" + p for p in parts) + b"--" + boundary + b"--\r\n"
    return b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n' + body


@st.composite
def message(draw: Any) -> bytes:
    data = bytearray(HEADERS + draw(mime()))
    for _ in range(draw(st.integers(0, 4))):  # lone CR/LF, NUL, VT anywhere
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.sampled_from([b"\r", b"\n", b"\0", b"\x0b", b"\r\r", b"\n\n"]))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    # Lines starting with a dot would need stuffing; the generator never writes a dot first.
    return bytes(data).replace(b"\r\n.", b"\r\n,").replace(b"\n.", b"\n,").replace(b"\r.", b"\r,")


def _html_seen_by_a_client(data: bytes) -> bytes:
    """The decoded HTML a mail client would render, as an independent parser (Python's
    ``email`` package) reads the message: a pixel written in a text/plain body is inert."""
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    found = b""
    for part in parsed.walk():
        if part.get_content_type() in ("text/html", "text/x-amp-html"):
            payload = part.get_payload(decode=True)
            found += payload if isinstance(payload, bytes) else b""
    return found


def _fetched(html: bytes) -> list[str]:
    """The URLs a client fetches from that HTML, as the standard tokenizer reads it (the
    reference of tests/detect) and as the URL standard reads each value (leading and trailing
    C0 controls and spaces removed, tabs and newlines dropped): a pixel URL left in text
    (``<`` then a line break begins no tag), in an attribute of an element that fetches
    nothing (``<i`` CRLF ``mg src=...>``) or after a stray quote (``src=<VT>"https://...``, a
    relative URL on the mail client's own host) is inert, and the relay rightly leaves it."""
    text = html.decode("utf-8", "surrogateescape")
    urls = []
    for _kind, start, end in expected(text):
        value = text[start:end].strip("".join(map(chr, range(33))))
        urls.append(value.replace("\t", "").replace("\n", "").replace("\r", ""))
    return urls


def _judge(
    replies: Sequence[bytes], sent: list[bytes], sink: RawSink, rcpts: Sequence[bytes]
) -> None:
    for reply in replies:
        assert not reply.startswith(b"500 Error"), replies
        assert b"R-202" not in reply, replies  # the relay's "internal error"
    copies: dict[str, int] = {}
    for t in sink.transactions:
        for address in t.rcpt_addresses():
            key = fold(address.decode("utf-8", "surrogateescape"))
            copies[key] = copies.get(key, 0) + 1
        fetched = _fetched(_html_seen_by_a_client(t.data))
        assert not [u for u in fetched if u.startswith(PIXEL)], "a pixel reached the upstream"
    assert all(n == 1 for n in copies.values()), copies
    assert sorted(t.data for t in sink.transactions) == sorted(sent)


async def test_generated_hostile_sessions(
    raw_relay_factory: RelayFactory, raw_sink: RawSink
) -> None:
    relay = await raw_relay_factory()
    await relay.grant("carol@example.org", Purpose.CAMPAIGN_PERFORMANCE)
    upstream = relay.running.pipeline.upstream
    sent: list[bytes] = []
    forward = upstream.send

    async def recording(*args: Any, **kwargs: Any) -> Any:
        sent.append(args[2])  # the filtered bytes, as the pipeline hands them to the upstream
        return await forward(*args, **kwargs)

    upstream.send = recording  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    counter = iter(range(10**6))

    @SESSIONS
    @given(sender, st.lists(rcpt, min_size=1, max_size=5), message())
    def session(mail: bytes, rcpts: list[bytes], data: bytes) -> None:
        sent.clear()
        asyncio.run_coroutine_threadsafe(_clear(raw_sink), loop).result()
        unique = f"Message-ID: <fuzz{next(counter)}@shop.example>\r\n".encode()
        replies = transaction(
            relay.port,
            unique + data,
            mail=b"<" + mail + b">",
            rcpts=[b"<" + r + b">" for r in rcpts],
        )
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result()
        _judge(replies, list(sent), raw_sink, rcpts)

    await asyncio.to_thread(session)


async def _clear(sink: RawSink) -> None:
    sink.transactions.clear()
