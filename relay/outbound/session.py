"""Opening a session with the upstream: connect, greeting, EHLO, STARTTLS, AUTH.

Input: the ``Endpoint`` (from ``[upstream]``). Output: a ``Connection`` ready for MAIL, with
the extensions the upstream announced after TLS; or ``SessionFailed`` with the reply every
recipient gets and the reason, which the caller logs once per upstream (``Notices``).

Rule 1: TLS levels, as Postfix names them (postfix.org/TLS_README.html):
        ``none``: never STARTTLS. ``opportunistic`` (Postfix ``may``): STARTTLS when offered,
        the certificate is not verified (it protects against passive eavesdropping, not against
        an active attacker), and a failed handshake is retried once in plaintext on a new
        connection. ``required`` (Postfix ``encrypt``, or ``secure`` with ``verify = true``):
        no STARTTLS or a failed handshake defers the message; ``verify`` checks the chain
        (``ca_file`` or the system CAs) and the host name. ``smtps://`` is TLS from the first
        byte, verified like ``required``.
Rule 2: the relay's credentials are never sent in clear unless ``tls = "none"`` says so; with
        credentials and no encryption the message is deferred with a reason. An upstream that
        does not offer AUTH gets the message without it (it decides whether to relay).
Rule 3: the password never reaches a log, a reply or an exception text.
Rule 4: an EHLO refused with 5xx falls back to HELO (then no extension is used, no pipelining).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import ssl
from dataclasses import dataclass

from relay import replies
from relay.outbound.connection import Connection, UpstreamLost
from relay.outbound.outcome import UpstreamReply
from relay.replies import Reply
from relay.smtp import command
from relay.smtp.reply import NO_EXTENSIONS, Extensions, ServerReply, parse_ehlo
from relay.time_limits import time_limit

log = logging.getLogger("relay.outbound.session")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    implicit_tls: bool
    tls: str  # "none", "opportunistic", "required"
    verify: bool
    ca_file: str
    username: str
    password: str
    helo: str
    timeout: float

    def __repr__(self) -> str:  # Rule 3
        return f"Endpoint({self.host}:{self.port}, tls={self.tls}, user={self.username or '-'})"

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


class SessionFailed(Exception):
    """No session: ``reply`` for every recipient, ``key``/``reason`` for the log (once)."""

    def __init__(self, key: str, reason: str, reply: UpstreamReply) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason
        self.reply = reply


class Notices:
    """Logs a condition of the upstream once when it starts or changes, and once when it ends,
    instead of once per message (a broken certificate would otherwise log every message)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._active: dict[str, str] = {}

    def problem(self, key: str, reason: str, level: int = logging.WARNING) -> None:
        if self._active.get(key) != reason:
            self._active[key] = reason
            log.log(level, "upstream %s: %s (logged once until it changes)", self.upstream, reason)

    def info(self, key: str, reason: str) -> None:
        if self._active.get(key) != reason:
            self._active[key] = reason
            log.info("upstream %s: %s", self.upstream, reason)

    def resolved(self, key: str, message: str) -> None:
        if self._active.pop(key, None) is not None:
            log.info("upstream %s: %s", self.upstream, message)


def _failed(key: str, reason: str, reply: Reply) -> SessionFailed:
    return SessionFailed(key, reason, UpstreamReply.own(reply, reason))


def tls_context(endpoint: Endpoint, *, verified: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=endpoint.ca_file or None)
    if not verified:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _server_name(host: str) -> str:
    """The name the certificate is checked against (an address literal is checked as an
    address, and Python sends no SNI for it)."""
    return host.strip("[]")


async def _connect(endpoint: Endpoint) -> Connection:
    loop = asyncio.get_running_loop()
    conn = Connection()
    context = tls_context(endpoint, verified=endpoint.verify) if endpoint.implicit_tls else None
    try:
        with time_limit(endpoint.timeout):
            await loop.create_connection(
                lambda: conn,
                endpoint.host,
                endpoint.port,
                ssl=context,
                server_hostname=_server_name(endpoint.host) if context else None,
                ssl_handshake_timeout=endpoint.timeout if context else None,
            )
    except ssl.SSLError as exc:
        reason = f"TLS handshake failed (smtps): {_ssl_reason(exc)}"
        raise _failed("tls", reason, replies.OUT_TLS) from None
    except (OSError, TimeoutError) as exc:
        reason = (
            f"cannot connect: {exc.strerror or exc}"
            if isinstance(exc, OSError)
            else (f"cannot connect: no answer in {endpoint.timeout:g} s")
        )
        raise _failed("connect", reason, replies.OUT_UNREACHABLE) from None
    conn.encrypted = context is not None
    return conn


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not verified: {exc.verify_message}"
    return exc.reason or str(exc)


async def _expect(conn: Connection, endpoint: Endpoint, what: str) -> ServerReply:
    reply = await conn.read1(endpoint.timeout)
    if reply.code == 421 or (reply.code >= 400 and what == "greeting"):
        raise _failed("connect", f"{what} refused: {reply.text}", replies.OUT_UNREACHABLE)
    return reply


async def _hello(conn: Connection, endpoint: Endpoint) -> Extensions:
    conn.write(command.ehlo(endpoint.helo))
    reply = await _expect(conn, endpoint, "EHLO")
    if reply.code == 250:
        return parse_ehlo(reply)
    if reply.code >= 500:  # Rule 4
        conn.write(command.helo(endpoint.helo))
        reply = await _expect(conn, endpoint, "HELO")
        if reply.code == 250:
            return NO_EXTENSIONS
    raise _failed("connect", f"EHLO/HELO refused: {reply.text}", replies.OUT_UNREACHABLE)


async def _start_tls(conn: Connection, endpoint: Endpoint) -> None:
    conn.write(command.STARTTLS)
    reply = await _expect(conn, endpoint, "STARTTLS")
    if reply.code != 220:
        raise _failed("tls", f"STARTTLS refused: {reply.text}", replies.OUT_TLS)
    verified = endpoint.tls == "required" and endpoint.verify
    try:
        await conn.start_tls(
            tls_context(endpoint, verified=verified), _server_name(endpoint.host), endpoint.timeout
        )
    except ssl.SSLError as exc:
        conn.abort()
        raise _failed("tls", f"TLS handshake failed: {_ssl_reason(exc)}", replies.OUT_TLS) from None
    except (OSError, TimeoutError) as exc:
        conn.abort()
        raise _failed("tls", f"TLS handshake failed: {exc}", replies.OUT_TLS) from None


async def _login(conn: Connection, endpoint: Endpoint, offered: frozenset[str]) -> None:
    user, password = endpoint.username.encode(), endpoint.password.encode()
    order = ("PLAIN", "LOGIN", "CRAM-MD5") if conn.encrypted else ("CRAM-MD5", "PLAIN", "LOGIN")
    mechanism = next((m for m in order if m in offered), None)
    if mechanism is None:
        reason = f"no AUTH mechanism in common (offered: {' '.join(sorted(offered))})"
        raise _failed("auth", reason, replies.OUT_AUTH)
    if mechanism == "PLAIN":
        conn.write(command.auth("PLAIN", b"\0" + user + b"\0" + password))
        reply = await conn.read1(endpoint.timeout)
    else:
        conn.write(command.auth(mechanism))
        reply = await conn.read1(endpoint.timeout)
        steps = [user, password] if mechanism == "LOGIN" else []
        if mechanism == "CRAM-MD5" and reply.code == 334:
            try:
                challenge = base64.b64decode(reply.message.encode(), validate=True)
            except binascii.Error:
                reason = "AUTH CRAM-MD5: malformed challenge"
                raise _failed("auth", reason, replies.OUT_AUTH) from None
            digest = hmac.new(password, challenge, hashlib.md5).hexdigest().encode()
            steps = [user + b" " + digest]
        for step in steps:
            if reply.code != 334:
                break
            conn.write(command.auth_response(step))
            reply = await conn.read1(endpoint.timeout)
    if reply.code != 235:
        # Rule 3: the reply is the upstream's text, which never contains our password.
        raise _failed("auth", f"AUTH {mechanism} refused: {reply.text}", replies.OUT_AUTH)


async def open_session(endpoint: Endpoint, notices: Notices) -> Connection:
    """A connection past EHLO (and STARTTLS and AUTH where they apply), or SessionFailed."""
    try:
        return await _open(endpoint, notices, plaintext=False)
    except SessionFailed as exc:
        if exc.key != "tls" or endpoint.tls != "opportunistic" or endpoint.implicit_tls:
            raise
        # Rule 1: opportunistic TLS that fails is retried once in plaintext.
        notices.problem("tls", f"{exc.reason}; sending in plaintext (tls = opportunistic)")
        return await _open(endpoint, notices, plaintext=True)


async def _open(endpoint: Endpoint, notices: Notices, *, plaintext: bool) -> Connection:
    conn = await _connect(endpoint)
    try:
        await _expect(conn, endpoint, "greeting")
        extensions = await _hello(conn, endpoint)
        wants_tls = endpoint.tls != "none" and not endpoint.implicit_tls and not plaintext
        if wants_tls and extensions.has("STARTTLS"):
            await _start_tls(conn, endpoint)
            extensions = await _hello(conn, endpoint)
            if endpoint.tls == "opportunistic":
                notices.info("tls", f"STARTTLS {conn.tls_version()}, certificate not verified")
            else:
                notices.resolved("tls", f"STARTTLS {conn.tls_version()} works again")
        elif endpoint.tls == "required" and not endpoint.implicit_tls:
            raise _failed("tls", "STARTTLS not offered", replies.OUT_TLS_MISSING)
        if endpoint.username:
            if not extensions.has("AUTH"):
                notices.problem("auth", "AUTH not offered: sending without the credentials")
            elif not conn.encrypted and endpoint.tls != "none":
                reason = 'credentials are not sent without TLS (set tls = "none" to allow it)'
                raise _failed("auth", reason, replies.OUT_AUTH)
            else:
                await _login(conn, endpoint, extensions.auth_mechanisms)
                notices.resolved("auth", "AUTH accepted again")
        conn.extensions = extensions
        notices.resolved("connect", "reachable again")
        return conn
    except UpstreamLost as exc:
        conn.abort()
        reason = f"session setup failed: {exc.reason}"
        raise _failed("connect", reason, replies.OUT_UNREACHABLE) from None
    except BaseException:
        conn.abort()
        raise
