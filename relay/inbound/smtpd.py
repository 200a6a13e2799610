"""aiosmtpd protocol extensions for the SMTP edge: the real client's address, XFORWARD, AUTH
checked off the event loop, and the inbound TLS context.

Input: aiosmtpd sessions and commands, ``[smtp]`` settings. Output: ``RelaySMTP`` (the protocol
``receive.py`` serves), ``client_address``, ``server_tls_context``.

Rule 1: mechanics only: who may relay, be rate limited or send XFORWARD is asked of the
        handler (``Policy``); replies come from ``replies.py``.
Rule 2: the client is the PROXY header's source address when there is one, else the TCP peer.
Rule 3: AUTH credentials are parsed by aiosmtpd and verified by the handler in a thread (the
        scrypt check is slow on purpose); passwords are never logged.
Rule 4: XFORWARD attributes belong to one transaction: the end of DATA, RSET, HELO and EHLO
        forget them (Postfix sends them again before each MAIL); during a transaction the
        command is refused with 503.
Rule 5: a certificate or key that cannot be read or used stops start-up with a
        ``SettingsError`` naming the key.
Rule 7: a client that half-closes (TCP FIN) after pipelining its last commands, as Exim does
        with ``...<CRLF>.<CRLF>QUIT<CRLF>`` on every first attempt, gets those commands
        served and answered before the relay closes (RFC 5321 4.1.1.10); aiosmtpd cancelled
        the session instead, losing the message. The end of input after the last command is
        an ordinary disconnect, logged at INFO, never an ERROR.
Rule 6: MAIL and RCPT are parsed here, not by aiosmtpd (``smtp.address``, ``smtp.param_syntax``):
        the address the handler decides on is the one written between the brackets, and the
        parameters reach the envelope as written (aiosmtpd upper-cases them and refuses DSN's).
        A bad address is 553 (5.1.7 sender, 5.1.3 recipient), a non-ASCII one without
        SMTPUTF8 553 5.6.7, a bad parameter 501 5.5.4, an unknown one 555 5.5.4.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from relay import replies
from relay.errors import SettingsError
from relay.inbound import quiet_log
from relay.inbound.data import read_data
from relay.inbound.idle_timer import IdleTimer
from relay.inbound.limits import ConnectionLimits
from relay.settings import Settings
from relay.smtp import address, param_syntax, xforward

P = TypeVar("P")

quiet_log.install()  # aiosmtpd's per-command log lines cost nothing when off
log = logging.getLogger("relay.inbound.receive")


class Policy(Protocol):
    """What the protocol asks of the handler (``receive.RelayHandler``)."""

    settings: Settings

    def network_allowed(self, session: Session) -> bool: ...

    async def verify_login(self, login: LoginPassword) -> bool: ...


def peer_host(session: Session) -> str:
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def client_address(session: Session) -> str:
    """Rule 2: the PROXY header's source address when there is one, else the TCP peer."""
    proxy = session.proxy_data
    if proxy is not None and isinstance(
        proxy.src_addr, ipaddress.IPv4Address | ipaddress.IPv6Address
    ):
        return str(proxy.src_addr)
    return peer_host(session)


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class RelayEnvelope(SmtpEnvelope):
    """aiosmtpd's envelope plus each recipient's parameters as written, aligned with
    ``rcpt_tos``, and the folded recipients (duplicates are delivered once)."""

    def __init__(self) -> None:
        super().__init__()
        self.rcpt_params: list[tuple[str, ...]] = []
        self.rcpt_keys: set[str] = set()


class RelaySession(Session):
    """aiosmtpd's session plus the XFORWARD attributes of the current transaction."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.xforward: dict[str, str] = {}
        # The ledger key of the last message answered 250, until the client's next command.
        self.settled_key: str | None = None


def _capture_login(
    server: SMTP, session: Session, envelope: SmtpEnvelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """aiosmtpd's (synchronous) authenticator: keep the credentials for ``_verified``."""
    if isinstance(server, RelaySMTP) and isinstance(auth_data, LoginPassword):
        server.pending_login = auth_data
    return AuthResult(success=False, handled=False)


class RelaySMTP(IdleTimer, SMTP):
    """aiosmtpd's protocol plus XFORWARD, per-transaction XFORWARD state, threaded AUTH and
    an idle timer that costs nothing per command (``idle_timer.py``)."""

    def __init__(
        self, handler: Policy, *, limits: ConnectionLimits | None = None, **kwargs: Any
    ) -> None:
        super().__init__(handler, authenticator=_capture_login, **kwargs)
        self.relay_handler = handler
        self.pending_login: LoginPassword | None = None
        self.limits = limits
        self._admitted: str | None = None  # the client counted in ``limits``
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """``limits.py`` Rule 1: over a cap, 421 before the greeting, then close."""
        if self.transport is None and self.limits is not None:  # not again after STARTTLS
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            if not self.limits.admit(client):
                self._refused = True
                # cast, not isinstance: uvloop's transports do not derive from asyncio's.
                writer = cast("asyncio.WriteTransport", transport)
                writer.write(replies.TOO_MANY_CONNECTIONS.text.encode() + b"\r\n")
                transport.close()
                return
            self._admitted = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return  # aiosmtpd never started a session for it
        if self._admitted is not None and self.limits is not None:
            self.limits.release(self._admitted)
            self._admitted = None
        super().connection_lost(error)

    def _create_session(self) -> Session:
        return RelaySession(self.loop)

    def eof_received(self) -> bool | None:
        """Rule 7: the reader sees the end of input after the commands already received;
        the write side stays open for their replies (plain TCP; TLS cannot half-close)."""
        if self._refused:
            return False
        asyncio.StreamReaderProtocol.eof_received(self)
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    async def handle_exception(self, error: Exception) -> str:
        """Rule 7: the end of input between commands closes the session quietly; any other
        error goes to the handler (a named 4xx)."""
        if isinstance(error, asyncio.IncompleteReadError) and self._reader.at_eof():
            log.info("client %s closed its side; closing", client_address(self._session()))
            self._writer.close()
            # connection_lost cancels this task once the replies are flushed; until then
            # nothing may be read or answered (the loop would spin on the closed reader).
            await self._writer.wait_closed()
            raise asyncio.CancelledError
        return await super().handle_exception(error)

    async def push(self, status: Any) -> None:
        # aiosmtpd pushes whatever ``handle_exception`` returned, also when it was
        # interrupted (None); and a reply to a connection already closing goes nowhere.
        if status is None or self.transport is None or self.transport.is_closing():
            return
        await super().push(status)

    def _create_envelope(self) -> SmtpEnvelope:
        return RelayEnvelope()

    async def _argument(
        self,
        text: str,
        null_allowed: bool,
        bad: replies.Reply,
        read: Callable[[tuple[str, ...]], P],
    ) -> tuple[address.Argument, P] | None:
        """A MAIL or RCPT path and its parameters (read by ``read``), or None once the
        refusal is pushed: ``bad`` for the path, 555/501 for a parameter (Rule 6)."""
        assert self.session is not None
        try:
            parsed = address.parse(text, null_allowed=null_allowed)
            if parsed.params and not self.session.extended_smtp:
                raise param_syntax.ParamError("parameters need EHLO")
            return parsed, read(parsed.params)
        except address.AddressError as exc:
            await self.push(_refusal(exc, bad).text)
        except param_syntax.ParamError as exc:
            await self.push(_param_refusal(exc).text)
        return None

    async def smtp_MAIL(self, arg: str | None) -> None:
        """Rule 6: ``MAIL FROM:<path> [parameters]``; the hook gets the parameters as written."""
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        assert self.envelope is not None and self.session is not None
        text = self._strip_command_keyword("FROM:", arg or "")
        if not text:
            await self.push(replies.MAIL_SYNTAX.text)
            return
        if self.envelope.mail_from:
            await self.push(replies.NESTED_MAIL.text)
            return
        found = await self._argument(text, True, replies.BAD_SENDER, param_syntax.mail)
        if found is None:
            return
        parsed, mail = found
        if parsed.utf8 and not mail.smtputf8:
            await self.push(replies.NON_ASCII_ADDRESS.text)
            return
        if mail.size and self.data_size_limit and mail.size > self.data_size_limit:
            await self.push(replies.TOO_BIG.text)
            return
        self.envelope.smtp_utf8 = mail.smtputf8
        status = await self._call_handler_hook("MAIL", parsed.address, list(mail.written))
        await self.push(replies.OK_SENDER.text if status is MISSING else status)

    async def smtp_RCPT(self, arg: str | None) -> None:
        """Rule 6: ``RCPT TO:<path> [parameters]``; NOTIFY and ORCPT are accepted (DSN)."""
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.mail_from:
            await self.push(replies.NEED_MAIL.text)
            return
        text = self._strip_command_keyword("TO:", arg or "")
        if not text:
            await self.push(replies.RCPT_SYNTAX.text)
            return
        utf8 = bool(self.envelope.smtp_utf8)
        found_rcpt = await self._argument(
            text, False, replies.BAD_ADDRESS, lambda p: param_syntax.rcpt(p, smtputf8=utf8)
        )
        if found_rcpt is None:
            return
        parsed, rcpt = found_rcpt
        if parsed.utf8 and not self.envelope.smtp_utf8:
            await self.push(replies.NON_ASCII_ADDRESS.text)
            return
        status = await self._call_handler_hook("RCPT", parsed.address, list(rcpt.written))
        await self.push(replies.OK_RCPT.text if status is MISSING else status)

    def _set_post_data_state(self) -> None:
        # Called after DATA and (through _set_rset_state) on RSET, HELO and EHLO: the end of a
        # transaction, when Postfix expects XFORWARD attributes to be forgotten.
        super()._set_post_data_state()  # type: ignore[no-untyped-call]
        if isinstance(self.session, RelaySession):
            self.session.xforward = {}

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the body read in large steps (``smtp_data``): the same checks,
        replies and handler hook, without a Python iteration per line of the message."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            result = await read_data(self._reader, self.data_size_limit)
        except asyncio.IncompleteReadError:
            # The client went away mid-message: nothing was accepted, nothing to answer.
            self._writer.close()
            return
        if result.content is None:
            self._set_post_data_state()
            if result.too_big:
                await self.push(replies.TOO_BIG.text)
            else:
                await self.push(replies.LINE_TOO_LONG.text)
            return
        self.envelope.content = result.content
        self.envelope.original_content = result.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def smtp_XFORWARD(self, arg: str | None) -> None:
        if await self.check_helo_needed("EHLO"):
            return
        session = self.session
        assert isinstance(session, RelaySession)
        handler = self.relay_handler
        if not handler.settings.smtp.xforward:
            # Turned off: the very answer aiosmtpd gives to any command it does not know.
            await self.push('500 Error: command "XFORWARD" not recognized')
            return
        if not handler.network_allowed(session):
            log.warning("XFORWARD refused from %s", client_address(session))
            await self.push(replies.XFORWARD_DENIED.text)
            return
        if self.envelope is not None and self.envelope.mail_from:
            await self.push(replies.XFORWARD_IN_TRANSACTION.text)
            return
        try:
            pairs = xforward.parse(arg or "")
        except ValueError as exc:
            await self.push(replies.XFORWARD_SYNTAX.with_detail(str(exc)).text)
            return
        session.xforward.update(pairs)
        await self.push(replies.OK_XFORWARD.text)

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_PLAIN(server, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._verified(await super().auth_LOGIN(server, args))

    async def _verified(self, parsed: AuthResult) -> AuthResult:
        """aiosmtpd parsed the mechanism; check the captured credentials in a thread."""
        login, self.pending_login = self.pending_login, None
        if login is None:
            return parsed  # a syntax error or an aborted exchange, already answered
        if await self.relay_handler.verify_login(login):
            log.info("AUTH succeeded from %s", client_address(self._session()))
            return AuthResult(success=True, auth_data=login)
        log.warning("AUTH failed from %s", client_address(self._session()))
        return AuthResult(success=False, handled=False)

    def _session(self) -> Session:
        assert self.session is not None
        return self.session


def _refusal(exc: address.AddressError, reply: replies.Reply) -> replies.Reply:
    if exc.kind == "parameter":
        return replies.BAD_PARAMETER.with_detail(str(exc))
    return reply.with_detail(str(exc))


def _param_refusal(exc: param_syntax.ParamError) -> replies.Reply:
    return (replies.UNKNOWN_PARAMETER if exc.unknown else replies.BAD_PARAMETER).with_detail(
        str(exc)
    )


def server_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The inbound TLS context, or None; a file problem is a SettingsError naming the key."""
    tls = settings.smtp.tls
    if not tls.cert or not tls.key:
        return None
    where = settings.source
    markers = (
        ("smtp.tls.cert", tls.cert, b"-----BEGIN CERTIFICATE-----"),
        ("smtp.tls.key", tls.key, b"PRIVATE KEY-----"),
    )
    for dotted, path, marker in markers:
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise SettingsError(f"{where}: {dotted}: cannot read {path}: {exc.strerror}") from None
        if marker not in content:
            raise SettingsError(f"{where}: {dotted}: {path} is not a PEM {dotted[9:]} file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as exc:
        raise SettingsError(
            f"{where}: smtp.tls.key: {tls.key} does not load with {tls.cert}: {exc.reason}"
        ) from None
    return context
