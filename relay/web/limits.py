"""Transport limits of the web listener: connection caps, header and body deadlines.

Stage: async edge (HTTP transport), below the ASGI application. ``web_config`` builds the
uvicorn configuration ``relay serve`` runs; its protocol is uvicorn's h11 protocol with the
limits below added around it.
Input: TCP connections and their bytes. Output: the same, handed to uvicorn, or a short
``503``/``408`` and a closed connection.

Rule 1: a connection beyond ``[web] max_connections`` open ones, or beyond
        ``max_connections_per_client`` from one IP address, is answered ``503`` and closed at
        once: the web side never holds more descriptors than its cap, so a flood of slow HTTP
        clients cannot take the descriptors the SMTP listener of the same process needs.
Rule 2: a request's line and headers must arrive within ``header_timeout`` seconds of the
        connection's start (or of the first byte of the next request on a kept-alive one),
        and its body within ``body_timeout`` seconds of the headers; else ``408`` and close.
        The deadlines are absolute: a client trickling one byte at a time gains nothing.
Rule 3: counts are per relay process (``--workers N`` gives each process its own caps).
Rule 4: a peer in ``[web] trusted_proxies`` carries many visitors: its connections count
        towards ``max_connections`` but not towards a per-address cap. With ``proxy_protocol``
        such a peer must open each connection with a PROXY header (``proxy_header``): its
        source address is then the client (for the per-address cap and for the application),
        and a missing or invalid header closes the connection with ``400``. Another peer is
        served as itself, and a PROXY header it sends is refused with ``400``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from relay.ops.connections import OpenConnections
from relay.settings import Settings
from relay.web import proxy_header
from relay.web.forwarded import IpNetwork, ip_of, networks, trusted

log = logging.getLogger("relay.web.limits")

# Descriptors kept for everything that is not a client connection (Redis, upstream pool,
# listening sockets, journal, worker pipes, logs).
RESERVED_DESCRIPTORS = 64
# The request line and headers may not exceed this (h11 answers 400 above it).
MAX_HEADER_BYTES = 16_384


def _reply(status: str, text: str) -> bytes:
    body = text.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status.startswith("503"):
        head += "Retry-After: 5\r\n"
    return head.encode() + b"\r\n" + body


BUSY = _reply("503 Service Unavailable", "Too many connections; try again shortly.\n")
TOO_SLOW = _reply("408 Request Timeout", "The request was not sent in time.\n")
NO_PROXY_HEADER = _reply("400 Bad Request", "A valid PROXY protocol header was expected.\n")
UNTRUSTED_PROXY = _reply(
    "400 Bad Request", "PROXY protocol header from an address not in web.trusted_proxies.\n"
)


@dataclass
class ConnectionLimits(OpenConnections):
    """The caps of one listener and its open connections (Rule 1)."""

    max_connections: int
    per_client: int  # 0 = no per-client cap
    header_timeout: float
    body_timeout: float
    open: int = 0
    by_client: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    trusted: tuple[IpNetwork, ...] = ()  # Rule 4
    proxy_protocol: bool = False
    bad_headers: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        web = settings.web
        return cls(
            web.max_connections,
            web.max_connections_per_client,
            web.header_timeout,
            web.body_timeout,
            trusted=networks(web.trusted_proxies),
            proxy_protocol=web.proxy_protocol,
        )

    def admit(self, client: str) -> bool:
        """A new connection from ``client`` ("" = a trusted proxy: no per-address cap)."""
        if self.open >= self.max_connections:
            self.refused += 1
            return False
        if client and not self.claim(client):
            return False
        self.open += 1
        return True

    def claim(self, client: str) -> bool:
        """Count an admitted connection under ``client`` (its PROXY header's source address)."""
        mine = self.held_by(client)
        if self.per_client and mine >= self.per_client:
            self.refused += 1
            return False
        self.by_client[client] = mine + 1
        return True

    # ``release`` (``OpenConnections``): a trusted proxy's connection ("") has no entry.


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with ``limits`` applied (Rules 1 and 2); see ``guarded_protocol``."""

    limits: ClassVar[ConnectionLimits]
    _client_ip = ""  # the key of the per-address cap ("" for a trusted proxy, Rule 4)
    _admitted = False
    _proxy_buffer: bytes | None = None  # the PROXY header read so far, None when none is due
    _first = True
    _deadline: asyncio.TimerHandle | None = None
    _phase = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self.limits
        peer = transport.get_extra_info("peername")
        self._client_ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if trusted(ip_of(self._client_ip), limits.trusted):
            self._client_ip = ""
            if limits.proxy_protocol:
                self._proxy_buffer = b""
        if not limits.admit(self._client_ip):
            self._log_refusal()
            # cast, not isinstance: uvloop's transports do not derive from asyncio's.
            cast("asyncio.Transport", transport).write(BUSY)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm("headers", limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self.limits.release(self._client_ip)
        self._arm("", 0)
        super().connection_lost(exc)

    def _log_refusal(self) -> None:
        limits = self.limits
        if limits.refused % 100 == 1:
            log.warning(
                "web: connection refused (%d open, cap %d; per-address cap %d); "
                "%d refused so far",
                limits.open, limits.max_connections, limits.per_client, limits.refused,
            )  # fmt: skip

    def _proxy_data(self, data: bytes) -> bytes | None:
        """Rule 4: read the PROXY header first; the bytes after it, or None (wait or closed)."""
        first, self._first = self._first, False
        if self._proxy_buffer is None:
            if first and self.limits.proxy_protocol and proxy_header.looks_like_proxy(data):
                self._refuse(UNTRUSTED_PROXY, "a PROXY header from an untrusted address")
                return None
            return data
        self._proxy_buffer += data
        try:
            header = proxy_header.parse(self._proxy_buffer)
        except ValueError as exc:
            self._refuse(NO_PROXY_HEADER, str(exc))
            return None
        if header is None:
            return None
        rest, self._proxy_buffer = self._proxy_buffer[header.length :], None
        if header.source is not None:
            self.client = header.source
            if not self.limits.claim(header.source[0]):
                self._log_refusal()
                self.transport.write(BUSY)
                self.transport.close()
                return None
            self._client_ip = header.source[0]
        return rest or None

    def _refuse(self, reply: bytes, reason: str) -> None:
        limits = self.limits
        limits.bad_headers += 1
        if limits.bad_headers % 100 == 1:
            log.warning("web: connection closed: %s (%d so far)", reason, limits.bad_headers)
        self.transport.write(reply)
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._first or self._proxy_buffer is not None:
            found = self._proxy_data(data)
            if found is None:
                return
            data = found
        if self.conn.their_state is h11.IDLE and not self._phase:
            self._arm("headers", self.limits.header_timeout)  # the next request begins
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY and self._phase != "body":
            self._arm("body", self.limits.body_timeout)
        elif state is not h11.IDLE and state is not h11.SEND_BODY:
            self._arm("", 0)  # the whole request is in: the application's turn

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:
            self._arm("", 0)  # uvicorn's keep-alive timer watches the idle connection

    def _arm(self, phase: str, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase:
            self._deadline = self.loop.call_later(seconds, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        log.info("web: %s not received in time from a client: closed", self._phase)
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(TOO_SLOW)
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class bound to one listener's ``limits`` (uvicorn instantiates the class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def web_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of the relay's web listener."""
    limits = ConnectionLimits.from_settings(settings)
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        log_level="warning",
        lifespan="off",
        access_log=False,
        proxy_headers=False,  # who the client is: relay.web.real_client, [web] trusted_proxies
        log_config=None,  # uvicorn's lines go through the relay's handler (masking, secrets)
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        server_header=False,
    )


def descriptor_budget(settings: Settings, smtp_connections: int = 0) -> list[str]:
    """Raise the soft descriptor limit to the hard one, and say whether the web cap (plus the
    SMTP cap, when the caller knows it) still fits; the warnings to log, if any."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    needed = settings.web.max_connections + smtp_connections + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and needed > soft:
        return [
            f"web.max_connections ({settings.web.max_connections}) plus the SMTP connections "
            f"({smtp_connections}) and {RESERVED_DESCRIPTORS} reserved descriptors exceed the "
            f"process's descriptor limit ({soft}): floods of both listeners at once could run "
            "out of descriptors; lower the caps or raise `ulimit -n`"
        ]
    return []


__all__ = [
    "ConnectionLimits",
    "GuardedH11Protocol",
    "descriptor_budget",
    "guarded_protocol",
    "web_config",
]
