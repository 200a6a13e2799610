"""Transport security on the SMTP listener, with real clients: STARTTLS and implicit TLS with a
certificate made here, AUTH PLAIN/LOGIN against scrypt hashes, PROXY protocol v1/v2 headers
written on a raw socket, per-client rate limits, and XFORWARD in and out (Postfix placement).

Most tests run the real listener (``SmtpServer``) with a recording processor instead of the
pipeline, so that they show what the SMTP edge hands over (``Envelope``); one test per feature
goes through a whole relay (``start_relay``) to a real upstream sink.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from relay import replies
from relay.errors import SettingsError
from relay.inbound.listener import SmtpServer
from relay.inbound.receive import RelayHandler
from relay.model import Envelope as RelayEnvelope
from relay.outbound.forward import SmtpUpstream
from relay.passwords import hash_password
from relay.pipeline import Outcome
from relay.settings import Settings, UpstreamSettings
from relay.store.embedded import free_port
from tests.support.harness import HTML_WITH_PIXEL, asend, make_settings, message, start_relay
from tests.support.smtp_sink import Sink, SinkHandler
from tests.support.tls import Cert, self_signed

pytestmark = pytest.mark.timeout(60)

USER = "app"
PASSWORD = "correct horse battery staple"
# A cheap scrypt cost for tests (the format and the code path are the same as the default).
HASH = hash_password(PASSWORD, n=2**10)
ELSEWHERE = ["192.0.2.0/24"]  # allowed_clients that do not include the test's loopback


# --- certificates --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return self_signed(tmp_path_factory.mktemp("tls"))


def tls_section(cert: Cert, implicit: bool = False) -> dict[str, str]:
    section = {"cert": str(cert.cert), "key": str(cert.key)}
    if implicit:
        section["implicit_listen"] = f"127.0.0.1:{free_port()}"
    return section


# --- a listener with a recording processor -------------------------------------------------------


class Recorder:
    """Stands in for the pipeline: records each envelope and answers 250."""

    def __init__(self) -> None:
        self.envelopes: list[RelayEnvelope] = []

    async def __call__(self, raw: bytes, envelope: RelayEnvelope, relay_id: str) -> Outcome:
        self.envelopes.append(envelope)
        return Outcome(replies.OK_QUEUED, None, {})


Listen = Callable[..., Awaitable[tuple[SmtpServer, Recorder]]]


@pytest.fixture
async def listen(tmp_path: Path) -> AsyncIterator[Listen]:
    servers: list[SmtpServer] = []

    async def start(**smtp: object) -> tuple[SmtpServer, Recorder]:
        settings = make_settings(tmp_path, "redis://unused", "file:./unused", smtp=smtp)
        recorder = Recorder()
        server = SmtpServer(settings, RelayHandler(settings, recorder))
        await server.start()
        servers.append(server)
        return server, recorder

    yield start
    for server in servers:
        await server.stop(grace=0)


def submit(client: smtplib.SMTP, rcpt: str = "alice@example.org") -> tuple[int, bytes]:
    """MAIL, RCPT, DATA on an open session; the first non-2xx reply, or DATA's."""
    code, text = client.mail("app@shop.example")
    if code != 250:
        return code, text
    code, text = client.rcpt(rcpt)
    if code != 250:
        return code, text
    return client.data(message("<p>hi</p>"))


# --- STARTTLS and AUTH ---------------------------------------------------------------------------


async def test_starttls_then_auth_lets_a_client_relay_from_anywhere(
    listen: Listen, cert: Cert
) -> None:
    server, recorder = await listen(
        allowed_clients=ELSEWHERE, tls=tls_section(cert), auth={"users": {USER: HASH}}
    )

    def session() -> tuple[set[str], set[str], tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.ehlo("app.test")
            before = set(client.esmtp_features)
            refused = client.docmd("AUTH", "PLAIN AGFwcABzZWNyZXQ=")  # before TLS
            client.starttls(context=cert.client_context())
            client.ehlo("app.test")
            after = set(client.esmtp_features)
            client.login(USER, PASSWORD)
            return before, after, refused, submit(client)

    before, after, refused, (code, _text) = await asyncio.to_thread(session)
    assert "starttls" in before and "auth" not in before
    assert refused[0] == 538  # AUTH only over TLS
    assert "auth" in after and "starttls" not in after
    assert code == 250
    assert recorder.envelopes[0].auth_user == USER
    assert recorder.envelopes[0].client_ip == "127.0.0.1"


async def test_without_auth_a_client_outside_allowed_clients_is_refused(
    listen: Listen, cert: Cert
) -> None:
    server, recorder = await listen(
        allowed_clients=ELSEWHERE, tls=tls_section(cert), auth={"users": {USER: HASH}}
    )

    def session() -> tuple[tuple[int, int], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.ehlo("app.test")
            client.starttls(context=cert.client_context())
            client.ehlo("app.test")
            with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
                client.login(USER, "wrong password")
            with pytest.raises(smtplib.SMTPAuthenticationError) as unknown:
                client.login("nobody", PASSWORD)
            return (wrong.value.smtp_code, unknown.value.smtp_code), submit(client)

    codes, (code, text) = await asyncio.to_thread(session)
    assert codes == (535, 535)
    assert code == 554 and replies.RELAY_DENIED.id.encode() in text
    assert recorder.envelopes == []


async def test_auth_login_mechanism_works_too(listen: Listen, cert: Cert) -> None:
    server, recorder = await listen(
        allowed_clients=ELSEWHERE, tls=tls_section(cert), auth={"users": {USER: HASH}}
    )

    def session() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.ehlo("app.test")
            client.starttls(context=cert.client_context())
            client.ehlo("app.test")
            client.user, client.password = USER, PASSWORD
            client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            return submit(client)

    code, _ = await asyncio.to_thread(session)
    assert code == 250
    assert recorder.envelopes[0].auth_user == USER


async def test_tls_without_users_offers_no_auth(listen: Listen, cert: Cert) -> None:
    server, _ = await listen(tls=tls_section(cert))

    def session() -> tuple[set[str], int]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.ehlo("app.test")
            client.starttls(context=cert.client_context())
            client.ehlo("app.test")
            code, _ = client.docmd("AUTH", "PLAIN AGFwcABzZWNyZXQ=")
            return set(client.esmtp_features), code

    features, code = await asyncio.to_thread(session)
    assert "auth" not in features
    assert code == 504


async def test_implicit_tls_listener_accepts_auth_and_mail(listen: Listen, cert: Cert) -> None:
    server, recorder = await listen(
        allowed_clients=ELSEWHERE,
        tls=tls_section(cert, implicit=True),
        auth={"users": {USER: HASH}},
    )
    assert server.implicit_port is not None
    port = server.implicit_port

    def session() -> tuple[set[str], tuple[int, bytes]]:
        context = cert.client_context()
        with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=context) as client:
            client.ehlo("app.test")
            features = set(client.esmtp_features)
            client.login(USER, PASSWORD)
            return features, submit(client)

    features, (code, _) = await asyncio.to_thread(session)
    assert "auth" in features and "starttls" not in features
    assert code == 250
    assert recorder.envelopes[0].auth_user == USER


async def test_whole_relay_over_starttls_and_auth_reaches_the_upstream(
    tmp_path: Path, redis_url: str, cert: Cert
) -> None:
    sink = await Sink().start()
    settings = make_settings(
        tmp_path, redis_url, sink.url,
        smtp={"allowed_clients": ELSEWHERE, "tls": tls_section(cert),
              "auth": {"users": {USER: HASH}}},
    )  # fmt: skip
    running = await start_relay(settings, redis_url)
    try:

        def session() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=30) as client:
                client.ehlo("app.test")
                client.starttls(context=cert.client_context())
                client.login(USER, PASSWORD)
                client.mail("app@shop.example")
                client.rcpt("alice@example.org")
                return client.data(message(HTML_WITH_PIXEL))

        code, _ = await asyncio.to_thread(session)
        assert code == 250
        assert [r.rcpt_tos for r in sink.handler.received] == [["alice@example.org"]]
    finally:
        await running.stop()
        await sink.stop()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"cert": "/nonexistent/relay.crt"}, "smtp.tls.cert: cannot read /nonexistent/relay.crt"),
        ({"key": "/nonexistent/relay.key"}, "smtp.tls.key: cannot read"),
        ({"cert": "KEY"}, "smtp.tls.cert:"),  # the key file given as the certificate
        ({"key": "CERT"}, "smtp.tls.key:"),
    ],
)
async def test_bad_certificate_files_stop_start_up_naming_the_key(
    tmp_path: Path, cert: Cert, change: dict[str, str], key: str
) -> None:
    section = tls_section(cert)
    for name, value in change.items():
        section[name] = {"KEY": str(cert.key), "CERT": str(cert.cert)}.get(value, value)
    settings = make_settings(tmp_path, "redis://unused", "file:./unused", smtp={"tls": section})
    server = SmtpServer(settings, RelayHandler(settings, Recorder()))
    with pytest.raises(SettingsError, match=key):
        await server.start()
    assert server.server is None


async def test_a_key_that_does_not_match_the_certificate_names_the_key(
    tmp_path: Path, cert: Cert
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    wrong = tmp_path / "other.key"
    wrong.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    settings = make_settings(
        tmp_path, "redis://unused", "file:./unused",
        smtp={"tls": {"cert": str(cert.cert), "key": str(wrong)}},
    )  # fmt: skip
    with pytest.raises(SettingsError, match=r"smtp\.tls\.key: .* does not load with"):
        await SmtpServer(settings, RelayHandler(settings, Recorder())).start()


# --- PROXY protocol ------------------------------------------------------------------------------


class RawSession:
    """A blocking raw SMTP session (for headers smtplib cannot send)."""

    def __init__(self, port: int, preamble: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if preamble:
            self.sock.sendall(preamble)
        self.file = self.sock.makefile("rb")

    def reply(self) -> str:
        lines: list[str] = []
        while True:
            line = self.file.readline().decode()
            if not line:
                raise ConnectionError("closed: " + "".join(lines))
            lines.append(line)
            if line[3:4] != "-":
                return "".join(lines)

    def cmd(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def proxy_v2(src: str, dst: str, sport: int, dport: int) -> bytes:
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return signature + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def relay_through_proxy(port: int, header: bytes) -> list[str]:
    raw = RawSession(port, header)
    try:
        answers = [raw.reply(), raw.cmd("EHLO app.test"), raw.cmd("MAIL FROM:<app@shop.example>")]
        answers.append(raw.cmd("RCPT TO:<alice@example.org>"))
        raw.cmd("QUIT")
        return answers
    finally:
        raw.close()


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n",
        proxy_v2("203.0.113.9", "127.0.0.1", 40000, 25),
    ],
    ids=["v1", "v2"],
)
async def test_proxy_header_source_is_the_client_that_allowed_clients_checks(
    listen: Listen, header: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = await listen(
        proxy_protocol=True, proxy_from=["127.0.0.1/32"], allowed_clients=["203.0.113.0/24"]
    )
    answers = await asyncio.to_thread(relay_through_proxy, server.port, header)
    assert answers[0].startswith("220") and answers[3].startswith("250"), answers
    # The same client, seen through a balancer, from an address not in allowed_clients.
    caplog.set_level(logging.WARNING, logger="relay.inbound.receive")
    other = header.replace(b"203.0.113.9", b"198.51.100.7")
    if header.startswith(b"\r\n"):
        other = proxy_v2("198.51.100.7", "127.0.0.1", 40000, 25)
    answers = await asyncio.to_thread(relay_through_proxy, server.port, other)
    assert answers[3].startswith("554"), answers
    assert "relay attempt refused from 198.51.100.7" in caplog.text


async def test_proxy_client_address_reaches_the_envelope_and_the_rate_limit(
    listen: Listen,
) -> None:
    server, recorder = await listen(
        proxy_protocol=True, allowed_clients=["203.0.113.0/24"], rate_limit=1
    )

    def send_one(source: str) -> tuple[str, str]:
        raw = RawSession(server.port, f"PROXY TCP4 {source} 127.0.0.1 1234 25\r\n".encode())
        try:
            raw.reply()
            raw.cmd("EHLO app.test")
            mail = raw.cmd("MAIL FROM:<app@shop.example>")
            if not mail.startswith("250"):
                return mail, ""
            raw.cmd("RCPT TO:<alice@example.org>")
            raw.cmd("DATA")
            raw.sock.sendall(message("<p>x</p>") + b".\r\n")
            return mail, raw.reply()
        finally:
            raw.close()

    first = await asyncio.to_thread(send_one, "203.0.113.9")
    second = await asyncio.to_thread(send_one, "203.0.113.9")
    third = await asyncio.to_thread(send_one, "203.0.113.10")  # another client: its own bucket
    assert first[1].startswith("250") and third[1].startswith("250")
    assert second[0].startswith("451 4.7.0") and replies.RATE_LIMITED.id in second[0]
    assert [e.client_ip for e in recorder.envelopes] == ["203.0.113.9", "203.0.113.10"]


async def test_proxy_header_from_outside_proxy_from_is_disconnected(listen: Listen) -> None:
    server, _ = await listen(proxy_protocol=True, proxy_from=["192.0.2.1/32"])

    def attempt() -> str:
        raw = RawSession(server.port, b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n")
        try:
            return raw.reply()
        finally:
            raw.close()

    with pytest.raises(ConnectionError):
        await asyncio.to_thread(attempt)


async def test_without_proxy_protocol_a_proxy_line_is_just_a_bad_command(listen: Listen) -> None:
    server, _ = await listen(allowed_clients=ELSEWHERE)

    def session() -> list[str]:
        raw = RawSession(server.port, b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 25\r\n")
        try:
            out = [raw.reply(), raw.reply(), raw.cmd("EHLO app.test")]
            out.append(raw.cmd("MAIL FROM:<app@shop.example>"))
            out.append(raw.cmd("RCPT TO:<alice@example.org>"))
            return out
        finally:
            raw.close()

    answers = await asyncio.to_thread(session)
    # The PROXY line was answered as an unknown command: it cannot claim another address.
    assert answers[0].startswith("220") and answers[1].startswith("500"), answers
    assert answers[4].startswith("554"), answers


# --- rate limit ----------------------------------------------------------------------------------


async def test_rate_limit_answers_451_at_mail_then_recovers(listen: Listen) -> None:
    server, recorder = await listen(rate_limit=2)
    handler = server.handler

    def session() -> list[int]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.ehlo("app.test")
            return [submit(client)[0] for _ in range(3)]

    codes = await asyncio.to_thread(session)
    assert codes == [250, 250, 451]
    assert len(recorder.envelopes) == 2
    # A refill (time passing, simulated by the bucket's clock) lets the client go on.
    bucket = handler.limiter._buckets["127.0.0.1"]
    bucket.updated -= 30.0
    codes = await asyncio.to_thread(session)
    assert codes[0] == 250


# --- XFORWARD ------------------------------------------------------------------------------------

XFORWARD_IN = (
    "XFORWARD NAME=mail.app.example ADDR=192.0.2.7 PORT=40123 PROTO=ESMTP HELO=app.example"
)
XFORWARD_MORE = "XFORWARD SOURCE=REMOTE IDENT=1A2B+2BC"


async def test_xforward_is_announced_and_reaches_the_envelope_for_one_transaction(
    listen: Listen,
) -> None:
    server, recorder = await listen()

    def session() -> list[str]:
        raw = RawSession(server.port)
        try:
            out = [raw.reply(), raw.cmd("EHLO filter.test")]
            out += [raw.cmd(XFORWARD_IN), raw.cmd(XFORWARD_MORE)]
            for _ in range(2):
                out.append(raw.cmd("MAIL FROM:<app@shop.example>"))
                out.append(raw.cmd("XFORWARD NAME=late.example"))  # inside a transaction
                raw.cmd("RCPT TO:<alice@example.org>")
                raw.cmd("DATA")
                raw.sock.sendall(message("<p>x</p>") + b".\r\n")
                out.append(raw.reply())
            return out
        finally:
            raw.close()

    out = await asyncio.to_thread(session)
    assert "250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in out[1]
    assert out[2].startswith("250") and out[3].startswith("250")
    assert out[5].startswith("503")
    first, second = recorder.envelopes
    assert first.xforward == (
        ("NAME", "mail.app.example"),
        ("ADDR", "192.0.2.7"),
        ("PORT", "40123"),
        ("PROTO", "ESMTP"),
        ("HELO", "app.example"),
        ("SOURCE", "REMOTE"),
        ("IDENT", "1A2B+C"),  # xtext-decoded
    )
    assert first.client_ip == "127.0.0.1"  # the filter's own address stays the client
    assert second.xforward == ()  # forgotten at the end of the transaction


async def test_xforward_is_reset_by_rset_and_checked_for_syntax(listen: Listen) -> None:
    server, recorder = await listen()

    def session() -> list[str]:
        raw = RawSession(server.port)
        try:
            out = [raw.reply(), raw.cmd("EHLO filter.test"), raw.cmd(XFORWARD_IN)]
            out.append(raw.cmd("RSET"))
            out.append(raw.cmd("XFORWARD COLOUR=blue"))
            out.append(raw.cmd("XFORWARD ADDR=not-an-address"))
            out.append(raw.cmd("MAIL FROM:<app@shop.example>"))
            raw.cmd("RCPT TO:<alice@example.org>")
            raw.cmd("DATA")
            raw.sock.sendall(message("<p>x</p>") + b".\r\n")
            out.append(raw.reply())
            return out
        finally:
            raw.close()

    out = await asyncio.to_thread(session)
    assert out[4].startswith("501") and out[5].startswith("501")
    assert out[7].startswith("250")
    assert recorder.envelopes[0].xforward == ()


async def test_xforward_is_neither_announced_nor_accepted_outside_allowed_clients(
    listen: Listen, cert: Cert
) -> None:
    server, _ = await listen(
        allowed_clients=ELSEWHERE, tls=tls_section(cert), auth={"users": {USER: HASH}}
    )

    def session() -> tuple[set[str], int]:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.ehlo("app.test")
            client.starttls(context=cert.client_context())
            client.login(USER, PASSWORD)  # authenticated, still not a trusted filter host
            code, _ = client.docmd("XFORWARD", "ADDR=192.0.2.7")
            return set(client.esmtp_features), code

    features, code = await asyncio.to_thread(session)
    assert "xforward" not in features
    assert code == 550


class _XforwardSinkSMTP(SMTP):
    def __init__(self, handler: XforwardSinkHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.recorder = handler

    async def smtp_XFORWARD(self, arg: str) -> None:
        self.recorder.xforward.append(arg)
        await self.push("250 2.0.0 Ok")


class XforwardSinkHandler(SinkHandler):
    """The upstream sink, announcing XFORWARD (only some names, like a picky Postfix)."""

    ANNOUNCED = "NAME ADDR PROTO HELO"

    def __init__(self) -> None:
        super().__init__()
        self.xforward: list[str] = []
        self.at_mail: list[list[str]] = []  # XFORWARD seen so far, at each MAIL

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], f"250-XFORWARD {self.ANNOUNCED}", responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.at_mail.append(list(self.xforward))
        return await super().handle_MAIL(server, session, envelope, address, options)


class XforwardSink(Sink):
    def __init__(self) -> None:
        super().__init__()
        self.handler: XforwardSinkHandler = XforwardSinkHandler()

    async def start(self) -> XforwardSink:
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            self.connections += 1
            proto = _XforwardSinkSMTP(self.handler, decode_data=False, hostname="sink.test")
            self.protocols.append(proto)
            return proto

        self.server = await loop.create_server(factory, "127.0.0.1", self.port)
        return self


async def test_upstream_gets_xforward_names_it_announced_before_each_mail() -> None:
    sink = await XforwardSink().start()
    upstream = SmtpUpstream(UpstreamSettings(url=sink.url, tls="none", timeout=5.0))
    attrs = (("NAME", "mail.app.example"), ("ADDR", "192.0.2.7"), ("PORT", "40123"),
             ("HELO", "app example"))  # fmt: skip
    try:
        rcpts = ["x@example.org"]
        first = await upstream.send("a@shop.example", rcpts, b"\r\n1\r\n", [], xforward=attrs)
        second = await upstream.send("a@shop.example", rcpts, b"\r\n2\r\n", [])
    finally:
        await upstream.close()
        await sink.stop()
    assert first.accepted() == ["x@example.org"] and second.accepted() == ["x@example.org"]
    assert sink.connections == 1  # the pooled connection carried both transactions
    # PORT was not announced; the space in HELO is xtext-encoded; nothing for the second mail.
    assert sink.handler.xforward == ["NAME=mail.app.example ADDR=192.0.2.7 HELO=app+20example"]
    assert sink.handler.at_mail == [sink.handler.xforward, sink.handler.xforward]


async def test_upstream_without_xforward_gets_none() -> None:
    sink = await Sink().start()
    upstream = SmtpUpstream(UpstreamSettings(url=sink.url, tls="none", timeout=5.0))
    try:
        outcome = await upstream.send(
            "a@shop.example", ["x@example.org"], b"Subject: 1\r\n\r\n1\r\n", [],
            xforward=(("ADDR", "192.0.2.7"),),
        )  # fmt: skip
    finally:
        await upstream.close()
        await sink.stop()
    assert outcome.accepted() == ["x@example.org"]


async def test_whole_relay_passes_xforward_from_its_client_to_its_upstream(
    tmp_path: Path, redis_url: str
) -> None:
    sink = await XforwardSink().start()
    settings: Settings = make_settings(tmp_path, redis_url, sink.url)
    running = await start_relay(settings, redis_url)
    try:

        def session() -> str:
            raw = RawSession(running.smtp_port)
            try:
                raw.reply()
                raw.cmd("EHLO filter.test")
                raw.cmd(XFORWARD_IN)
                raw.cmd("MAIL FROM:<app@shop.example>")
                raw.cmd("RCPT TO:<alice@example.org>")
                raw.cmd("DATA")
                raw.sock.sendall(message(HTML_WITH_PIXEL) + b".\r\n")
                return raw.reply()
            finally:
                raw.close()

        reply = await asyncio.to_thread(session)
        assert reply.startswith("250"), reply
        # A message without XFORWARD afterwards carries none.
        code, _ = await asend(running.smtp_port, message("<p>x</p>"), ["bob@example.org"])
        assert code == 250
    finally:
        await running.stop()
        await sink.stop()
    assert sink.handler.xforward == [
        "NAME=mail.app.example ADDR=192.0.2.7 PROTO=ESMTP HELO=app.example"
    ]


async def test_tls_reload_keeps_serving_and_refuses_a_broken_file(
    tmp_path: Path, cert: Cert
) -> None:
    cert_copy, key_copy = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_copy.write_bytes(cert.cert.read_bytes())
    key_copy.write_bytes(cert.key.read_bytes())
    settings = make_settings(
        tmp_path, "redis://unused", "file:./unused",
        smtp={"tls": {"cert": str(cert_copy), "key": str(key_copy)}},
    )  # fmt: skip
    server = SmtpServer(settings, RelayHandler(settings, Recorder()))
    await server.start()
    try:
        assert server.reload_tls()
        key_copy.write_text("garbage")
        assert not server.reload_tls()  # logged; the running certificate stays

        def handshake() -> set[str]:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
                client.starttls(context=cert.client_context())
                client.ehlo("app.test")
                return set(client.esmtp_features)

        assert "starttls" not in await asyncio.to_thread(handshake)
    finally:
        await server.stop(grace=0)
