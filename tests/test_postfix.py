"""The Postfix recipes of docs/postfix.md, run against a real Postfix from Debian's package.

Each test starts a private Postfix (tests/postfix.py) on loopback ports of its own, with its
config, queue and log under ``tmp_path``, and stops it at teardown even when the test fails.

Rule 1: without the ``postfix`` package (or without root, which ``postfix start`` needs) the
        tests skip with the reason, unless ``RELAY_REQUIRE_TOOLS=1``: then they fail.
Rule 2: every wait is bounded; a timeout fails with the tail of Postfix's log.
Rule 3: the filtered result is judged against the corpus labels: every labelled tracker URL of
        ``msg005.eml`` is gone for a recipient without consent, the content images are still
        there, and the Message-ID is unchanged.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import html
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.store.embedded import free_port
from tests.support.harness import asend, make_settings, start_relay
from tests.support.postfix import PostfixInstance, postfix_available
from tests.support.smtp_sink import Received, Sink

CORPUS_MESSAGE = "msg005.eml"
# The re-injection smtpd logs the original client and queue id it learnt from XFORWARD.
ORIG_CLIENT = r"postfix/reinject/smtpd.*orig_client="
WAIT = 30.0  # seconds: Postfix retries a deferred message after 2 s (tests/postfix.py)


class Postfixes:
    """Makes private Postfix instances under ``tmp_path``; ``stop_all`` stops every one."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[PostfixInstance] = []

    def __call__(self, **kwargs: Any) -> PostfixInstance:
        instance = PostfixInstance(self.tmp_path / f"postfix{len(self.made)}", **kwargs)
        self.made.append(instance)
        return instance

    async def start(self, **kwargs: Any) -> PostfixInstance:
        instance = self(**kwargs)
        await asyncio.to_thread(instance.start)
        return instance

    def stop_all(self) -> None:
        for instance in self.made:
            instance.stop()


@pytest.fixture
def postfix() -> Iterator[Postfixes]:
    """Private Postfix instances, stopped at teardown (the tests stop them earlier, in order)."""
    if not postfix_available() or os.geteuid() != 0:
        reason = (
            "postfix is not installed (apt-get install postfix)"
            if not postfix_available()
            else "a private Postfix needs root to start"
        )
        if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{reason}; RELAY_REQUIRE_TOOLS=1")
        pytest.skip(reason)
    # Not under tmp_path: pytest makes its folders 0700 and Postfix's daemons, running as the
    # postfix user, must reach their data directory by path. Parallel workers changing the
    # modes of shared pytest folders raced each other in CI (master.lock: Permission denied).
    home = Path(tempfile.mkdtemp(prefix="relay-postfix-"))
    home.chmod(0o755)
    factory = Postfixes(home)
    try:
        yield factory
    finally:
        factory.stop_all()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def label(corpus_dir: Path) -> dict[str, Any]:
    labels = json.loads((corpus_dir / "labels.json").read_text())
    found: dict[str, Any] = next(e for e in labels if e["file"] == CORPUS_MESSAGE)
    return found


async def wait_received(sink: Sink, instances: list[PostfixInstance], count: int = 1) -> None:
    """Wait until the sink holds ``count`` messages; on timeout, fail with Postfix's logs."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while len(sink.handler.received) < count:
        if asyncio.get_running_loop().time() > deadline:
            logs = "\n---\n".join(i.tail() for i in instances)
            pytest.fail(f"the sink got {len(sink.handler.received)}/{count} messages:\n{logs}")
        await asyncio.sleep(0.1)


def html_part(data: bytes) -> str:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    for part in parsed.walk():
        if part.get_content_type() == "text/html":
            content: str = part.get_content()
            return content
    raise AssertionError("no text/html part")


def assert_filtered(received: Received, label: dict[str, Any]) -> None:
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Message-ID"] == label["message_id"]
    body = html_part(received.data)
    for tracker in label["trackers"]:
        url = tracker["url"]
        assert url not in body and html.escape(url) not in body, f"tracker kept: {url}"
    # The content images (not the tricky decoys, which the detection tests judge) are kept:
    # the message was filtered, not emptied.
    for decoy in label["decoys"]:
        if not decoy["hard"]:
            assert decoy["element"] in body, f"content image lost: {decoy['url']}"


def assert_unfiltered(received: Received, label: dict[str, Any]) -> None:
    body = html_part(received.data)
    for tracker in label["trackers"]:
        assert tracker["element"] in body


# --- Postfix alone ----------------------------------------------------------------------------


async def test_private_postfix_relays_to_sink(
    postfix: Postfixes, corpus_dir: Path, label: dict[str, Any]
) -> None:
    """The harness itself: app -> Postfix -> sink, the message unchanged but for Received."""
    sink = await Sink().start()
    try:
        mta = await postfix.start(listen_port=free_port(), relayhost=f"[127.0.0.1]:{sink.port}")
        data = (corpus_dir / CORPUS_MESSAGE).read_bytes()
        code, reply = await asend(mta.listen_port, data, [label["rcpt"]])
        assert code == 250, reply
        await wait_received(sink, [mta])
        received = sink.handler.received[0]
        assert received.rcpt_tos == [label["rcpt"]]
        assert received.data.endswith(data)
        assert_unfiltered(received, label)
        line = await asyncio.to_thread(mta.wait_for_log, r"status=sent", 10)
        assert f"relay=127.0.0.1[127.0.0.1]:{sink.port}" in line
    finally:
        await asyncio.to_thread(postfix.stop_all)
        await sink.stop()


class _XforwardSMTP(SMTP):
    """aiosmtpd's server plus the XFORWARD command (attributes kept for the next DATA)."""

    def __init__(self, handler: XforwardFilter, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.filter = handler
        self.xforward: list[str] = []

    async def smtp_XFORWARD(self, arg: str) -> None:
        # Postfix may split the attributes over several commands; keep them all.
        self.filter.seen.append(arg)
        self.xforward.append(arg)
        await self.push("250 2.0.0 Ok")


class XforwardFilter:
    """The least a content filter does to pass XFORWARD through: announce it, replay it.

    A reference for the relay (docs/postfix.md): Postfix's ``scan`` transport sends
    ``XFORWARD NAME=... ADDR=... PROTO=... HELO=...`` after EHLO when the filter announces
    ``XFORWARD`` in its EHLO reply; the filter sends the same attributes, before MAIL FROM, to
    the re-injection smtpd, which then logs and records the original client.
    """

    ATTRIBUTES = "NAME ADDR PORT PROTO HELO IDENT SOURCE"

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.seen: list[str] = []
        self.server: asyncio.Server | None = None

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], f"250-XFORWARD {self.ATTRIBUTES}", responses[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content
        assert isinstance(content, bytes)
        forwarded = server.xforward if isinstance(server, _XforwardSMTP) else []
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.upstream_port, timeout=10)
        async with client:
            await client.ehlo(hostname="filter.test")
            for attributes in forwarded:
                reply = await client.execute_command(b"XFORWARD", attributes.encode())
                assert reply.code == 250, reply
            await client.sendmail(envelope.mail_from or "", envelope.rcpt_tos, content)
        return "250 2.0.0 filtered"

    async def start(self) -> XforwardFilter:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _XforwardSMTP(self, decode_data=False, hostname="filter.test"),
            "127.0.0.1",
            self.port,
        )
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_content_filter_recipe_passes_xforward(
    postfix: Postfixes, corpus_dir: Path, label: dict[str, Any]
) -> None:
    """The content_filter plumbing with a minimal filter: XFORWARD reaches re-injection."""
    sink = await Sink().start()
    reinjection = free_port()
    filt = await XforwardFilter(reinjection).start()
    try:
        mta = await postfix.start(
            listen_port=free_port(),
            relayhost=f"[127.0.0.1]:{sink.port}",
            content_filter=f"scan:[127.0.0.1]:{filt.port}",
            reinjection_port=reinjection,
        )
        data = (corpus_dir / CORPUS_MESSAGE).read_bytes()
        code, reply = await asend(mta.listen_port, data, [label["rcpt"]])
        assert code == 250, reply
        await wait_received(sink, [mta])
        assert any("HELO=app.test" in arg for arg in filt.seen), filt.seen
        # The re-injection smtpd records the original client (XFORWARD), not the filter.
        line = await asyncio.to_thread(
            mta.wait_for_log, r"postfix/reinject/smtpd.*orig_client=", 10
        )
        assert "orig_queue_id=" in line
        assert b"from app.test" in sink.handler.received[0].data.split(b"\r\n\r\n")[0]
    finally:
        await asyncio.to_thread(postfix.stop_all)
        await filt.stop()
        await sink.stop()


# --- Postfix with consent-relay ---------------------------------------------------------------


async def test_smarthost_placement_filters(
    postfix: Postfixes,
    corpus_dir: Path,
    label: dict[str, Any],
    redis_url: str,
    tmp_path: Path,
) -> None:
    """apps -> Postfix (relayhost = the relay) -> consent-relay -> upstream sink."""
    sink = await Sink().start()
    settings = make_settings(tmp_path, redis_url, sink.url)
    running = await start_relay(settings, redis_url)
    try:
        relay_port = int(settings.smtp.listen.rsplit(":", 1)[1])
        mta = await postfix.start(listen_port=free_port(), relayhost=f"[127.0.0.1]:{relay_port}")
        data = (corpus_dir / CORPUS_MESSAGE).read_bytes()
        code, reply = await asend(mta.listen_port, data, [label["rcpt"]])
        assert code == 250, reply
        await wait_received(sink, [mta])
        received = sink.handler.received[0]
        assert received.rcpt_tos == [label["rcpt"]]
        assert_filtered(received, label)
        line = await asyncio.to_thread(mta.wait_for_log, r"status=sent", 10)
        assert f":{relay_port}," in line
    finally:
        await asyncio.to_thread(postfix.stop_all)
        await running.stop()
        await sink.stop()


async def test_content_filter_placement_filters(
    postfix: Postfixes,
    corpus_dir: Path,
    label: dict[str, Any],
    redis_url: str,
    tmp_path: Path,
) -> None:
    """Postfix -> consent-relay (content_filter) -> Postfix re-injection -> final sink."""
    sink = await Sink().start()
    reinjection = free_port()
    settings = make_settings(tmp_path, redis_url, f"smtp://127.0.0.1:{reinjection}")
    running = await start_relay(settings, redis_url)
    try:
        relay_port = int(settings.smtp.listen.rsplit(":", 1)[1])
        mta = await postfix.start(
            listen_port=free_port(),
            relayhost=f"[127.0.0.1]:{sink.port}",
            content_filter=f"scan:[127.0.0.1]:{relay_port}",
            reinjection_port=reinjection,
        )
        data = (corpus_dir / CORPUS_MESSAGE).read_bytes()
        code, reply = await asend(mta.listen_port, data, [label["rcpt"]])
        assert code == 250, reply
        await wait_received(sink, [mta])
        received = sink.handler.received[0]
        assert received.rcpt_tos == [label["rcpt"]]
        assert_filtered(received, label)
        # Two deliveries in Postfix's log: to the filter, then (after re-injection) to the sink.
        await asyncio.to_thread(mta.wait_for_log, rf"postfix/scan.*:{relay_port},.*status=sent")
        await asyncio.to_thread(mta.wait_for_log, rf":{sink.port},.*status=sent")
        assert mta.log_lines(r"postfix/reinject/smtpd.*client=")
    finally:
        await asyncio.to_thread(postfix.stop_all)
        await running.stop()
        await sink.stop()


async def test_content_filter_placement_passes_xforward(
    postfix: Postfixes,
    corpus_dir: Path,
    label: dict[str, Any],
    redis_url: str,
    tmp_path: Path,
) -> None:
    """With the relay as content filter, Postfix's re-injection logs the original client."""
    sink = await Sink().start()
    reinjection = free_port()
    settings = make_settings(tmp_path, redis_url, f"smtp://127.0.0.1:{reinjection}")
    running = await start_relay(settings, redis_url)
    try:
        relay_port = int(settings.smtp.listen.rsplit(":", 1)[1])
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay_port, timeout=10)
        async with client:
            await client.ehlo(hostname="probe.test")
            assert client.supports_extension("xforward")
        mta = await postfix.start(
            listen_port=free_port(),
            relayhost=f"[127.0.0.1]:{sink.port}",
            content_filter=f"scan:[127.0.0.1]:{relay_port}",
            reinjection_port=reinjection,
        )
        data = (corpus_dir / CORPUS_MESSAGE).read_bytes()
        code, reply = await asend(mta.listen_port, data, [label["rcpt"]])
        assert code == 250, reply
        await wait_received(sink, [mta])
        line = await asyncio.to_thread(
            mta.wait_for_log, r"postfix/reinject/smtpd.*orig_client=", 10
        )
        assert "orig_queue_id=" in line
    finally:
        await asyncio.to_thread(postfix.stop_all)
        await running.stop()
        await sink.stop()


# --- DSN requests through Postfix (issue 14.3) ------------------------------------------------


def _submit_with_dsn(port: int, data: bytes) -> None:
    """An application asking Postfix for no notice about bob, failures only about carol."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("app.test")
        client.mail("app@shop.example", ["RET=HDRS", "ENVID=App+2BEnv1"])
        for rcpt, options in (
            ("alice@example.org", []),
            ("bob@example.org", ["NOTIFY=NEVER"]),
            ("carol@example.org", ["NOTIFY=FAILURE"]),
        ):
            code, text = client.rcpt(rcpt, options)
            assert code == 250, text
        code, text = client.data(data)
        assert code == 250, text


def _bounces(sink: Sink) -> list[Received]:
    return [r for r in sink.handler.received if r.mail_from == ""]


async def test_smarthost_placement_honours_notify_in_the_relays_own_notices(
    postfix: Postfixes, corpus_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """Postfix passes NOTIFY/ORCPT/ENVID to a relay that announces DSN; bob and carol are refused
    by the relay's upstream after the relay accepted them: only carol's notice is sent."""
    sink = await Sink().start()
    for rcpt in ("bob@example.org", "carol@example.org"):
        sink.handler.faults.rcpt_replies[rcpt] = "550 5.1.1 no such user"
    settings = make_settings(tmp_path, redis_url, sink.url)
    running = await start_relay(settings, redis_url)
    try:
        relay_port = int(settings.smtp.listen.rsplit(":", 1)[1])
        mta = await postfix.start(listen_port=free_port(), relayhost=f"[127.0.0.1]:{relay_port}")
        data = (corpus_dir / CORPUS_MESSAGE).read_bytes()
        await asyncio.to_thread(_submit_with_dsn, mta.listen_port, data)
        await wait_received(sink, [mta], count=2)  # alice's copy and one notice
        await asyncio.to_thread(mta.wait_for_log, r"to=<alice@example.org>.*status=sent", 10)
        await asyncio.sleep(1.0)  # a notice for bob would have come with carol's
        [notice] = _bounces(sink)
        assert notice.rcpt_tos == ["app@shop.example"]
        assert b"Final-Recipient: rfc822; carol@example.org" in notice.data
        assert b"Original-Recipient: rfc822; carol@example.org" in notice.data  # Postfix's ORCPT
        assert b"Original-Envelope-Id: App+Env1" in notice.data
        assert b"bob@example.org" not in notice.data
    finally:
        await asyncio.to_thread(postfix.stop_all)
        await running.stop()
        await sink.stop()


async def test_content_filter_placement_accepts_postfix_dsn_parameters(
    postfix: Postfixes, corpus_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """Postfix's scan transport sends NOTIFY/ORCPT/RET/ENVID to a filter that announces DSN;
    the relay takes them (aiosmtpd answered 555 and Postfix deferred or dropped them) and the
    message is delivered on the first attempt."""
    sink = await Sink().start()
    reinjection = free_port()
    settings = make_settings(tmp_path, redis_url, f"smtp://127.0.0.1:{reinjection}")
    running = await start_relay(settings, redis_url)
    seen: list[Any] = []
    process = running.smtp.handler.process

    async def recording(raw: bytes, envelope: Any, relay_id: str) -> Any:
        seen.append(envelope)
        return await process(raw, envelope, relay_id)

    running.smtp.handler.process = recording
    try:
        relay_port = int(settings.smtp.listen.rsplit(":", 1)[1])
        mta = await postfix.start(
            listen_port=free_port(),
            relayhost=f"[127.0.0.1]:{sink.port}",
            content_filter=f"scan:[127.0.0.1]:{relay_port}",
            reinjection_port=reinjection,
        )
        data = (corpus_dir / CORPUS_MESSAGE).read_bytes()
        await asyncio.to_thread(_submit_with_dsn, mta.listen_port, data)
        await wait_received(sink, [mta], count=1)
        [envelope] = seen
        assert "ENVID=App+2BEnv1" in envelope.mail_options
        by_rcpt = dict(zip(envelope.rcpt_tos, envelope.rcpt_options, strict=True))
        assert "NOTIFY=NEVER" in by_rcpt["bob@example.org"]
        assert any(o.upper().startswith("ORCPT=RFC822;") for o in by_rcpt["alice@example.org"])
    finally:
        await asyncio.to_thread(postfix.stop_all)
        await running.stop()
        await sink.stop()


async def test_content_filter_placement_keeps_notify_never_end_to_end(
    postfix: Postfixes, corpus_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    """Issue 14.3's case: after re-injection the final server refuses bob, who asked
    NOTIFY=NEVER: Postfix must not bounce (it would if the relay dropped the parameter)."""
    sink = await Sink().start()
    sink.handler.faults.rcpt_replies["bob@example.org"] = "550 5.1.1 no such user"
    reinjection = free_port()
    settings = make_settings(tmp_path, redis_url, f"smtp://127.0.0.1:{reinjection}")
    running = await start_relay(settings, redis_url)
    try:
        relay_port = int(settings.smtp.listen.rsplit(":", 1)[1])
        mta = await postfix.start(
            listen_port=free_port(),
            relayhost=f"[127.0.0.1]:{sink.port}",
            content_filter=f"scan:[127.0.0.1]:{relay_port}",
            reinjection_port=reinjection,
        )
        data = (corpus_dir / CORPUS_MESSAGE).read_bytes()
        await asyncio.to_thread(_submit_with_dsn, mta.listen_port, data)
        await wait_received(sink, [mta], count=1)
        await asyncio.to_thread(mta.wait_for_log, r"to=<bob@example.org>.*status=bounced", 20)
        await asyncio.sleep(2.0)
        assert _bounces(sink) == []
    finally:
        await asyncio.to_thread(postfix.stop_all)
        await running.stop()
        await sink.stop()
