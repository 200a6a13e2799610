"""SMTP out: a pool of persistent, pipelining connections to one upstream MTA.

Input: one recipient group per ``send`` (sender, recipients, bytes, the client's ESMTP
parameters, XFORWARD attributes). Output: a ``GroupOutcome`` with one reply per recipient.

Rule 1: nothing here decides what a client is told; the conductor maps outcomes to a reply.
Rule 2: a connection goes back to the pool only after a transaction that ended cleanly and only
        while ``usable`` (open, nothing unread); every other path closes it, whatever was
        raised. At most ``pool_size`` transactions run at once and at most ``pool_size``
        connections stay open, so no error can leak connections.
Rule 3: a pooled connection that fails before any byte of the message was written (closed by
        the upstream while idle, ``421`` on MAIL) is replaced once by a new connection: nothing
        reached the upstream, so trying again is safe. After the message was written a failure
        is a deferral, never a retry here (RFC 1047); the client's retry goes through the
        delivery ledger.
Rule 4: ``send`` never raises for anything the upstream or the message does (an unexpected
        error is answered ``451 4.3.0`` for every recipient not yet answered, logged without
        addresses); only cancellation propagates, after the connection is closed.
Rule 5: conditions of the upstream (unreachable, TLS, AUTH, XFORWARD refused) are logged once
        when they start or change and once when they end, not once per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from urllib.parse import unquote, urlsplit

from relay import replies
from relay.outbound.connection import Connection
from relay.outbound.outcome import (
    Commit,
    Downgrade,
    GroupOutcome,
    UpstreamReply,
    XForward,
    every,
)
from relay.outbound.session import Endpoint, Notices, SessionFailed, open_session
from relay.outbound.transaction import NotSent, SentUnknown, Submission, Transaction, prepare
from relay.settings import UpstreamSettings

log = logging.getLogger("relay.outbound.pool")

# A connection idle longer than this is closed rather than reused: Postfix's smtpd drops idle
# clients after smtpd_timeout (300 s), and a connection that died silently (a NAT dropping it)
# would otherwise cost a whole command timeout to find out.
MAX_IDLE = 60.0


def endpoint_of(settings: UpstreamSettings, local_hostname: str | None) -> Endpoint:
    parts = urlsplit(settings.url)
    implicit = parts.scheme == "smtps"
    return Endpoint(
        host=parts.hostname or "localhost",
        port=parts.port or (465 if implicit else 25),
        implicit_tls=implicit,
        tls=settings.tls,
        verify=settings.verify,
        ca_file=settings.ca_file,
        username=unquote(parts.username or "") or settings.username,
        password=unquote(parts.password or "") or settings.password,
        helo=settings.helo or local_hostname or "localhost",
        timeout=settings.timeout,
    )


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame, to find a defect without logging its message (which
    may hold an address)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rpartition('/')[2]}:{last.lineno}"


class SmtpUpstream:
    def __init__(self, settings: UpstreamSettings, local_hostname: str | None = None) -> None:
        self.settings = settings
        self.endpoint = endpoint_of(settings, local_hostname)
        self.notices = Notices(self.endpoint.name)
        self.pool_size = max(1, settings.pool_size)
        self._idle: list[Connection] = []
        self._slots = asyncio.Semaphore(self.pool_size)
        self._closing = False

    async def _checkout(self) -> tuple[Connection, bool]:
        """A connection ready for MAIL, and whether it was reused from the pool."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable and now - conn.idle_since < MAX_IDLE:
                return conn, True
            conn.abort()
        return await open_session(self.endpoint, self.notices), False

    def _release(self, conn: Connection) -> None:
        if conn.usable and not self._closing and len(self._idle) < self.pool_size:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.abort()

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        options: Sequence[str],
        *,
        xforward: XForward = (),
        rcpt_options: Mapping[str, Sequence[str]] | None = None,
        downgrade: Downgrade | None = None,
        commit: Commit | None = None,
    ) -> GroupOutcome:
        sub = Submission(
            mail_from, tuple(rcpts), data, tuple(options), rcpt_options or {}, tuple(xforward),
            commit,
        )  # fmt: skip
        async with self._slots:
            try:
                return await self._send(sub, downgrade)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Rule 4: a defect must not become a lost or doubled mail
                log.error(
                    "unexpected %s at %s while sending upstream", type(exc).__name__, _where(exc)
                )
                return every(sub.rcpts, UpstreamReply.own(replies.OUT_INTERNAL))

    async def _send(self, sub: Submission, downgrade: Downgrade | None) -> GroupOutcome:
        converted: dict[bytes, bytes] = {}
        for attempt in (1, 2):
            try:
                conn, reused = await self._checkout()
            except SessionFailed as exc:
                self.notices.problem(exc.key, exc.reason)
                return every(sub.rcpts, exc.reply)
            try:
                plan = await prepare(sub, conn.extensions, downgrade, converted)
                outcome = await Transaction(
                    conn, sub, plan, self.endpoint.timeout, self.notices
                ).run()
            except NotSent as exc:
                conn.abort()
                if reused and attempt == 1:
                    log.info("pooled upstream connection failed (%s): new connection", exc.reason)
                    continue
                return self._deferred(sub, exc.known, replies.OUT_LOST, exc.reason)
            except SentUnknown as exc:
                conn.abort()
                log.warning("upstream failed after the message was sent: %s", exc.reason)
                return self._deferred(sub, exc.known, replies.OUT_LOST_AFTER_DATA, exc.reason)
            except BaseException:
                conn.abort()
                raise
            self._release(conn)
            return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _deferred(
        sub: Submission, known: Mapping[str, UpstreamReply], reply: replies.Reply, reason: str
    ) -> GroupOutcome:
        deferred = UpstreamReply.own(reply, reason)
        return GroupOutcome({r: known.get(r, deferred) for r in sub.rcpts})

    async def close(self) -> None:
        self._closing = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(conn.quit() for conn in idle))
