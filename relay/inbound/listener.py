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
import errno
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

# The greeting's software name: `relay canary send` checks it to know it talks to a relay.
IDENT = "consent-relay"


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
            ident=IDENT,
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


class Claim:
    """The listening sockets of one relay for one address: ``sockets`` (one per worker, all
    bound with SO_REUSEPORT so the kernel spreads connections over the workers) and the lock
    that keeps every other relay off that address for as long as this one runs."""

    def __init__(self, key: str, listen: str, sockets: list[socket.socket], lock: socket.socket):
        self.key, self.listen, self.sockets, self.lock = key, listen, sockets, lock

    @property
    def port(self) -> int:
        port: int = self.sockets[0].getsockname()[1]
        return port

    def release_sockets(self) -> None:
        """Close the sockets but keep the lock (the workers have their own copies)."""
        for sock in self.sockets:
            sock.close()

    def close(self) -> None:
        self.release_sockets()
        self.lock.close()


def _lock_name(host: str, port: int) -> str:
    # An abstract Unix socket (Linux): unique per network namespace, like the TCP port it
    # guards, and released by the kernel when the process ends, so no stale lock survives.
    return f"\0consent-relay {host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only for
    # such a socket, and without it replies to pipelined commands wait on Nagle (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(512)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def claim(key: str, listen: str, workers: int = 1) -> Claim:
    """Bind ``listen`` (the value of settings key ``key``) for this relay and its workers.

    SO_REUSEPORT lets this relay's own workers share the port; a second relay on the same
    address would be let in by it too, so the lock below refuses it. Every failure is a
    ``SettingsError`` naming the key and the address, never a traceback.
    """
    host, port = split_hostport(listen)
    try:
        first = _bind(host, port)
    except OSError as exc:
        reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise SettingsError(
            f"{key} = {listen!r}: cannot listen: {reason} (stop the program holding it, "
            "or choose another address)"
        ) from None
    sockets = [first]
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(_lock_name(host, first.getsockname()[1]))
    except OSError:
        lock.close()
        first.close()
        raise SettingsError(
            f"{key} = {listen!r}: another consent-relay is already listening there "
            "(stop it first; only one relay's own --workers share a port)"
        ) from None
    try:
        actual = first.getsockname()[1]
        sockets += [_bind(host, actual) for _ in range(workers - 1)]
    except OSError as exc:
        Claim(key, listen, sockets, lock).close()
        raise SettingsError(f"{key} = {listen!r}: cannot listen: {exc.strerror}") from None
    return Claim(key, listen, sockets, lock)


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
        # Addresses this server bound itself (no socket handed in): released on stop.
        self.claims: list[Claim] = []

    def _tracked(self, factory: Callable[[], SMTP]) -> Callable[[], SMTP]:
        def make() -> SMTP:
            proto = factory()
            self.protocols.add(proto)
            metrics.count(metrics.SESSIONS)
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
            if implicit_sock is None:
                self.claims.append(claim("smtp.tls.implicit_listen", implicit))
                implicit_sock = self.claims[-1].sockets[0]
            self.implicit_server = await loop.create_server(
                self._tracked(smtps), sock=implicit_sock, ssl=self.tls_context
            )
        if sock is None:
            self.claims.append(claim("smtp.listen", self.settings.smtp.listen))
            sock = self.claims[-1].sockets[0]
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
        for held in self.claims:
            held.close()
