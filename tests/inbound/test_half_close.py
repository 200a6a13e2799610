"""A client that half-closes its connection (issue 14.1, 14.2), with raw sockets.

Exim pipelines ``<CRLF>.<CRLF>QUIT<CRLF>`` after the message and sends a TCP FIN at once, on
every first delivery attempt; RFC 5321 4.1.1.10 lets the server answer what it received before
it closes. An ordinary disconnect after the last command is not an error in the log.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.support.raw_smtp import RawClient
from tests.support.relay import RelayFactory
from tests.support.smtp_sink import Sink

pytestmark = pytest.mark.timeout(60)

MESSAGE = b"From: a@shop.example\r\nTo: b@example.org\r\nSubject: half\r\n\r\nbody\r\n"


def _pipelined_then_fin(port: int, *, quit: bool, message: bytes = MESSAGE) -> bytes:
    client = RawClient(port)
    try:
        client.cmd(b"EHLO exim.test")
        client.send(b"MAIL FROM:<a@shop.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        for _ in range(3):
            client.reply()
        client.send(message + b".\r\n" + (b"QUIT\r\n" if quit else b""))
        client.half_close()
        return client.rest()
    finally:
        client.close()


async def test_end_of_data_and_quit_then_fin_is_delivered_and_answered(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    answer = await asyncio.to_thread(_pipelined_then_fin, relay.port, quit=True)
    assert answer.startswith(b"250 2.0.0"), answer
    assert answer.endswith(b"221 Bye\r\n")
    assert len(sink.handler.received) == 1


async def test_fin_right_after_the_end_of_data_still_gets_the_reply(
    relay_factory: RelayFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await relay_factory()
    with caplog.at_level(logging.INFO):
        answer = await asyncio.to_thread(_pipelined_then_fin, relay.port, quit=False)
    assert answer.startswith(b"250 2.0.0"), answer
    assert len(sink.handler.received) == 1
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def _deliver_then_quit_and_fin(port: int) -> bytes:
    client = RawClient(port)
    try:
        client.cmd(b"EHLO t")
        client.cmd(b"MAIL FROM:<a@shop.example>")
        client.cmd(b"RCPT TO:<b@example.org>")
        client.cmd(b"DATA")
        client.send(MESSAGE + b".\r\n")
        client.reply()
        client.send(b"QUIT\r\n")
        client.half_close()
        return client.rest()
    finally:
        client.close()


async def test_quit_then_fin_after_deliveries_logs_no_error(
    relay_factory: RelayFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await relay_factory()
    with caplog.at_level(logging.INFO):
        for _ in range(10):
            answer = await asyncio.to_thread(_deliver_then_quit_and_fin, relay.port)
            assert answer == b"221 Bye\r\n"
        await asyncio.sleep(0.2)
    assert len(sink.handler.received) == 10
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_fin_in_the_middle_of_the_data_sends_nothing_and_logs_no_error(
    relay_factory: RelayFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await relay_factory()

    def cut() -> bytes:
        client = RawClient(relay.port)
        try:
            client.cmd(b"EHLO t")
            client.cmd(b"MAIL FROM:<a@shop.example>")
            client.cmd(b"RCPT TO:<b@example.org>")
            client.cmd(b"DATA")
            client.send(MESSAGE[:30])
            client.half_close()
            return client.rest()
        finally:
            client.close()

    with caplog.at_level(logging.INFO):
        assert await asyncio.to_thread(cut) == b""
        await asyncio.sleep(0.2)
    assert sink.handler.received == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
