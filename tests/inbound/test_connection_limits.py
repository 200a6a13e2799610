"""Connection caps of the SMTP listener (issue 13.6): a flood from one address or of idle
connections cannot stop the relay serving others, nor its web side."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request

import pytest

from tests.support.raw_smtp import RawClient, transaction
from tests.support.relay import RelayFactory
from tests.support.smtp_sink import Sink

pytestmark = pytest.mark.timeout(60)
MESSAGE = b"From: a@shop.example\r\nSubject: cap\r\n\r\nbody\r\n"


def _hold(port: int, count: int, source: str = "127.0.0.1") -> list[RawClient]:
    return [RawClient(port, source=source) for _ in range(count)]


async def test_one_address_over_its_cap_gets_421_and_others_are_served(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory(smtp={"max_connections_per_client": 3})
    held = await asyncio.to_thread(_hold, relay.port, 3)
    try:
        assert all(c.greeting.startswith(b"220") for c in held)
        extra = await asyncio.to_thread(RawClient, relay.port)
        assert extra.greeting.startswith(b"421 4.7.0"), extra.greeting
        assert await asyncio.to_thread(extra.rest) == b""  # closed at once
        extra.close()
        # Another client address is not affected.
        other = await asyncio.to_thread(_hold, relay.port, 1, "127.0.0.2")
        assert other[0].greeting.startswith(b"220")
        other[0].close()
        # One of the held connections goes: the first address may connect again.
        held.pop().close()
        await asyncio.sleep(0.2)
        replies = await asyncio.to_thread(transaction, relay.port, MESSAGE)
        assert replies[-2].startswith(b"250"), replies
    finally:
        for client in held:
            client.close()
    assert len(sink.handler.received) == 1


async def test_the_listener_cap_bounds_every_client_and_the_web_side_keeps_serving(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory(smtp={"max_connections": 20, "max_connections_per_client": 0})
    held = await asyncio.to_thread(_hold, relay.port, 20)
    refused = []
    try:
        for n in range(30):  # a flood past the cap, from many addresses
            client = await asyncio.to_thread(RawClient, relay.port, "127.0.0.1", f"127.0.1.{n}")
            refused.append(client.greeting)
            client.close()
        assert all(g.startswith(b"421 4.7.0") for g in refused), refused[:3]
        url = relay.settings.web.public_url + "/healthz"
        status = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).status)
        assert status == 200
    finally:
        for client in held:
            with contextlib.suppress(OSError):
                client.close()
    await asyncio.sleep(0.2)
    replies = await asyncio.to_thread(transaction, relay.port, MESSAGE)
    assert replies[-2].startswith(b"250"), replies
