"""TLS towards the upstream: STARTTLS required, and certificates verified unless told not to."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.outbound.forward import SmtpUpstream
from relay.settings import UpstreamSettings
from tests.inbound.test_transport import Cert, cert  # noqa: F401 - the fixture is used by name
from tests.support.smtp_sink import Sink, SinkHandler

DATA = b"From: a@shop.example\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhello\r\n"


class TlsRecordingHandler(SinkHandler):
    def __init__(self) -> None:
        super().__init__()
        self.encrypted: list[bool] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.encrypted.append(session.ssl is not None)
        return await super().handle_DATA(server, session, envelope)


class TlsSink(Sink):
    """The sink, offering STARTTLS with the test certificate and requiring it."""

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


@pytest.fixture
async def tls_sink(cert: Cert) -> AsyncIterator[TlsSink]:  # noqa: F811
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    sink = await TlsSink(context).start()
    yield sink
    await sink.stop()


async def test_required_starttls_delivers_encrypted(tls_sink: TlsSink) -> None:
    upstream = SmtpUpstream(UpstreamSettings(url=tls_sink.url, tls="required", verify=False))
    outcome = await upstream.send("a@shop.example", ["b@example.org"], DATA, [])
    await upstream.close()
    assert outcome.accepted() == ["b@example.org"]
    assert tls_sink.recorder.encrypted == [True]


async def test_certificates_are_verified_by_default(tls_sink: TlsSink) -> None:
    """The sink's self-signed certificate is trusted by nobody: the relay defers, it does not
    send the message in clear or to an unverified server."""
    upstream = SmtpUpstream(UpstreamSettings(url=tls_sink.url, tls="required"))
    outcome = await upstream.send("a@shop.example", ["b@example.org"], DATA, [])
    await upstream.close()
    assert outcome.deferred() == ["b@example.org"]
    assert tls_sink.handler.received == []
