"""The 250 for a partly refused message says what became of the failure notice (issue 13).

Through the real relay on loopback: smtplib client, aiosmtpd upstream, real Redis. The reply
and the relay's log say "notice sent" only when the upstream accepted the notice; otherwise why
there is none (RFC 3461 4.1 NOTIFY, the null reverse-path, a notice the upstream refused).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib

import pytest

from tests.support.harness import message
from tests.support.relay import RelayFactory
from tests.support.smtp_sink import Sink

pytestmark = pytest.mark.timeout(60)

SENDER = "app@shop.example"
ALICE, BOB, CAROL = "alice@example.org", "bob@example.org", "carol@example.org"


def _send(port: int, sender: str, rcpts: dict[str, list[str]]) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("app.test")
        code, text = client.mail(sender)
        assert code == 250, text
        for rcpt, options in rcpts.items():
            code, text = client.rcpt(rcpt, options)
            assert code == 250, text
        code, text = client.data(message("<p>x</p>"))
        return f"{code} {text.decode()}"


def _notices(sink: Sink) -> list[list[str]]:
    """Messages from the null sender other than the relayed copies."""
    return [
        r.rcpt_tos for r in sink.handler.received if r.mail_from == "" and ALICE not in r.rcpt_tos
    ]


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused for good" in r.getMessage()]


async def _refuse_bob_send(
    relay_factory: RelayFactory,
    sink: Sink,
    sender: str,
    rcpts: dict[str, list[str]],
    caplog: pytest.LogCaptureFixture,
) -> str:
    relay = await relay_factory()
    sink.handler.faults.rcpt_replies[BOB] = "550 5.1.1 no such user"
    sink.handler.faults.rcpt_replies[CAROL] = "550 5.1.1 no such user"
    caplog.set_level(logging.INFO, logger="relay")
    return await asyncio.to_thread(_send, relay.port, sender, rcpts)


async def test_a_notice_the_upstream_accepted_is_said_sent(
    relay_factory: RelayFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    reply = await _refuse_bob_send(relay_factory, sink, SENDER, {ALICE: [], BOB: []}, caplog)
    assert reply.startswith("250 ") and "1 recipient(s) refused, notice sent [R-001]" in reply
    assert _notices(sink) == [[SENDER]]
    assert [m.split("] ", 1)[1] for m in _said(caplog)] == [
        "1 recipient(s) refused for good: notice sent"
    ]


async def test_notify_never_is_said_and_nothing_is_sent(
    relay_factory: RelayFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    rcpts = {ALICE: [], BOB: ["NOTIFY=NEVER"]}
    reply = await _refuse_bob_send(relay_factory, sink, SENDER, rcpts, caplog)
    assert "1 recipient(s) refused, no notice: NOTIFY=NEVER [R-001]" in reply
    assert "notice sent" not in reply
    assert _notices(sink) == []
    assert [m.split(": ", 1)[1] for m in _said(caplog)] == ["no notice: NOTIFY=NEVER"]


async def test_notify_without_failure_is_said(
    relay_factory: RelayFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    rcpts = {ALICE: [], BOB: ["NOTIFY=SUCCESS,DELAY"]}
    reply = await _refuse_bob_send(relay_factory, sink, SENDER, rcpts, caplog)
    assert "1 recipient(s) refused, no notice: NOTIFY did not ask for failures" in reply
    assert _notices(sink) == []


async def test_the_null_sender_gets_no_notice_and_the_reply_says_so(
    relay_factory: RelayFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    reply = await _refuse_bob_send(relay_factory, sink, "", {ALICE: [], BOB: []}, caplog)
    assert "1 recipient(s) refused, no notice: null sender [R-001]" in reply
    assert _notices(sink) == []
    assert [r.rcpt_tos for r in sink.handler.received] == [[ALICE]]  # her copy only
    assert [m.split(": ", 1)[1] for m in _said(caplog)] == ["no notice: null sender"]


async def test_a_notice_the_upstream_refused_is_not_said_sent(
    relay_factory: RelayFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.handler.faults.rcpt_replies[SENDER] = "550 5.7.1 we take no bounces"
    reply = await _refuse_bob_send(relay_factory, sink, SENDER, {ALICE: [], BOB: []}, caplog)
    assert reply.startswith("250 ")
    assert "1 recipient(s) refused, no notice: the upstream did not accept it" in reply
    assert _notices(sink) == []
    assert any("could not send the failure notice" in r.getMessage() for r in caplog.records)
    assert [m.split(": ", 1)[1] for m in _said(caplog)] == [
        "no notice: the upstream did not accept it"
    ]


async def test_a_notice_for_some_says_for_how_many(
    relay_factory: RelayFactory, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    rcpts = {ALICE: [], BOB: ["NOTIFY=NEVER"], CAROL: ["NOTIFY=FAILURE"]}
    reply = await _refuse_bob_send(relay_factory, sink, SENDER, rcpts, caplog)
    assert "2 recipient(s) refused, notice sent for 1 (the others' NOTIFY asked for none)" in reply
    [notice] = [r for r in sink.handler.received if r.mail_from == ""]
    assert b"Final-Recipient: rfc822; carol@example.org" in notice.data
    assert b"bob@example.org" not in notice.data
