"""The relay end to end: real SMTP clients, a real aiosmtpd upstream with faults, real Redis.

Each test shows one promise of issue 2: per-recipient groups, nothing accepted before the
upstream accepted it, nothing lost, nothing delivered twice, never an open relay.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from relay.store.embedded import EmbeddedRedis
from relay.store.redis_keys import Keys
from tests.conftest import require_tool
from tests.support.harness import HTML_WITH_PIXEL, PIXEL, asend, make_settings, message, start_relay
from tests.support.relay import Relay, RelayFactory
from tests.support.smtp_sink import Sink

pytestmark = pytest.mark.timeout(60)


async def test_recipients_split_by_consent_and_share_identical_output(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory()
    await relay.grant("carol@example.org")
    rcpts = ["alice@example.org", "bob@example.org", "carol@example.org"]
    code, _ = await asend(relay.port, message(HTML_WITH_PIXEL), rcpts)
    assert code == 250
    # alice and bob have no consent: same output, one transaction; carol gets her own copy.
    groups = sorted(sorted(r.rcpt_tos) for r in sink.handler.received)
    assert groups == [["alice@example.org", "bob@example.org"], ["carol@example.org"]]
    no_consent = sink.handler.copies_for("alice@example.org")[0].data
    consented = sink.handler.copies_for("carol@example.org")[0].data
    assert PIXEL.encode() not in no_consent
    assert b"https://cdn.shop.example/logo.png" in no_consent
    assert PIXEL.encode() not in consented  # kept through the gateway, never in clear
    assert relay.settings.web.public_url.encode() + b"/g/" in consented
    assert b"X-Relay-Category" not in consented


async def test_permanent_refusal_of_one_recipient_delivers_the_others_and_reports_it(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory()
    sink.handler.faults.rcpt_replies["bob@example.org"] = "550 5.1.1 no such user"
    code, text = await asend(
        relay.port, message(HTML_WITH_PIXEL), ["alice@example.org", "bob@example.org"]
    )
    assert code == 250
    assert "1 recipient(s) refused" in text
    assert len(sink.handler.copies_for("alice@example.org")) == 1
    bounces = [r for r in sink.handler.received if r.mail_from == ""]
    assert len(bounces) == 1
    assert bounces[0].rcpt_tos == ["app@shop.example"]
    assert b"bob@example.org" in bounces[0].data and b"5.1.1" in bounces[0].data


async def test_every_recipient_refused_gives_5xx(relay_factory: RelayFactory, sink: Sink) -> None:
    relay: Relay = await relay_factory()
    sink.handler.faults.rcpt_replies["bob@example.org"] = "550 5.1.1 no such user"
    code, text = await asend(relay.port, message("<p>x</p>"), ["bob@example.org"])
    assert code == 554
    assert "5.1.1" in text


async def test_temporary_failure_then_retry_delivers_each_recipient_once(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory()
    await relay.grant("carol@example.org")
    # carol's own group fails with 451 the first time; alice's group is delivered.
    sink.handler.faults.fail_data_for["carol@example.org"] = "451 4.3.0 try later"
    data = message(HTML_WITH_PIXEL)
    rcpts = ["alice@example.org", "carol@example.org"]
    code, text = await asend(relay.port, data, rcpts)
    assert code == 451
    assert "no duplicates" in text
    assert len(sink.handler.copies_for("alice@example.org")) == 1
    assert sink.handler.copies_for("carol@example.org") == []
    # The client retries the very same message: only carol is sent this time.
    code, _ = await asend(relay.port, data, rcpts)
    assert code == 250
    assert len(sink.handler.copies_for("alice@example.org")) == 1
    assert len(sink.handler.copies_for("carol@example.org")) == 1


async def test_upstream_down_gives_4xx_and_nothing_is_lost(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory()
    await sink.stop()
    code, text = await asend(relay.port, message("<p>x</p>"), ["alice@example.org"])
    assert code == 451
    assert "4.4.1" in text
    await sink.start()
    code, _ = await asend(relay.port, message("<p>x</p>"), ["alice@example.org"])
    assert code == 250
    assert len(sink.handler.copies_for("alice@example.org")) == 1


async def test_upstream_dropping_the_connection_at_data_gives_4xx_then_delivers_once(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory()
    sink.handler.faults.drop_at_data = 1
    data = message("<p>x</p>")
    code, _ = await asend(relay.port, data, ["alice@example.org"])
    assert code == 451
    code, _ = await asend(relay.port, data, ["alice@example.org"])
    assert code == 250
    assert len(sink.handler.copies_for("alice@example.org")) == 1


async def test_upstream_timeout_gives_4xx(relay_factory: RelayFactory, sink: Sink) -> None:
    relay: Relay = await relay_factory(upstream={"timeout": 0.5})
    sink.handler.faults.data_delay = 2.0
    code, text = await asend(relay.port, message("<p>x</p>"), ["alice@example.org"])
    assert code == 451
    assert "4.4.2" in text


async def test_slow_upstream_does_not_trip_the_session_timeout(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    """aiosmtpd's timer is not reset during DATA: a 1 s session timeout, a 2 s upstream."""
    relay: Relay = await relay_factory(smtp={"data_timeout": 1.0})
    sink.handler.faults.data_delay = 2.0
    code, _ = await asend(relay.port, message("<p>x</p>"), ["alice@example.org"])
    assert code == 250
    assert len(sink.handler.received) == 1


async def test_redis_down_fails_closed_and_keeps_the_decision_records(
    relay_factory: RelayFactory,
    sink: Sink,
    private_redis: Callable[[], EmbeddedRedis],
) -> None:
    server = private_redis()
    relay: Relay = await relay_factory(redis_url=server.url)
    await relay.grant("carol@example.org")
    server.stop()
    code, _ = await asend(relay.port, message(HTML_WITH_PIXEL), ["carol@example.org"])
    assert code == 250
    delivered = sink.handler.copies_for("carol@example.org")[0].data
    assert PIXEL.encode() not in delivered
    assert b"/g/" not in delivered  # consent could not be read: nothing consent-based goes out
    journal = Path(relay.settings.audit.journal)
    assert journal.exists() and journal.read_text().count("\n") == 1
    server.start()
    replayed = await relay.running.pipeline.audit.replay_journal()
    assert replayed == 1
    client = redis.Redis.from_url(server.url)
    keys = Keys(relay.settings.redis.prefix)
    assert sum(client.xlen(keys.audit_stream(b)) for b in keys.audit_buckets()) == 1
    client.close()


async def test_redis_down_with_tempfail_answers_4xx(
    relay_factory: RelayFactory,
    sink: Sink,
    private_redis: Callable[[], EmbeddedRedis],
) -> None:
    server = private_redis()
    relay: Relay = await relay_factory(redis_url=server.url, smtp={"redis_down": "tempfail"})
    server.stop()
    code, text = await asend(relay.port, message(HTML_WITH_PIXEL), ["carol@example.org"])
    assert code == 451
    assert "Consent store" in text
    assert sink.handler.received == []


async def test_oversized_message_gets_552(relay_factory: RelayFactory, sink: Sink) -> None:
    relay: Relay = await relay_factory(smtp={"max_message_size": 2000})
    code, _ = await asend(relay.port, message("<p>x</p>\r\n" * 500), ["a@example.org"])
    assert code == 552
    assert sink.handler.received == []


MALFORMED = (
    b"From: a@shop.example\r\nTo: b@example.org\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="zz"\r\n\r\n'
    b"--zz\r\nContent-Type: text/html\r\n\r\n"
    b'<img src="' + PIXEL.encode() + b'" width="1" height="1">\r\n'
)  # the closing boundary never comes


async def test_malformed_mime_is_refused_with_a_clear_5xx(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory()
    code, text = await asend(relay.port, MALFORMED, ["b@example.org"])
    assert code == 554
    assert "5.6.0" in text and "Malformed" in text
    assert sink.handler.received == []


async def test_malformed_mime_passes_with_trackers_stripped_when_configured(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory(smtp={"malformed": "strip"})
    await relay.grant("b@example.org")
    code, _ = await asend(relay.port, MALFORMED, ["b@example.org"])
    assert code == 250
    assert PIXEL.encode() not in sink.handler.received[0].data


def _raw_session(port: int, payload: bytes) -> bytes:
    """Speak SMTP by hand (smtplib would repair the line endings we want to test)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        stream = s.makefile("rb")

        def reply() -> bytes:
            lines = b""
            while True:
                line = stream.readline()
                lines += line
                if len(line) < 4 or line[3:4] != b"-":
                    return lines

        transcript = reply()
        for line in (b"EHLO t\r\n", b"MAIL FROM:<a@shop.example>\r\n",
                     b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n"):  # fmt: skip
            s.sendall(line)
            transcript += reply()
        s.sendall(payload)
        transcript += reply()
        return transcript


async def test_smuggling_sequence_is_refused_and_nothing_is_sent(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory()
    smuggled = (
        b"Subject: first\r\n\r\nbody\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\n"
        b"DATA\r\nSubject: smuggled\r\n\r\nhi\r\n.\r\n"
    )
    replies = await asyncio.to_thread(_raw_session, relay.port, smuggled)
    assert b"554 5.6.0" in replies
    assert sink.handler.received == []


async def test_bare_lf_is_normalised_to_crlf(relay_factory: RelayFactory, sink: Sink) -> None:
    relay: Relay = await relay_factory()
    data = b"From: a@shop.example\nTo: b@example.org\nSubject: lf\n\nline one\nline two\r\n.\r\n"
    replies = await asyncio.to_thread(_raw_session, relay.port, data)
    assert b"250 2.0.0" in replies
    assert sink.handler.received[0].data.count(b"\r\n") >= 5
    assert b"\n" not in sink.handler.received[0].data.replace(b"\r\n", b"")


async def test_smtplib_lines_after_a_bare_lf_keep_their_one_dot(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    """Python's smtplib, given bytes with LF line endings (a template read from disk), stuffs
    every line that starts with a dot; Postfix reads LF as a line end and unstuffs it. The
    relay delivered ``..hero`` for ``.hero`` (a CSS class rule lost in every mail client)."""
    relay: Relay = await relay_factory()
    html = "<style>\n.hero { color: #333 }\n</style>\n<p class=hero>Hi</p>\n.\n..two\n"
    code, reply = await asend(relay.port, message(html), ["alice@example.org"])
    assert code == 250, reply
    data = sink.handler.received[0].data
    assert b"\r\n.hero { color: #333 }\r\n" in data
    assert b"\r\n.\r\n..two\r\n" in data  # a line of one dot, a line of two


async def test_relay_attempt_from_a_disallowed_client_is_refused(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory(smtp={"allowed_clients": ["10.99.0.0/16"]})

    def attempt() -> None:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as client:
            client.sendmail("a@shop.example", ["victim@example.net"], message("<p>x</p>"))

    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await asyncio.to_thread(attempt)
    code, text = info.value.recipients["victim@example.net"]
    assert code == 554 and b"5.7.1" in text
    assert sink.handler.received == []


async def test_shutdown_mid_transaction_finishes_the_message_and_refuses_new_ones(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory()
    sink.handler.faults.data_delay = 1.5
    sending = asyncio.create_task(asend(relay.port, message("<p>x</p>"), ["a@example.org"]))
    while sink.handler.transactions == 0:
        await asyncio.sleep(0.02)
    relay.running.smtp.handler.shutting_down = True  # what SIGTERM does first
    late = await asyncio.to_thread(_late_client, relay.port)
    assert late.startswith("421")
    stopping = asyncio.create_task(relay.running.smtp.stop(grace=5))
    code, _ = await sending
    await stopping
    assert code == 250
    assert len(sink.handler.received) == 1


def _late_client(port: int) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("late.test")
        code, msg = client.mail("a@shop.example")
        return f"{code} {msg.decode()}"


async def test_unexpected_error_is_a_named_4xx_not_500(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory()

    async def broken(*_args: object) -> object:
        raise ZeroDivisionError("boom")

    relay.running.smtp.handler.process = broken  # type: ignore[assignment]
    code, text = await asend(relay.port, message("<p>x</p>"), ["a@example.org"])
    assert code == 451
    assert "R-202" in text and "id " in text


async def test_swaks_client_through_the_relay(relay_factory: RelayFactory, sink: Sink) -> None:
    swaks = require_tool("swaks")
    relay = await relay_factory()
    result = await asyncio.to_thread(
        subprocess.run,
        [swaks, "--server", f"127.0.0.1:{relay.port}", "--from", "app@shop.example",
         "--to", "alice@example.org", "--header", "Subject: swaks", "--body", "hello",
         "--pipeline"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0" in result.stdout
    assert len(sink.handler.copies_for("alice@example.org")) == 1


async def test_file_upstream_writes_message_and_envelope(tmp_path: Path, redis_url: str) -> None:
    outbox = tmp_path / "outbox"
    settings = make_settings(tmp_path, redis_url, f"file:{outbox}")
    running = await start_relay(settings, redis_url)
    try:
        code, _ = await asend(running.smtp_port, message("<p>x</p>"), ["a@example.org"])
    finally:
        await running.stop()
    assert code == 250
    emls = list(outbox.glob("*.eml"))
    assert len(emls) == 1
    envelope = json.loads(emls[0].with_suffix(".json").read_text())
    assert envelope["rcpt_tos"] == ["a@example.org"]
    assert b"Hello in text." in emls[0].read_bytes()


async def test_a_dead_filter_worker_loses_no_message(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    import os
    import signal as signals

    relay: Relay = await relay_factory(smtp={"process_pool": 1, "inline_max_bytes": 100})
    code, _ = await asend(relay.port, message(HTML_WITH_PIXEL), ["a@example.org"])
    assert code == 250
    pool = relay.running.pipeline.runner.pools.get("medium")
    assert pool is not None
    for pid in list(pool._processes):  # the worker dies (OOM killer, crash)
        os.kill(pid, signals.SIGKILL)
    await asyncio.sleep(0.2)
    code, _ = await asend(
        relay.port, message(HTML_WITH_PIXEL, message_id="<m2@shop.example>"), ["b@example.org"]
    )
    assert code == 250
    delivered = sink.handler.copies_for("b@example.org")
    assert len(delivered) == 1 and PIXEL.encode() not in delivered[0].data


async def test_esp_profile_switches_off_the_esp_tracking_for_recipients_without_consent(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay = await relay_factory(upstream={"profile": "mailgun"})
    await relay.grant("carol@example.org")
    data = message(HTML_WITH_PIXEL, extra_headers="X-Mailgun-Track-Opens: yes\r\n")
    code, _ = await asend(relay.port, data, ["alice@example.org", "carol@example.org"])
    assert code == 250
    alice = sink.handler.copies_for("alice@example.org")[0].data
    carol = sink.handler.copies_for("carol@example.org")[0].data
    # No consent: the ESP must not put back the pixel the relay took out; the app's own
    # switch is replaced, not contradicted.
    assert b"X-Mailgun-Track-Opens: no\r\n" in alice
    assert b"X-Mailgun-Track-Opens: yes" not in alice
    # Consent for campaign performance: the app's setting stands.
    assert b"X-Mailgun-Track-Opens: yes\r\n" in carol


def _pipelined(port: int, data: bytes) -> bytes:
    """EHLO, then two whole transactions written in one go, as a pipelining client does."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        stream = s.makefile("rb")
        stream.readline()
        s.sendall(b"EHLO t\r\n")
        ehlo = b""
        while not ehlo.endswith(b"\r\n") or ehlo.splitlines()[-1][3:4] == b"-":
            ehlo += stream.readline()
        one = b"MAIL FROM:<a@shop.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        s.sendall(one + data + b".\r\n" + one + data + b".\r\nQUIT\r\n")
        return ehlo + stream.read()


async def test_pipelined_identical_messages_are_both_delivered(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    """Two byte-identical messages pipelined on one connection: the second MAIL shows the
    client received the first 250, so the second message is new, not a retry to dedupe."""
    relay = await relay_factory()
    data = b"From: a@shop.example\r\nSubject: p\r\n\r\nbody\r\n"
    transcript = await asyncio.to_thread(_pipelined, relay.port, data)
    assert b"250-PIPELINING" in transcript
    assert transcript.count(b"250 2.0.0 OK") == 2
    assert len(sink.handler.received) == 2


async def test_a_250_lost_with_the_connection_is_not_delivered_twice(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    """The client sends the message and drops the connection without reading the 250 (nor
    sending any further command); its retry of the same bytes is recognised."""
    import socket

    relay = await relay_factory()
    data = message("<p>once</p>")

    def send_and_vanish() -> None:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
            stream = s.makefile("rb")
            stream.readline()
            s.sendall(b"HELO t\r\nMAIL FROM:<app@shop.example>\r\nRCPT TO:<a@example.org>\r\n")
            for _ in range(3):
                stream.readline()
            s.sendall(b"DATA\r\n")
            stream.readline()
            s.sendall(data + b".\r\n")
            stream.readline()  # the 250 arrives, but the client "crashes" before using it

    await asyncio.to_thread(send_and_vanish)
    code, _ = await asend(relay.port, data, ["a@example.org"])
    assert code == 250
    assert len(sink.handler.copies_for("a@example.org")) == 1


async def test_a_fan_out_past_the_render_budget_is_sent_in_batches_once_each(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    data = message("<p>{{relay:preferences_url}}</p>" + "<p>filler</p>\r\n" * 200)
    relay = await relay_factory(smtp={"max_render_bytes": 2 * len(data)})
    rcpts = [f"r{n}@example.org" for n in range(7)]
    code, _ = await asend(relay.port, data, rcpts)
    assert code == 250
    assert sorted(r for copy in sink.handler.received for r in copy.rcpt_tos) == sorted(rcpts)


async def test_the_same_bytes_sent_twice_at_once_are_two_messages_not_a_copy(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    """Two identical messages in flight together: the second must not be taken for a retry of
    the first (its in-flight ledger entry belongs to a live transaction, ledger Rule 7). It
    was answered 250 with nothing sent, and would have been lost had the first then failed."""
    relay: Relay = await relay_factory()
    sink.handler.faults.reply_delay = 1.0  # the upstream keeps the first, answers a bit later
    data = message("<p>twice</p>", message_id="<twice@shop.example>")
    first = asyncio.create_task(asend(relay.port, data, ["alice@example.org"]))
    while not sink.handler.received:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(asend(relay.port, data, ["alice@example.org"]))
    assert [(await first)[0], (await second)[0]] == [250, 250]
    assert len(sink.handler.copies_for("alice@example.org")) == 2
