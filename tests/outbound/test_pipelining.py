"""The upstream client on the wire: exact bytes, pipelined batches, every reply counted.

Against ``RawSink``, which records what the client wrote without interpreting it: the message
the upstream receives must be byte for byte the message the relay filtered (issue 13.1), the
addresses exactly those decided and audited (13.2), and the commands grouped as RFC 2920 allows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relay.outbound.forward import SmtpUpstream
from relay.settings import UpstreamSettings
from tests.support.raw_sink import DEFAULT_EXTENSIONS, RawSink

pytestmark = pytest.mark.timeout(30)

DATA = (
    b"From: news@shop.example\r\nTo: a@example.org\r\nSubject: dots\r\n\r\n"
    b".leading dot\r\n..two dots\r\n.\r\nend\r\n"
)


@pytest.fixture
async def sink() -> AsyncIterator[RawSink]:
    s = await RawSink().start()
    yield s
    await s.stop()


def upstream(sink: RawSink, **kw: object) -> SmtpUpstream:
    settings = UpstreamSettings(url=sink.url, tls="none", timeout=3.0, **kw)  # type: ignore[arg-type]
    return SmtpUpstream(settings, "relay.test")


async def test_the_message_arrives_byte_for_byte_and_only_dot_stuffed(sink: RawSink) -> None:
    up = upstream(sink)
    outcome = await up.send("news@shop.example", ["a@example.org"], DATA, [])
    await up.close()
    assert outcome.accepted() == ["a@example.org"]
    (txn,) = sink.transactions
    assert txn.data == DATA
    assert txn.wire == DATA.replace(b"\r\n.", b"\r\n..")


async def test_addresses_go_upstream_exactly_as_decided(sink: RawSink) -> None:
    """aiosmtplib sent ``RCPT TO:<(x)injected@evil.example>`` as ``<injected@evil.example>``."""
    up = upstream(sink)
    rcpts = ["(x)injected@evil.example", '"john..doe"@example.org', "Mixed.Case@Example.ORG"]
    outcome = await up.send('"odd sender"@shop.example', rcpts, DATA, [])
    await up.close()
    assert outcome.accepted() == rcpts
    (txn,) = sink.transactions
    assert txn.mail == b'MAIL FROM:<"odd sender"@shop.example> SIZE=' + str(len(DATA)).encode()
    assert txn.rcpts == [f"RCPT TO:<{r}>".encode() for r in rcpts]


async def test_mail_rcpts_and_data_go_in_one_write_and_the_body_in_another(
    sink: RawSink,
) -> None:
    up = upstream(sink)
    rcpts = [f"r{n}@example.org" for n in range(5)]
    assert (await up.send("news@shop.example", rcpts, DATA, [])).accepted() == rcpts
    await up.close()
    (session,) = sink.sessions
    (txn,) = session.transactions
    assert txn.batched
    batch = next(r for r in session.reads if r.startswith(b"MAIL"))
    assert batch.count(b"\r\n") == 1 + len(rcpts) + 1 and batch.endswith(b"DATA\r\n")
    assert DATA.replace(b"\r\n.", b"\r\n..") + b".\r\n" in session.reads


async def test_without_pipelining_commands_go_one_at_a_time(sink: RawSink) -> None:
    sink.extensions = [e for e in DEFAULT_EXTENSIONS if e != "PIPELINING"]
    up = upstream(sink)
    outcome = await up.send("news@shop.example", ["a@example.org", "b@example.org"], DATA, [])
    await up.close()
    assert outcome.accepted() == ["a@example.org", "b@example.org"]
    (session,) = sink.sessions
    (txn,) = session.transactions
    assert not txn.batched and txn.data == DATA
    assert all(read.count(b"\r\n") == 1 for read in session.reads if read.startswith(b"RCPT"))


@pytest.mark.parametrize("pipelining", [True, False])
async def test_each_recipient_gets_its_own_reply(sink: RawSink, pipelining: bool) -> None:
    if not pipelining:
        sink.extensions = [e for e in DEFAULT_EXTENSIONS if e != "PIPELINING"]
    sink.rcpt_replies["gone@example.org"] = b"550 5.1.1 <gone@example.org>: no such user"
    sink.rcpt_replies["full@example.org"] = b"452 4.2.2 mailbox full"
    up = upstream(sink)
    rcpts = ["ok@example.org", "gone@example.org", "full@example.org"]
    outcome = await up.send("news@shop.example", rcpts, DATA, [])
    await up.close()
    assert outcome.accepted() == ["ok@example.org"]
    assert outcome.refused() == ["gone@example.org"]
    assert outcome.deferred() == ["full@example.org"]
    assert outcome.replies["gone@example.org"].text.startswith("550 5.1.1")
    assert [t.rcpts for t in sink.transactions] == [[b"RCPT TO:<ok@example.org>"]]


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_refused_sender_refuses_every_recipient(sink: RawSink, pipelining: bool) -> None:
    if not pipelining:
        sink.extensions = [e for e in DEFAULT_EXTENSIONS if e != "PIPELINING"]
    sink.script("MAIL", b"553 5.7.1 sender not allowed")
    up = upstream(sink)
    outcome = await up.send("news@shop.example", ["a@example.org", "b@example.org"], DATA, [])
    # The connection is clean afterwards: the next message goes through on it.
    again = await up.send("news@shop.example", ["c@example.org"], DATA, [])
    await up.close()
    assert {r.text for r in outcome.replies.values()} == {"553 5.7.1 sender not allowed"}
    assert again.accepted() == ["c@example.org"]
    assert len(sink.sessions) == 1 and len(sink.transactions) == 1


async def test_data_refused_answers_the_accepted_recipients(sink: RawSink) -> None:
    sink.script("DATA", b"554 5.7.0 not now, not ever")
    up = upstream(sink)
    outcome = await up.send("news@shop.example", ["a@example.org"], DATA, [])
    again = await up.send("news@shop.example", ["b@example.org"], DATA, [])
    await up.close()
    assert outcome.refused() == ["a@example.org"]
    assert again.accepted() == ["b@example.org"]
    # The transaction left open by the refused DATA is reset before the next MAIL, in its batch.
    second_batch = [r for r in sink.sessions[0].reads if b"MAIL" in r][1]
    assert second_batch.startswith(b"RSET\r\nMAIL FROM:")


async def test_a_354_after_every_recipient_was_refused_gets_an_empty_end(sink: RawSink) -> None:
    """RFC 2920 3.1: the client cannot assume DATA is refused when every RCPT was: an upstream
    that says 354 anyway gets the end line alone, never the message."""
    sink.rcpt_replies["gone@example.org"] = b"550 5.1.1 no such user"
    sink.script("DATA", b"354 go ahead")
    up = upstream(sink)
    outcome = await up.send("news@shop.example", ["gone@example.org"], DATA, [])
    again = await up.send("news@shop.example", ["ok@example.org"], DATA, [])
    await up.close()
    assert outcome.refused() == ["gone@example.org"]
    assert again.accepted() == ["ok@example.org"]
    reads = b"".join(sink.sessions[0].reads)
    assert reads.count(b"Subject: dots") == 1  # the message went once, for ok@ only
    assert [t.rcpts for t in sink.transactions] == [[b"RCPT TO:<ok@example.org>"]]


async def test_dsn_parameters_reach_an_upstream_that_announces_dsn(sink: RawSink) -> None:
    up = upstream(sink)
    options = ["BODY=8BITMIME", "RET=HDRS", "ENVID=Qq+2B1x", "AUTH=<>"]
    rcpt_options = {
        "a@example.org": ("NOTIFY=NEVER",),
        "b@example.org": ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;B+2Bx@Example.org"),
    }
    outcome = await up.send(
        "news@shop.example", list(rcpt_options), DATA, options, rcpt_options=rcpt_options
    )
    await up.close()
    assert outcome.accepted() and outcome.relayed == []
    (txn,) = sink.transactions
    assert txn.mail == (
        b"MAIL FROM:<news@shop.example> BODY=8BITMIME SIZE=%d RET=HDRS ENVID=Qq+2B1x" % len(DATA)
    )
    assert txn.rcpts == [
        b"RCPT TO:<a@example.org> NOTIFY=NEVER",
        b"RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B+2Bx@Example.org",
    ]


async def test_no_dsn_upstream_gets_none_and_success_requests_are_reported(
    sink: RawSink,
) -> None:
    sink.extensions = [e for e in DEFAULT_EXTENSIONS if e != "DSN"]
    up = upstream(sink)
    rcpt_options = {"a@example.org": ("NOTIFY=NEVER",), "b@example.org": ("NOTIFY=SUCCESS",)}
    outcome = await up.send(
        "news@shop.example", list(rcpt_options), DATA, ["RET=FULL"], rcpt_options=rcpt_options
    )
    await up.close()
    assert outcome.relayed == ["b@example.org"]
    (txn,) = sink.transactions
    assert b"RET=" not in txn.mail and all(b"NOTIFY" not in r for r in txn.rcpts)


async def test_xforward_goes_in_the_batch_with_the_names_announced(sink: RawSink) -> None:
    sink.extensions = [*DEFAULT_EXTENSIONS, "XFORWARD NAME ADDR PROTO HELO"]
    up = upstream(sink)
    xforward = [("NAME", "mx.example"), ("ADDR", "192.0.2.7"), ("PORT", "4711")]
    outcome = await up.send("news@shop.example", ["a@example.org"], DATA, [], xforward=xforward)
    await up.close()
    assert outcome.accepted()
    batch = next(r for r in sink.sessions[0].reads if b"MAIL" in r)
    assert batch.startswith(b"XFORWARD NAME=mx.example ADDR=192.0.2.7\r\nMAIL FROM:")


async def test_a_refused_xforward_does_not_stop_the_message(sink: RawSink) -> None:
    sink.extensions = [*DEFAULT_EXTENSIONS, "XFORWARD NAME ADDR"]
    sink.script("XFORWARD", b"550 5.7.0 insufficient authorization")
    up = upstream(sink)
    outcome = await up.send("n@shop.example", ["a@example.org"], DATA, [], xforward=[("NAME", "x")])
    await up.close()
    assert outcome.accepted() == ["a@example.org"]
