"""Real clients and MTAs in front of the relay: each hands one message to a whole relay (real
Redis, real SMTP) whose upstream is an aiosmtpd sink; the tests judge what reached the sink.

``Front`` records what the relay decided on (the bytes and envelope handed to the pipeline,
after its line-ending decision) so that a test can say the upstream copy is that message with
exactly the tracker edit and nothing else.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relay.model import Envelope
from relay.service import Running
from tests.support.harness import PIXEL, make_settings, start_relay
from tests.support.smtp_sink import Sink

NEUTRAL = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="
LOGO = "https://cdn.shop.example/logo.png"
HTML = (
    f'<p>Hello from {{client}}</p><img src="{LOGO}" width="120" height="40" alt="logo">'
    f'<img src="{PIXEL}" width="1" height="1" alt="">'
)
TEXT = "Hello in text from {client}."


@dataclass
class Front:
    running: Running
    sink: Sink
    seen: list[tuple[bytes, Envelope]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.running.smtp_port


@pytest.fixture
async def front(tmp_path: Path, redis_url: str) -> AsyncIterator[Front]:
    sink = await Sink().start()
    settings = make_settings(tmp_path, redis_url, sink.url)
    running = await start_relay(settings, redis_url)
    recorded = Front(running, sink)
    handler = running.smtp.handler
    process = handler.process

    async def recording(raw: bytes, envelope: Envelope, relay_id: str) -> Any:
        recorded.seen.append((raw, envelope))
        return await process(raw, envelope, relay_id)

    handler.process = recording
    yield recorded
    await running.stop()
    await sink.stop()


def _parts(data: bytes) -> list[tuple[str, bytes]]:
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    out = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        out.append((part.get_content_type(), payload if isinstance(payload, bytes) else b""))
    return out


def assert_delivered_once_faithfully(front: Front, rcpt: str) -> bytes:
    """One copy, on the first attempt; the header block as the client wrote it, every part
    decoded the same but for the open pixel, neutralised; returns the delivered bytes."""
    copies = front.sink.handler.copies_for(rcpt)
    assert len(copies) == 1, f"{len(copies)} copies"
    assert len(front.seen) == 1, "the client needed more than one attempt"
    raw, _envelope = front.seen[0]
    delivered = copies[0].data
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert delivered.split(b"\r\n\r\n", 1)[0] == head
    sent_parts, got_parts = _parts(raw), _parts(delivered)
    assert [t for t, _ in got_parts] == [t for t, _ in sent_parts]
    for (kind, before), (_kind, after) in zip(sent_parts, got_parts, strict=True):
        if kind == "text/html":
            assert PIXEL.encode() in before
            assert after == before.replace(PIXEL.encode(), NEUTRAL.encode())
            assert LOGO.encode() in after
        else:
            assert after == before
    return delivered
