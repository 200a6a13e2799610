"""Through the real relay with ``malformed = "strip"``: what the parser did not read never goes
out as is (issue 13, item 4). Real SMTP client, real relay, real aiosmtpd upstream, real Redis.

The parser stops at 500 parts and at depth 20 (it must stay linear); a pixel in the 601st part
or at depth 25 was forwarded raw. Now such a message is refused with a 554 that says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.harness import asend, make_settings, start_relay
from tests.support.smtp_sink import Sink

pytestmark = pytest.mark.timeout(60)
PIXEL = b'<img src="https://u1.ct.sendgrid.net/wf/open?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq">'
HEAD = b"From: news@shop.example\r\nTo: alice@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"


def _wide(parts: int) -> bytes:
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(parts - 1))
    body += b"--b\r\nContent-Type: text/html\r\n\r\n" + PIXEL + b"\r\n--b--\r\n"
    return HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body


def _deep(depth: int) -> bytes:
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    tail = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth)))
    return HEAD + head + b"Content-Type: text/html\r\n\r\n" + PIXEL + tail + b"\r\n"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_wide(601), b"more than 500 MIME parts"),
        (_deep(25), b"nesting deeper than 20"),
    ],
    ids=["601st part", "depth 25"],
)
async def test_strip_mode_refuses_what_it_did_not_read(
    tmp_path: Path, redis_url: str, sink: Sink, data: bytes, reason: bytes
) -> None:
    settings = make_settings(tmp_path, redis_url, sink.url, smtp={"malformed": "strip"})
    running = await start_relay(settings, redis_url)
    try:
        code, text = await asend(running.smtp_port, data, ["alice@example.org"])
        assert code == 554
        assert reason.decode() in text and "5.6.0" in text
        assert sink.handler.received == []
    finally:
        await running.stop()


async def test_strip_mode_still_forwards_what_it_read_with_trackers_removed(
    tmp_path: Path, redis_url: str, sink: Sink
) -> None:
    settings = make_settings(tmp_path, redis_url, sink.url, smtp={"malformed": "strip"})
    running = await start_relay(settings, redis_url)
    try:
        data = _wide(5).replace(b"--b--\r\n", b"")  # no closing delimiter: a defect, all read
        code, _ = await asend(running.smtp_port, data, ["alice@example.org"])
        assert code == 250
        (copy,) = sink.handler.received
        assert b"sendgrid" not in copy.data
    finally:
        await running.stop()
