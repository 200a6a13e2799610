"""SMTP in: the aiosmtpd handler and listener. The only place where errors become SMTP replies.

Rule 1: never an open relay: RCPT is refused (554 5.7.1) unless the client's address is in
        ``[smtp] allowed_clients`` or the session authenticated.
Rule 2: message bytes are never decoded here (``decode_data=False``); SIZE, 8BITMIME,
        SMTPUTF8 and PIPELINING are announced.
Rule 3: data that could smuggle a second message past a lenient upstream (a lone LF or CR
        around a dot line) is refused with 554 5.6.0; other bare LFs are normalised to CRLF,
        as Postfix does (``smtpd_forbid_bare_newline = normalize``).
Rule 4: any exception that is not a ``RelayError`` is answered with a named 4xx carrying a
        per-message id that is also logged, never aiosmtpd's default "500 Error".
Rule 5: aiosmtpd's session timer is not reset while DATA is read or while the handler works,
        so a slow upstream would make it close a connection whose message was already sent.
        The handler stops that timer for the time it processes a message and restarts it
        before answering.
Rule 6: after ``begin_shutdown`` new transactions get 421; messages in flight finish.
Rule 7: "the client" is the real one: with ``[smtp] proxy_protocol`` the source address of the
        PROXY header (accepted only from ``proxy_from``), else the TCP peer. It is what
        ``allowed_clients``, the rate limit, XFORWARD's ACL, the logs and the audit see.
Rule 8: AUTH (PLAIN, LOGIN) is offered only when users are configured and, with
        ``require_tls``, only over TLS (after STARTTLS, or on the implicit-TLS listener); the
        scrypt check runs in a thread, never in the event loop.
Rule 9: XFORWARD is announced to and accepted from ``allowed_clients`` only (an authenticated
        client may not rewrite who it is); its attributes last for one transaction.

The aiosmtpd protocol extensions these rules rely on (XFORWARD, threaded AUTH, the PROXY-aware
client address, the TLS context) are in ``smtpd.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import ssl
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import SMTP, LoginPassword, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from relay import replies
from relay.errors import RelayError, SettingsError
from relay.inbound import xforward
from relay.inbound.ratelimit import RateLimiter
from relay.inbound.smtpd import (
    RelaySession,
    RelaySMTP,
    client_address,
    ip_of,
    peer_host,
    server_tls_context,
)
from relay.model import Envelope
from relay.ops import metrics
from relay.passwords import UserTable
from relay.pipeline import Outcome
from relay.settings import Settings, split_hostport

log = logging.getLogger("relay.inbound.receive")

# <LF>.<LF>, <LF>.<CR><LF>, <CR><LF>.<LF>, <CR>.<CR> ...: the dot line of RFC 5321 written with
# a lone CR or LF on either side (the "SMTP smuggling" family, CVE-2023-51764 and relatives).
_SMUGGLING = re.compile(rb"(?:(?<!\r)\n|\r(?!\n))\.(?:\r\n|\n|\r)|\r\n\.(?:(?<!\r)\n|\r(?!\n))")
_BARE_LF = re.compile(rb"(?<!\r)\n")

NULL_SENDER = "<>"
# Seconds a connection may take to send its PROXY header (aiosmtpd warns below 3).
PROXY_TIMEOUT = 10.0

Processor = Callable[[bytes, Envelope, str], Awaitable[Outcome]]


def check_line_endings(data: bytes) -> bytes:
    """Refuse smuggling sequences, normalise lone LFs; raise RelayError(BARE_LF)."""
    # Nearly every message has only CRLF line endings: three C-speed counts prove it and
    # spare the two regular expressions, which cost 1.6 ms on a 67 KB message (profiled).
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:
        return data
    if _SMUGGLING.search(data):
        raise RelayError("smuggling sequence in DATA", replies.BARE_LF)
    if b"\n" in data and _BARE_LF.search(data):
        data = _BARE_LF.sub(b"\r\n", data)
    return data


class RelayHandler:
    """aiosmtpd hooks: policy at MAIL/RCPT, the pipeline at DATA."""

    def __init__(
        self,
        settings: Settings,
        process: Processor,
        acknowledged: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.process = process
        self.acknowledged = acknowledged
        self.allowed = [
            ipaddress.ip_network(n, strict=False) for n in settings.smtp.allowed_clients
        ]
        self.proxy_from = [ipaddress.ip_network(n, strict=False) for n in settings.smtp.proxy_from]
        self.users = UserTable(settings.smtp.auth.users)
        self.limiter = RateLimiter(settings.smtp.rate_limit)
        self.shutting_down = False
        self.in_flight: set[asyncio.Task[Any]] = set()

    def network_allowed(self, session: Session) -> bool:
        """The real client's address is in ``allowed_clients`` (authentication aside)."""
        address = ip_of(client_address(session))
        return address is not None and any(address in net for net in self.allowed)

    def client_allowed(self, session: Session) -> bool:
        if getattr(session, "authenticated", False):
            return True
        return self.network_allowed(session)

    async def handle_PROXY(
        self, server: SMTP, session: Session, envelope: SmtpEnvelope, proxy_data: ProxyData
    ) -> bool:
        """Accept a PROXY header only from ``proxy_from`` (a load balancer); else disconnect."""
        address = ip_of(peer_host(session))
        if address is None or not any(address in net for net in self.proxy_from):
            log.warning("PROXY header refused from %s: not in smtp.proxy_from", session.peer)
            return False
        return True

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        await self._client_saw_reply(session)
        # With an EHLO hook aiosmtpd leaves recording the name to the hook.
        session.host_name = hostname
        lines = [r for r in responses if self.users or not r.startswith("250-AUTH")]
        # aiosmtpd reads commands in order from one stream and the DATA reader leaves what
        # follows the message in it, so pipelined commands (RFC 2920) are served; say so.
        lines.insert(len(lines) - 1, "250-PIPELINING")
        if self.settings.smtp.xforward and self.network_allowed(session):
            lines.insert(len(lines) - 1, f"250-{xforward.ANNOUNCEMENT}")
        return lines

    async def verify_login(self, login: LoginPassword) -> bool:
        # Rule 8: scrypt is slow on purpose; keep it off the event loop.
        return await asyncio.to_thread(self.users.verify, login.login, login.password)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        await self._client_saw_reply(session)
        if self.shutting_down:
            return replies.SHUTTING_DOWN.text
        client = client_address(session)
        if not self.limiter.allow(client, time.monotonic()):
            wait = self.limiter.retry_after(client, time.monotonic())
            log.warning("rate limit: MAIL refused from %s (retry in %.0f s)", client, wait)
            return replies.RATE_LIMITED.text
        # aiosmtpd reads an empty sender as "no MAIL command yet" and would refuse RCPT with
        # 503; keep the null sender of bounces and notifications as "<>" inside the session.
        envelope.mail_from = address or NULL_SENDER
        envelope.mail_options.extend(mail_options)
        return replies.OK_SENDER.text

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.shutting_down:
            return replies.SHUTTING_DOWN.text
        if not self.client_allowed(session):
            log.warning("relay attempt refused from %s", client_address(session))
            return replies.RELAY_DENIED.text
        if "@" not in address or any(c in address for c in " <>\r\n"):
            return replies.BAD_ADDRESS.text
        if len(envelope.rcpt_tos) >= 1000:
            return replies.TOO_MANY_RECIPIENTS.text
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.OK_RCPT.text

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        relay_id = uuid.uuid4().hex[:12]
        # Rule 5: no session timeout while this message is being processed.
        handle = getattr(server, "_timeout_handle", None)
        if handle is not None:
            handle.cancel()
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        try:
            return await self._data(session, envelope, relay_id)
        finally:
            if task is not None:
                self.in_flight.discard(task)
            reset = getattr(server, "_reset_timeout", None)
            if reset is not None and server.transport is not None:
                reset()

    async def _data(self, session: Session, envelope: SmtpEnvelope, relay_id: str) -> str:
        raw = envelope.original_content
        if not isinstance(raw, bytes):
            return replies.TEMP_INTERNAL.text
        peer = client_address(session)
        attributes = session.xforward if isinstance(session, RelaySession) else {}
        try:
            data = check_line_endings(raw)
            ours = Envelope(
                mail_from="" if envelope.mail_from == NULL_SENDER else (envelope.mail_from or ""),
                rcpt_tos=tuple(envelope.rcpt_tos),
                mail_options=tuple(envelope.mail_options),
                client_ip=str(peer),
                helo=session.host_name or "",
                auth_user=_auth_user(session),
                xforward=tuple(attributes.items()),
            )
            outcome = await self.process(data, ours, relay_id)
            reply = outcome.reply
            if isinstance(session, RelaySession):
                session.settled_key = outcome.settled_key
        except RelayError as exc:
            reply = exc.reply
            log.info("[%s] refused: %s (%s)", relay_id, exc, reply.id)
        except Exception:
            log.exception("[%s] unexpected error; answered %s", relay_id, replies.TEMP_INTERNAL.id)
            reply = replies.TEMP_INTERNAL.with_detail(f"id {relay_id}")
        return reply.text

    async def _client_saw_reply(self, session: Session) -> None:
        """Any command after a 250 proves the client received it (ledger Rule 4)."""
        if isinstance(session, RelaySession) and session.settled_key:
            key, session.settled_key = session.settled_key, None
            if self.acknowledged is not None:
                await self.acknowledged(key)

    async def handle_RSET(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        await self._client_saw_reply(session)
        return "250 OK"

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: SmtpEnvelope, arg: str
    ) -> str:
        await self._client_saw_reply(session)
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        await self._client_saw_reply(session)
        return "221 Bye"

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd calls this for errors outside our hooks: a 4xx, never its default 500."""
        error_id = uuid.uuid4().hex[:12]
        log.error("session error %s: %r", error_id, error)
        return replies.TEMP_INTERNAL.with_detail(f"id {error_id}").text


def _auth_user(session: Session) -> str | None:
    data = getattr(session, "auth_data", None)
    login = getattr(data, "login", None)
    if isinstance(login, bytes):
        return login.decode("utf-8", "replace")
    return None


def smtp_factory(
    settings: Settings,
    handler: RelayHandler,
    tls_context: ssl.SSLContext | None = None,
    *,
    implicit_tls: bool = False,
) -> Callable[[], SMTP]:
    """Protocol factory for the plain listener (STARTTLS with ``tls_context``) or, with
    ``implicit_tls``, for the SMTPS listener (the transport is TLS already)."""
    hostname = settings.smtp.hostname or socket.getfqdn()
    smtp = settings.smtp
    excluded = [] if handler.users else ["LOGIN", "PLAIN"]

    def make() -> SMTP:
        return RelaySMTP(
            handler,
            data_size_limit=smtp.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="consent-relay",
            timeout=smtp.data_timeout,
            tls_context=None if implicit_tls else tls_context,
            # On the SMTPS listener aiosmtpd does not know the transport is TLS: the
            # requirement is met by construction there.
            auth_require_tls=smtp.auth.require_tls and not implicit_tls,
            auth_exclude_mechanism=excluded,
            # The PROXY header precedes the TLS handshake on the wire, which an SMTPS listener
            # (TLS from the first byte) cannot read: PROXY applies to the plain listener only.
            proxy_protocol_timeout=(
                PROXY_TIMEOUT if smtp.proxy_protocol and not implicit_tls else None
            ),
        )

    return make


def listening_socket(listen: str) -> socket.socket:
    """A TCP socket with SO_REUSEPORT, so several relay processes share one port."""
    host, port = split_hostport(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


class SmtpServer:
    """The listener: start, stop accepting, drain in-flight messages up to a deadline."""

    def __init__(self, settings: Settings, handler: RelayHandler) -> None:
        self.settings = settings
        self.handler = handler
        self.server: asyncio.Server | None = None
        self.implicit_server: asyncio.Server | None = None
        self.tls_context: ssl.SSLContext | None = None
        # Weak: a session's protocol object must go with its connection, not live as long as
        # the relay (a long-running relay serves millions of connections).
        self.protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def _tracked(self, factory: Callable[[], SMTP]) -> Callable[[], SMTP]:
        def make() -> SMTP:
            proto = factory()
            self.protocols.add(proto)
            metrics.SESSIONS.inc()
            return proto

        return make

    async def start(
        self, sock: socket.socket | None = None, implicit_sock: socket.socket | None = None
    ) -> None:
        """Listen on ``[smtp] listen`` and, when set, ``[smtp.tls] implicit_listen`` (SMTPS)."""
        self.tls_context = server_tls_context(self.settings)
        factory = smtp_factory(self.settings, self.handler, self.tls_context)
        loop = asyncio.get_running_loop()
        implicit = self.settings.smtp.tls.implicit_listen
        if self.tls_context is not None and (implicit or implicit_sock is not None):
            smtps = smtp_factory(self.settings, self.handler, self.tls_context, implicit_tls=True)
            implicit_sock = implicit_sock or listening_socket(implicit)
            self.implicit_server = await loop.create_server(
                self._tracked(smtps), sock=implicit_sock, ssl=self.tls_context
            )
        sock = sock or listening_socket(self.settings.smtp.listen)
        self.server = await loop.create_server(self._tracked(factory), sock=sock)

    def reload_tls(self) -> bool:
        """Load the certificate and key files again (SIGHUP); new handshakes use them."""
        if self.tls_context is None:
            return False
        try:
            fresh = server_tls_context(self.settings)
        except SettingsError as exc:
            log.error("TLS reload refused, keeping the running certificate: %s", exc)
            return False
        if fresh is not None:
            tls = self.settings.smtp.tls
            self.tls_context.load_cert_chain(tls.cert, tls.key)
        return True

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    @property
    def implicit_port(self) -> int | None:
        if self.implicit_server is None:
            return None
        port: int = self.implicit_server.sockets[0].getsockname()[1]
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; messages in flight finish within ``grace`` seconds; then close."""
        grace = self.settings.smtp.shutdown_grace if grace is None else grace
        self.handler.shutting_down = True
        servers = [s for s in (self.server, self.implicit_server) if s is not None]
        for server in servers:
            server.close()
        pending = list(self.handler.in_flight)
        if pending:
            log.info("waiting up to %.0f s for %d message(s) in flight", grace, len(pending))
            await asyncio.wait(pending, timeout=grace)
        for proto in list(self.protocols):
            transport = proto.transport
            if transport is not None and not transport.is_closing():
                # RFC 5321 3.8: a server shutting down may send 421 at any time, then close.
                with contextlib.suppress(OSError, TimeoutError, RuntimeError, AssertionError):
                    await asyncio.wait_for(proto.push(replies.SHUTTING_DOWN.text), 1)
                transport.close()
        for server in servers:
            await server.wait_closed()
