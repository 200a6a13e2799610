"""The upstream client when things go wrong: nothing lost, nothing doubled, nothing leaked.

Every failure path of the pool and the transaction, against ``RawSink`` with scripted faults:
timeouts before and after the message, a connection lost mid-body, an idle pooled connection
closed by the upstream with 421, an upstream restart, what must never be written (control
characters in addresses, NUL or bare line endings in the message), unexpected errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import pytest

from relay.errors import DowngradeRefused
from relay.outbound.forward import SmtpUpstream
from relay.settings import UpstreamSettings
from tests.support.raw_sink import CLOSE, DEFAULT_EXTENSIONS, HANG, RawSink

pytestmark = pytest.mark.timeout(30)

DATA = b"From: news@shop.example\r\nSubject: t\r\n\r\nhello\r\n"


@pytest.fixture
async def sink() -> AsyncIterator[RawSink]:
    s = await RawSink().start()
    yield s
    await s.stop()


def upstream(sink: RawSink, **kw: object) -> SmtpUpstream:
    settings = UpstreamSettings(url=sink.url, tls="none", timeout=1.0, **kw)  # type: ignore[arg-type]
    return SmtpUpstream(settings, "relay.test")


async def test_no_answer_to_the_end_of_data_is_a_deferral_never_a_retry(sink: RawSink) -> None:
    sink.script("END", HANG)
    up = upstream(sink)
    outcome = await up.send("n@shop.example", ["a@example.org"], DATA, [])
    assert outcome.deferred() == ["a@example.org"]
    assert "after the message was sent" in outcome.replies["a@example.org"].text
    assert "R-303" in outcome.replies["a@example.org"].text
    await asyncio.sleep(0.05)
    # Sent once (the upstream may have taken it: RFC 1047), never a second time by the relay.
    assert sum(b"hello" in r for s in sink.sessions for r in s.reads) == 1
    await up.close()


async def test_no_answer_before_the_message_defers_without_sending_it(sink: RawSink) -> None:
    sink.script("MAIL", HANG)
    up = upstream(sink)
    outcome = await up.send("n@shop.example", ["a@example.org"], DATA, [])
    assert outcome.deferred() == ["a@example.org"]
    assert "R-302" in outcome.replies["a@example.org"].text
    assert not any(b"hello" in r for s in sink.sessions for r in s.reads)
    await up.close()


async def test_connection_lost_mid_body_defers(sink: RawSink) -> None:
    sink.script("BODY", CLOSE)
    up = upstream(sink)
    big = DATA + b"x" * 2_000_000 + b"\r\n"  # written in several chunks
    outcome = await up.send("n@shop.example", ["a@example.org"], big, [])
    assert outcome.deferred() == ["a@example.org"]
    assert sink.transactions == []
    # The pool recovers: a new connection for the next message.
    assert (await up.send("n@shop.example", ["b@example.org"], DATA, [])).accepted()
    await up.close()


async def test_a_pooled_connection_closed_with_421_while_idle_is_replaced(sink: RawSink) -> None:
    """Postfix's smtpd says ``421 4.4.2 ... Error: timeout exceeded`` to an idle client and
    closes: the next message must not see that reply nor fail."""
    sink.idle_close = 0.2
    up = upstream(sink)
    assert (await up.send("n@shop.example", ["a@example.org"], DATA, [])).accepted()
    await asyncio.sleep(0.5)
    assert (await up.send("n@shop.example", ["b@example.org"], DATA, [])).accepted()
    assert len(sink.sessions) == 2 and len(sink.transactions) == 2
    await up.close()


async def test_a_421_to_mail_on_a_reused_connection_is_retried_once(sink: RawSink) -> None:
    up = upstream(sink)
    assert (await up.send("n@shop.example", ["a@example.org"], DATA, [])).accepted()
    sink.script("MAIL", b"421 4.3.2 shutting down")
    outcome = await up.send("n@shop.example", ["b@example.org"], DATA, [])
    assert outcome.accepted() == ["b@example.org"]
    assert [t.rcpts for t in sink.transactions][-1] == [b"RCPT TO:<b@example.org>"]
    await up.close()


async def test_a_421_on_a_new_connection_defers(sink: RawSink) -> None:
    sink.script("MAIL", b"421 4.3.2 shutting down", b"421 4.3.2 shutting down")
    up = upstream(sink)
    outcome = await up.send("n@shop.example", ["a@example.org"], DATA, [])
    assert outcome.deferred() == ["a@example.org"]
    assert len(sink.sessions) == 1  # a new connection is not retried: it is not stale
    await up.close()


async def test_an_upstream_restart_between_messages_costs_nothing(sink: RawSink) -> None:
    up = upstream(sink)
    assert (await up.send("n@shop.example", ["a@example.org"], DATA, [])).accepted()
    sink.drop_all()
    await asyncio.sleep(0.05)
    assert (await up.send("n@shop.example", ["b@example.org"], DATA, [])).accepted()
    await up.close()


async def test_an_unreachable_upstream_defers_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from relay.store.embedded import free_port

    up = SmtpUpstream(UpstreamSettings(url=f"smtp://127.0.0.1:{free_port()}", tls="none"))
    with caplog.at_level(logging.WARNING, logger="relay.outbound"):
        for _ in range(3):
            outcome = await up.send("n@shop.example", ["a@example.org", "b@example.org"], DATA, [])
            assert outcome.deferred() == ["a@example.org", "b@example.org"]
    assert len([r for r in caplog.records if "cannot connect" in r.getMessage()]) == 1
    assert "R-301" in outcome.replies["a@example.org"].text


async def test_a_greeting_refusal_defers(sink: RawSink) -> None:
    sink.script("GREETING", b"554 5.3.2 no service for you")
    up = upstream(sink)
    outcome = await up.send("n@shop.example", ["a@example.org"], DATA, [])
    assert outcome.deferred() == ["a@example.org"]
    await up.close()


async def test_garbage_from_the_upstream_closes_the_connection(sink: RawSink) -> None:
    sink.script("MAIL", b"HTTP/1.1 400 Bad Request")
    up = upstream(sink)
    outcome = await up.send("n@shop.example", ["a@example.org"], DATA, [])
    assert outcome.deferred() == ["a@example.org"]
    assert sink.open <= 1
    await up.close()


@pytest.mark.parametrize(
    ("sender", "rcpt", "code"),
    [
        ('"a\rRCPT TO:<injected@evil.example>"@shop.example', "v@example.org", "553 5.1.7"),
        ("n@shop.example", "victim\r\nRCPT TO:<injected@evil.example>", "553 5.1.3"),
        ("n@shop.example", "nul\x00@example.org", "553 5.1.3"),
        ("n@shop.example", "bad\udcff@example.org", "553 5.1.3"),
    ],
)
async def test_addresses_that_cannot_be_written_are_refused_and_never_sent(
    sink: RawSink, sender: str, rcpt: str, code: str
) -> None:
    up = upstream(sink)
    outcome = await up.send(sender, [rcpt, "ok@example.org"], DATA, [])
    await up.close()
    assert outcome.replies[rcpt].text.startswith(code)
    wire = b"".join(r for s in sink.sessions for r in s.reads)
    assert b"injected" not in wire and b"\x00" not in wire
    if code == "553 5.1.3":  # only the bad recipient is refused
        assert outcome.accepted() == ["ok@example.org"]


async def test_a_nul_in_the_message_is_refused_for_good_and_not_sent(sink: RawSink) -> None:
    up = upstream(sink)
    outcome = await up.send("n@shop.example", ["a@example.org"], DATA + b"\x00.\r\n", [])
    await up.close()
    assert (
        outcome.refused() == ["a@example.org"] and "R-312" in outcome.replies["a@example.org"].text
    )
    assert sink.sessions == [] or sink.transactions == []


@pytest.mark.parametrize("defect", [b"Subject: x\rBcc: victim@example.org\r\n", b"a\nb\r\n"])
async def test_bare_line_endings_are_never_sent_nor_normalised(
    sink: RawSink, defect: bytes
) -> None:
    """Issue 13.1: the upstream must never read another message than the one filtered. A bare
    CR or LF reaching the client is a relay defect: deferred, logged, not sent, not altered."""
    up = upstream(sink)
    outcome = await up.send("n@shop.example", ["a@example.org"], defect + DATA, [])
    await up.close()
    assert outcome.deferred() == ["a@example.org"]
    assert "R-313" in outcome.replies["a@example.org"].text
    assert sink.transactions == []


async def test_twenty_bad_messages_leak_no_connection(sink: RawSink) -> None:
    """Issue 13.2: each message aiosmtplib could not write left a pooled connection open
    (9 -> 28 after 20 messages)."""
    up = upstream(sink, pool_size=4)
    bad_kinds = [
        ("n@shop.example", ["x\x00@example.org", "ok@example.org"], DATA),
        ("n\x0b@shop.example", ["ok@example.org"], DATA),
        ("n@shop.example", ["ok@example.org"], DATA + b"\x00"),
        ("n@shop.example", ["ok@example.org", "\udcff@example.org"], DATA),
    ]

    async def one(n: int) -> None:
        sender, rcpts, data = bad_kinds[n % len(bad_kinds)]
        await up.send(sender, rcpts, data, [])

    await asyncio.gather(*(one(n) for n in range(20)))
    await asyncio.sleep(0.05)
    assert sink.open <= 4
    await up.close()
    await asyncio.sleep(0.05)
    assert sink.open == 0


async def test_an_unexpected_error_is_answered_451_and_frees_the_connection(
    sink: RawSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.extensions = [e for e in DEFAULT_EXTENSIONS if e != "8BITMIME"]

    async def broken(data: bytes) -> bytes:
        raise KeyError("secret-recipient@example.org")

    up = upstream(sink, pool_size=1)
    with caplog.at_level(logging.ERROR):
        outcome = await up.send(
            "n@shop.example", ["a@example.org"], "Subject: é\r\n\r\nx\r\n".encode(), [],
            downgrade=broken,
        )  # fmt: skip
    assert (
        outcome.deferred() == ["a@example.org"] and "R-314" in outcome.replies["a@example.org"].text
    )
    # The slot and the connection are free: the next message is sent.
    assert (await up.send("n@shop.example", ["b@example.org"], DATA, [])).accepted()
    await up.close()
    assert "secret-recipient" not in caplog.text and "KeyError" in caplog.text


async def test_cancellation_closes_the_connection(sink: RawSink) -> None:
    sink.script("END", HANG)
    up = upstream(sink)
    task = asyncio.ensure_future(up.send("n@shop.example", ["a@example.org"], DATA, []))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert sink.open == 0
    await up.close()


async def test_eight_bit_for_an_upstream_without_8bitmime_is_converted_or_refused(
    sink: RawSink,
) -> None:
    sink.extensions = [e for e in DEFAULT_EXTENSIONS if e != "8BITMIME"]
    seen: list[bytes] = []

    async def convert(data: bytes) -> bytes:
        seen.append(data)
        return data.replace("é".encode(), b"=C3=A9")

    async def refuse(data: bytes) -> bytes:
        raise DowngradeRefused("8-bit bytes in a header")

    eight = "Subject: x\r\n\r\ncafé\r\n".encode()
    up = upstream(sink)
    ok = await up.send(
        "n@shop.example", ["a@example.org"], eight, ["BODY=8BITMIME"], downgrade=convert
    )
    no = await up.send("n@shop.example", ["b@example.org"], eight, [], downgrade=refuse)
    await up.close()
    assert ok.accepted() == ["a@example.org"] and seen == [eight]
    assert sink.transactions[0].data == b"Subject: x\r\n\r\ncaf=C3=A9\r\n"
    assert b"BODY=" not in sink.transactions[0].mail
    assert no.refused() == ["b@example.org"]
    assert no.replies["b@example.org"].text.startswith("554 5.6.3")
    assert "8-bit bytes in a header" in no.replies["b@example.org"].text


async def test_utf8_addresses_to_an_upstream_without_smtputf8(sink: RawSink) -> None:
    """RFC 6531 3.4: the relay answers 553 5.6.7 itself for that address; the others of the
    group are sent."""
    sink.extensions = [e for e in DEFAULT_EXTENSIONS if e != "SMTPUTF8"]
    up = upstream(sink)
    outcome = await up.send(
        "n@shop.example", ["jörg@example.org", "ok@example.org"], DATA, ["SMTPUTF8"]
    )
    sender = await up.send("jörg@shop.example", ["ok@example.org"], DATA, ["SMTPUTF8"])
    header = await up.send(
        "n@shop.example", ["ok@example.org"], "Subject: été\r\n\r\nx\r\n".encode(), ["SMTPUTF8"]
    )
    await up.close()
    assert outcome.accepted() == ["ok@example.org"]
    assert outcome.replies["jörg@example.org"].text.startswith("553 5.6.7")
    assert sender.replies["ok@example.org"].text.startswith("553 5.6.7")
    assert header.replies["ok@example.org"].text.startswith("554 5.6.9")
    assert [t.rcpts for t in sink.transactions] == [[b"RCPT TO:<ok@example.org>"]]
    assert b"SMTPUTF8" not in sink.transactions[0].mail


async def test_utf8_addresses_to_an_upstream_with_smtputf8(sink: RawSink) -> None:
    up = upstream(sink)
    outcome = await up.send("n@shop.example", ["jörg@example.org"], DATA, ["SMTPUTF8"])
    await up.close()
    assert outcome.accepted() == ["jörg@example.org"]
    (txn,) = sink.transactions
    assert b"SMTPUTF8" in txn.mail and txn.rcpts == ["RCPT TO:<jörg@example.org>".encode()]


async def test_the_in_flight_commit_comes_after_the_end_line_before_the_reply(
    sink: RawSink,
) -> None:
    """The delivery ledger's in-flight entry (RFC 1047): written while the upstream decides."""
    seen: list[tuple[list[str], int]] = []

    async def commit(accepted: Sequence[str]) -> None:
        seen.append((list(accepted), len(sink.transactions)))

    sink.rcpt_replies["gone@example.org"] = b"550 5.1.1 no such user"
    up = upstream(sink)
    outcome = await up.send(
        "n@shop.example", ["a@example.org", "gone@example.org"], DATA, [], commit=commit
    )
    assert outcome.accepted() == ["a@example.org"]
    # Called once, with the accepted recipient only; the sink had not recorded it yet (it
    # records when it answers the end of data).
    assert seen == [(["a@example.org"], 0)]
    sink.script("END", HANG)
    seen.clear()
    lost = await up.send("n@shop.example", ["b@example.org"], DATA, [], commit=commit)
    assert lost.deferred() == ["b@example.org"] and seen == [(["b@example.org"], 1)]
    await up.close()


async def test_a_failing_commit_still_reads_the_reply(sink: RawSink) -> None:
    async def broken(accepted: Sequence[str]) -> None:
        raise ConnectionError("ledger down")

    up = upstream(sink)
    outcome = await up.send("n@shop.example", ["a@example.org"], DATA, [], commit=broken)
    await up.close()
    assert outcome.accepted() == ["a@example.org"]
