"""TLS and AUTH towards the upstream: what each ``[upstream] tls`` level means (issue 14.7).

The upstream here offers a self-signed certificate, the common case for an internal relay.
``opportunistic`` (Postfix ``may``) must deliver over encryption without verifying;
``required`` with ``verify = true`` must refuse it unless ``ca_file`` trusts it; every
problem is logged once per upstream, not once per message.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.outbound.forward import SmtpUpstream
from relay.settings import UpstreamSettings
from tests.inbound.test_transport import cert  # noqa: F401 - the fixture is used by name
from tests.support.raw_sink import RawSink
from tests.support.smtp_sink import Sink, SinkHandler
from tests.support.tls import Cert

pytestmark = pytest.mark.timeout(30)

DATA = b"From: a@shop.example\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhello\r\n"


def server_context(cert: Cert) -> ssl.SSLContext:  # noqa: F811
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    return context


@pytest.fixture
async def starttls(cert: Cert) -> AsyncIterator[RawSink]:  # noqa: F811
    sink = await RawSink(tls=server_context(cert)).start()
    yield sink
    await sink.stop()


@pytest.fixture
async def smtps(cert: Cert) -> AsyncIterator[RawSink]:  # noqa: F811
    sink = await RawSink(tls=server_context(cert), implicit_tls=True).start()
    yield sink
    await sink.stop()


def upstream(sink: RawSink, **kw: object) -> SmtpUpstream:
    return SmtpUpstream(UpstreamSettings(url=sink.url, timeout=3.0, **kw))  # type: ignore[arg-type]


async def send_three(up: SmtpUpstream) -> list[bool]:
    results = []
    for n in range(3):
        outcome = await up.send("a@shop.example", [f"b{n}@example.org"], DATA, [])
        results.append(bool(outcome.accepted()))
    await up.close()
    return results


async def test_opportunistic_delivers_encrypted_to_a_self_signed_upstream(
    starttls: RawSink, caplog: pytest.LogCaptureFixture
) -> None:
    """Today's default (opportunistic + verify = true) answered 451 forever to this upstream."""
    with caplog.at_level(logging.INFO, logger="relay.outbound"):
        assert await send_three(upstream(starttls)) == [True, True, True]
    assert [s.tls for s in starttls.sessions] == [True]
    said = [r.getMessage() for r in caplog.records if "certificate not verified" in r.getMessage()]
    assert len(said) == 1 and "STARTTLS TLSv1" in said[0]


async def test_required_with_verify_refuses_an_untrusted_certificate_logged_once(
    starttls: RawSink, caplog: pytest.LogCaptureFixture
) -> None:
    up = upstream(starttls, tls="required")
    with caplog.at_level(logging.WARNING, logger="relay.outbound"):
        outcome = await up.send("a@shop.example", ["b@example.org"], DATA, [])
        assert await send_three(up) == [False, False, False]
    assert outcome.deferred() == ["b@example.org"]
    assert outcome.replies["b@example.org"].text.startswith("451 4.7.5")
    assert "certificate not verified" in outcome.replies["b@example.org"].text
    assert starttls.transactions == []
    assert len([r for r in caplog.records if "certificate" in r.getMessage()]) == 1


async def test_required_with_the_upstreams_ca_delivers(starttls: RawSink, cert: Cert) -> None:  # noqa: F811
    up = upstream(starttls, tls="required", ca_file=str(cert.cert))
    assert await send_three(up) == [True, True, True]
    assert all(s.tls for s in starttls.sessions)


async def test_required_without_verify_encrypts_only(starttls: RawSink) -> None:
    assert await send_three(upstream(starttls, tls="required", verify=False)) == [True] * 3


async def test_required_defers_when_starttls_is_not_offered() -> None:
    sink = await RawSink().start()
    try:
        up = upstream(sink, tls="required")
        outcome = await up.send("a@shop.example", ["b@example.org"], DATA, [])
        await up.close()
    finally:
        await sink.stop()
    assert outcome.replies["b@example.org"].text.startswith("451 4.7.4")
    assert sink.transactions == []


async def test_opportunistic_falls_back_to_plaintext_when_the_handshake_fails(
    cert: Cert,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = RawSink(tls=server_context(cert))
    sink.broken_tls = True
    await sink.start()
    try:
        with caplog.at_level(logging.WARNING, logger="relay.outbound"):
            assert await send_three(upstream(sink)) == [True, True, True]
    finally:
        await sink.stop()
    assert [s.tls for s in sink.sessions] == [False, False]  # the failed one, then plaintext
    assert len([r for r in caplog.records if "plaintext" in r.getMessage()]) == 1


async def test_smtps_is_verified_like_required(smtps: RawSink, cert: Cert) -> None:  # noqa: F811
    refused = await upstream(smtps).send("a@shop.example", ["b@example.org"], DATA, [])
    assert refused.replies["b@example.org"].text.startswith("451 4.7.5")
    assert await send_three(upstream(smtps, ca_file=str(cert.cert))) == [True, True, True]
    assert await send_three(upstream(smtps, verify=False)) == [True, True, True]
    assert smtps.transactions and all(s.tls for s in smtps.sessions[1:])


async def test_auth_plain_over_tls_and_the_password_is_never_logged(
    cert: Cert,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = await RawSink(tls=server_context(cert), users={"relay": "s3cret-pw"}).start()
    try:
        good = upstream(sink, username="relay", password="s3cret-pw")
        bad = upstream(sink, username="relay", password="wrong-pw")
        with caplog.at_level(logging.DEBUG):
            assert await send_three(good) == [True, True, True]
            assert await send_three(bad) == [False, False, False]
    finally:
        await sink.stop()
    assert [s.auth_user for s in sink.sessions if s.transactions] == ["relay"]
    assert "s3cret-pw" not in caplog.text and "wrong-pw" not in caplog.text
    assert len([r for r in caplog.records if "AUTH PLAIN refused" in r.getMessage()]) == 1


async def test_credentials_are_never_sent_in_clear_unless_tls_none() -> None:
    sink = await RawSink(users={"relay": "pw"}).start()
    try:
        refused = await upstream(sink, username="relay", password="pw").send(
            "a@shop.example", ["b@example.org"], DATA, []
        )
        allowed = upstream(sink, username="relay", password="pw", tls="none")
        assert await send_three(allowed) == [True, True, True]
    finally:
        await sink.stop()
    assert refused.replies["b@example.org"].text.startswith("451 4.7.0")
    assert not any(line.startswith(b"AUTH") for line in sink.sessions[0].lines)
    assert sink.sessions[-1].auth_user == "relay"


async def test_auth_login_through_the_url(cert: Cert) -> None:  # noqa: F811
    sink = RawSink(tls=server_context(cert), users={"app@shop": "p@ss:w/rd"})
    sink.users = {"app@shop": "p@ss:w/rd"}
    await sink.start()
    try:
        url = f"smtp://app%40shop:p%40ss%3Aw%2Frd@127.0.0.1:{sink.port}"
        up = SmtpUpstream(UpstreamSettings(url=url, timeout=3.0, tls="required", verify=False))
        assert await send_three(up) == [True, True, True]
    finally:
        await sink.stop()
    assert sink.sessions[0].auth_user == "app@shop"


# --- against aiosmtpd, a server we did not write ---------------------------------------------


class TlsRecordingHandler(SinkHandler):
    def __init__(self) -> None:
        super().__init__()
        self.encrypted: list[bool] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.encrypted.append(session.ssl is not None)
        return await super().handle_DATA(server, session, envelope)


class TlsSink(Sink):
    """The aiosmtpd sink, offering STARTTLS with the test certificate and requiring it."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self.recorder = TlsRecordingHandler()
        self.handler = self.recorder
        self.context = context

    async def start(self) -> TlsSink:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(
                self.handler,
                decode_data=False,
                hostname="sink.test",
                tls_context=self.context,
                require_starttls=True,
            ),
            "127.0.0.1",
            self.port,
        )
        return self


async def test_starttls_with_aiosmtpd(cert: Cert) -> None:  # noqa: F811
    sink = await TlsSink(server_context(cert)).start()
    try:
        up = SmtpUpstream(UpstreamSettings(url=sink.url, tls="required", ca_file=str(cert.cert)))
        outcome = await up.send("a@shop.example", ["b@example.org"], DATA, [])
        await up.close()
    finally:
        await sink.stop()
    assert outcome.accepted() == ["b@example.org"]
    assert sink.recorder.encrypted == [True]
