"""DSN requests (RFC 3461) through the relay: accepted, and honoured in the relay's own notices."""

from __future__ import annotations

import asyncio
import smtplib

import pytest

from tests.support.harness import message
from tests.support.relay import RelayFactory
from tests.support.smtp_sink import Sink

pytestmark = pytest.mark.timeout(60)


def _send(port: int, rcpt_options: dict[str, list[str]], mail_options: list[str]) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("app.test")
        assert client.has_extn("dsn")
        client.mail("app@shop.example", mail_options)
        for rcpt, options in rcpt_options.items():
            code, text = client.rcpt(rcpt, options)
            assert code == 250, text
        code, text = client.data(message("<p>x</p>"))
        return f"{code} {text.decode()}"


async def test_notify_never_gets_no_notice_from_the_relay(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory()
    sink.handler.faults.rcpt_replies["bob@example.org"] = "550 5.1.1 no such user"
    reply = await asyncio.to_thread(
        _send, relay.port,
        {"alice@example.org": [], "bob@example.org": ["NOTIFY=NEVER"]}, ["ENVID=Ab+2Bc"],
    )  # fmt: skip
    assert reply.startswith("250") and "1 recipient(s) refused" in reply
    assert [r.rcpt_tos for r in sink.handler.received] == [["alice@example.org"]]


async def test_the_notice_names_orcpt_and_envid(relay_factory: RelayFactory, sink: Sink) -> None:
    relay = await relay_factory()
    sink.handler.faults.rcpt_replies["bob@example.org"] = "550 5.1.1 no such user"
    bob = ["NOTIFY=FAILURE", "ORCPT=rfc822;Bob+40Example.org"]
    reply = await asyncio.to_thread(
        _send, relay.port, {"alice@example.org": [], "bob@example.org": bob}, ["ENVID=Ab+2Bc"]
    )
    assert reply.startswith("250")
    [bounce] = [r for r in sink.handler.received if r.mail_from == ""]
    assert bounce.rcpt_tos == ["app@shop.example"]
    assert b"Original-Envelope-Id: Ab+c" in bounce.data
    assert b"Original-Recipient: rfc822; Bob@Example.org" in bounce.data
    assert b"text/rfc822-headers" in bounce.data  # RET not given: the header block only
