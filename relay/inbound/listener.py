"""SMTP in: the listening sockets, the protocol factories, start and drain.

Stage: async edge. Input: the settings and the ``RelayHandler`` (``receive.py``), which holds
the policy; this module only opens and closes listeners.
Rule 1: after ``stop`` begins, no new transaction starts (the handler answers 421) and the
        messages in flight finish within ``[smtp] shutdown_grace``; then every connection is
        told 421 and closed (RFC 5321 3.8).
Rule 2: protocol objects are held weakly, so that a session goes with its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import weakref
from collections.abc import Callable

from aiosmtpd.smtp import SMTP

from relay import replies
from relay.errors import SettingsError
from relay.inbound.limits import ConnectionLimits
from relay.inbound.receive import PROXY_TIMEOUT, RelayHandler
from relay.inbound.smtpd import RelaySMTP, server_tls_context
from relay.ops import metrics
from relay.settings import Settings, split_hostport

log = logging.getLogger("relay.inbound.receive")


def smtp_factory(
    settings: Settings,
    handler: RelayHandler,
    tls_context: ssl.SSLContext | None = None,
    *,
    implicit_tls: bool = False,
) -> Callable[[], SMTP]:
    """Protocol factory for the plain listener (STARTTLS with ``tls_context``) or, with
    ``implicit_tls``, for the SMTPS listener (the transport is TLS already); each factory
    holds its listener's connection caps (``limits.py``)."""
    hostname = settings.smtp.hostname or socket.getfqdn()
    smtp = settings.smtp
    excluded = [] if handler.users else ["LOGIN", "PLAIN"]
    limits = ConnectionLimits(
        smtp.max_connections,
        smtp.max_connections_per_client,
        per_client_applies=not (smtp.proxy_protocol and not implicit_tls),
    )

    def make() -> SMTP:
        return RelaySMTP(
            handler,
            limits=limits,
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
