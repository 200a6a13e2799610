"""SMTP in: the aiosmtpd handler. The only place where errors become SMTP replies.

Rule 1: never an open relay: RCPT is refused (554 5.7.1) unless the client's address is in
        ``[smtp] allowed_clients`` or the session authenticated.
Rule 2: message bytes are never decoded here (``decode_data=False``); SIZE, 8BITMIME,
        SMTPUTF8 and PIPELINING are announced.
Rule 3: the message's bytes are decided once (``smtp.canonical``): data that could smuggle
        a second message past a lenient upstream (a lone LF or CR around a dot line) or
        holding a NUL is refused with 554 5.6.0; every other lone LF or CR is a CRLF, so the
        filter reads exactly the bytes the upstream receives.
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
client address, the TLS context) are in ``smtpd.py``; the listening sockets and the drain on
shutdown in ``listener.py``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import SMTP, LoginPassword, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from relay import replies
from relay.errors import RelayError
from relay.inbound.ratelimit import RateLimiter
from relay.inbound.smtpd import (
    RelayEnvelope,
    RelaySession,
    client_address,
    ip_of,
    peer_host,
)
from relay.model import Envelope
from relay.passwords import UserTable
from relay.pipeline import Outcome
from relay.settings import Settings
from relay.smtp import address as addresses
from relay.smtp import xforward
from relay.smtp.canonical import NUL, canonical

log = logging.getLogger("relay.inbound.receive")

NULL_SENDER = "<>"
MAX_RECIPIENTS = 1000
# Seconds a connection may take to send its PROXY header (aiosmtpd warns below 3).
PROXY_TIMEOUT = 10.0

Processor = Callable[[bytes, Envelope, str], Awaitable[Outcome]]


def check_line_endings(data: bytes) -> bytes:
    """The one view of the message (``smtp.canonical``); raise RelayError naming the defect."""
    try:
        return canonical(data)
    except ValueError as exc:
        reply = replies.NUL_IN_DATA if str(exc) == NUL else replies.BARE_LF
        raise RelayError(str(exc), reply) from None


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
        # DSN (RFC 3461): NOTIFY, ORCPT, RET and ENVID are kept as written for the upstream.
        lines.insert(len(lines) - 1, "250-DSN")
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
        # The address was checked against RFC 5321/6531 by the protocol (smtpd.py Rule 6).
        if isinstance(envelope, RelayEnvelope):
            key = addresses.fold(address)
            if key in envelope.rcpt_keys:
                return replies.OK_DUPLICATE_RCPT.text  # one copy per mailbox (issue 13.3)
            if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
                return replies.TOO_MANY_RECIPIENTS.text
            envelope.rcpt_keys.add(key)
            envelope.rcpt_params.append(tuple(rcpt_options))
        elif len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return replies.TOO_MANY_RECIPIENTS.text
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.OK_RCPT.text

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        relay_id = uuid.uuid4().hex[:12]
        # Rule 5: no session timeout while this message is being processed.
        pause = getattr(server, "pause_idle_timer", None)
        if pause is not None:
            pause()
        elif (handle := getattr(server, "_timeout_handle", None)) is not None:
            handle.cancel()  # a plain aiosmtpd SMTP
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
                rcpt_options=_rcpt_options(envelope),
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


def _rcpt_options(envelope: SmtpEnvelope) -> tuple[tuple[str, ...], ...]:
    """Each recipient's parameters as written, aligned with ``rcpt_tos``; () when none."""
    if isinstance(envelope, RelayEnvelope) and any(envelope.rcpt_params):
        return tuple(envelope.rcpt_params)
    return ()


def _auth_user(session: Session) -> str | None:
    data = getattr(session, "auth_data", None)
    login = getattr(data, "login", None)
    if isinstance(login, bytes):
        return login.decode("utf-8", "replace")
    return None
