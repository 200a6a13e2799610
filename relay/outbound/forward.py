"""SMTP out: one upstream transaction per recipient group, with the upstream's reply per recipient.

Input: rendered groups (recipients with byte-identical output) and the envelope sender.
Output: a ``GroupOutcome`` per group: which recipients the upstream accepted, refused for good
(5xx) or deferred (4xx, timeout, connection lost).

Rule 1: nothing here decides what a client is told; the conductor maps outcomes to a reply.
Rule 2: a pooled connection is reused only after a transaction that ended cleanly; any error
        closes it. A stale pooled connection (closed by the upstream while idle) is detected
        before MAIL and replaced once, because nothing was sent yet and retrying is safe.
Rule 3: once the message body has been sent, a lost or late reply is a *deferral*, never a
        retry here: re-sending could duplicate a mail that the upstream in fact accepted
        (RFC 1047). The client's retry then goes through the delivery ledger.
Rule 4: ``file:`` upstreams write each group atomically (temporary name, fsync, rename) with
        its envelope beside it, so a reader never sees half a message.
Rule 5: XFORWARD attributes (Postfix content_filter placement) are sent after EHLO and before
        each MAIL, only the names the upstream announced, and only if it announced XFORWARD;
        an upstream that refuses them still gets the message (it logs the relay as client).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX

from relay.settings import UpstreamSettings
from relay.smtp import xforward as xfwd

log = logging.getLogger("relay.outbound.forward")


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    code: int
    message: str

    @property
    def text(self) -> str:
        return f"{self.code} {self.message}".strip()

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500


@dataclass
class GroupOutcome:
    """Per-recipient upstream replies for one transaction."""

    replies: dict[str, UpstreamReply] = field(default_factory=dict)

    def accepted(self) -> list[str]:
        return [r for r, reply in self.replies.items() if reply.accepted]

    def refused(self) -> list[str]:
        return [r for r, reply in self.replies.items() if reply.permanent]

    def deferred(self) -> list[str]:
        return [r for r, reply in self.replies.items() if 400 <= reply.code < 500]


XForward = Sequence[tuple[str, str]]
# Called with the recipients the upstream accepted, as the end of the data goes out (before its
# reply is read): the conductor writes them "in flight" in the delivery ledger (RFC 1047).
Commit = Callable[[Sequence[str]], Awaitable[None]]


class Upstream(Protocol):
    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        options: Sequence[str],
        *,
        xforward: XForward = (),
        commit: Commit | None = None,
    ) -> GroupOutcome: ...

    async def close(self) -> None: ...


def _all(rcpts: Sequence[str], reply: UpstreamReply) -> GroupOutcome:
    return GroupOutcome({r: reply for r in rcpts})


class FileUpstream:
    """Writes ``<id>.eml`` and ``<id>.json`` (envelope) into a folder: the newcomer's upstream."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        options: Sequence[str],
        *,
        xforward: XForward = (),
        commit: Commit | None = None,
    ) -> GroupOutcome:
        if commit is not None:
            await commit(rcpts)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        envelope: dict[str, object] = {
            "mail_from": mail_from,
            "rcpt_tos": list(rcpts),
            "options": list(options),
        }
        if xforward:
            envelope["xforward"] = dict(xforward)
        try:
            await asyncio.to_thread(self._write, name, data, envelope)
        except OSError as exc:
            log.error("outbox write failed: %s", exc)
            return _all(rcpts, UpstreamReply(451, f"4.3.0 outbox not writable: {exc.strerror}"))
        return _all(rcpts, UpstreamReply(250, f"2.0.0 written to {name}.eml"))

    def _write(self, name: str, data: bytes, envelope: Mapping[str, object]) -> None:
        for suffix, payload in ((".json", json.dumps(envelope).encode()), (".eml", data)):
            tmp = self.folder / f".{name}{suffix}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.rename(self.folder / f"{name}{suffix}")

    async def close(self) -> None:
        return None


class SmtpUpstream:
    """A pool of persistent aiosmtplib connections to one upstream MTA."""

    def __init__(self, settings: UpstreamSettings, local_hostname: str | None = None) -> None:
        parts = urlsplit(settings.url)
        self.implicit_tls = parts.scheme == "smtps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.username = unquote(parts.username or "") or settings.username
        self.password = unquote(parts.password or "") or settings.password
        self.settings = settings
        self.local_hostname = settings.helo or local_hostname
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        self._slots = asyncio.Semaphore(max(1, settings.pool_size))

    def _client(self) -> aiosmtplib.SMTP:
        tls = self.settings.tls
        context = ssl.create_default_context()
        if not self.settings.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        start_tls: bool | None = None  # opportunistic: aiosmtplib upgrades when offered
        if self.implicit_tls or tls == "none":
            start_tls = False
        elif tls == "required":
            start_tls = True
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.local_hostname,
            timeout=self.settings.timeout,
            use_tls=self.implicit_tls,
            start_tls=start_tls,
            validate_certs=self.settings.verify,
            tls_context=context if (self.implicit_tls or tls != "none") else None,
            username=self.username or None,
            password=self.password or None,
        )

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        """A connected client and whether it came from the idle pool (may be stale)."""
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client, True
            client.close()
        client = self._client()
        await client.connect()
        return client, False

    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        options: Sequence[str],
        *,
        xforward: XForward = (),
        commit: Commit | None = None,
    ) -> GroupOutcome:
        async with self._slots:
            for attempt in (1, 2):
                try:
                    client, reused = await self._checkout()
                except (aiosmtplib.SMTPException, OSError) as exc:
                    log.warning("upstream connect failed: %s", exc)
                    return _all(rcpts, UpstreamReply(451, f"4.4.1 upstream unreachable: {exc}"))
                try:
                    return await self._transaction(
                        client, mail_from, rcpts, data, options, xforward, commit
                    )
                except _StaleConnection:
                    client.close()
                    if attempt == 2 or not reused:
                        return _all(rcpts, UpstreamReply(451, "4.4.2 upstream connection lost"))
            raise AssertionError("unreachable")  # pragma: no cover

    async def _transaction(
        self,
        client: aiosmtplib.SMTP,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        options: Sequence[str],
        xforward: XForward = (),
        commit: Commit | None = None,
    ) -> GroupOutcome:
        outcome = GroupOutcome()
        body_sent = False
        try:
            try:
                if client.is_ehlo_or_helo_needed:
                    await client.ehlo()  # the extensions decide which MAIL options may go
                if xforward and client.supports_extension("xforward"):
                    await _send_xforward(client, xforward)
                mail_options = [o for o in options if _supported(client, o)]
                await client.mail(mail_from, options=mail_options, encoding="utf-8")
            except aiosmtplib.SMTPServerDisconnected as exc:
                raise _StaleConnection from exc
            except aiosmtplib.SMTPSenderRefused as exc:
                await _reset(client)
                self._release(client)
                return _all(rcpts, UpstreamReply(exc.code, exc.message))
            for rcpt in rcpts:
                try:
                    await client.rcpt(rcpt, encoding="utf-8")
                    outcome.replies[rcpt] = UpstreamReply(250, "2.1.5 ok")
                except aiosmtplib.SMTPRecipientRefused as exc:
                    outcome.replies[rcpt] = UpstreamReply(exc.code, exc.message)
            accepted = outcome.accepted()
            if not accepted:
                await _reset(client)
                self._release(client)
                return outcome
            body_sent = True
            try:
                reply = await _data(client, data, accepted, commit or _no_commit)
                final = UpstreamReply(reply.code, reply.message)
            except aiosmtplib.SMTPDataError as exc:
                final = UpstreamReply(exc.code, exc.message)
            for rcpt in accepted:
                outcome.replies[rcpt] = final
            self._release(client)
            return outcome
        except _StaleConnection:
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            what = "after the message was sent" if body_sent else "during the transaction"
            log.warning("upstream failed %s: %s", what, exc)
            deferred = UpstreamReply(451, f"4.4.2 upstream failed {what}: {exc}")
            for rcpt in rcpts:
                if rcpt not in outcome.replies or outcome.replies[rcpt].accepted:
                    outcome.replies[rcpt] = deferred
            return outcome

    def _release(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and self._idle.qsize() < self.settings.pool_size:
            self._idle.put_nowait(client)
        else:
            client.close()

    async def close(self) -> None:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            try:
                await asyncio.wait_for(client.quit(), timeout=2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


async def _no_commit(rcpts: Sequence[str]) -> None:
    return None


async def _data(
    client: aiosmtplib.SMTP, data: bytes, accepted: Sequence[str], commit: Commit
) -> aiosmtplib.SMTPResponse:
    """aiosmtplib's DATA, with ``commit`` (the ledger's in-flight entry) written while the
    upstream decides on the end of the data: a relay killed after the entry was written
    sends no second copy on the retry. The entry is written after the end line, not before:
    a kill between the two then risks a duplicate (the upstream has it all), never a loss."""
    protocol = client.protocol
    if protocol is None or protocol._command_lock is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    # The bytes are the message as filtered (CRLF only, smtp/canonical.py): dot-stuffing is the
    # one change; a last line without its CRLF gets one (the end line needs it).
    body = PERIOD_REGEX.sub(b"..", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    async with protocol._command_lock:
        protocol._response_pending = True
        protocol.write(b"DATA\r\n")
        start = await protocol.read_response(timeout=client.timeout)
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol._response_pending = True
        protocol.write(body + b".\r\n")
        await commit(accepted)
        reply = await protocol.read_response(timeout=client.timeout)
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return reply


class _StaleConnection(Exception):
    pass


def _supported(client: aiosmtplib.SMTP, option: str) -> bool:
    """Pass BODY=8BITMIME and SMTPUTF8 through only where the upstream announced them."""
    upper = option.upper()
    if upper.startswith("BODY=8BITMIME"):
        return client.supports_extension("8bitmime")
    if upper == "SMTPUTF8":
        return client.supports_extension("smtputf8")
    return upper.startswith("BODY=")


async def _send_xforward(client: aiosmtplib.SMTP, xforward: XForward) -> None:
    """Rule 5: the original client's attributes, as many commands as the line length needs."""
    announced = client.esmtp_extensions.get("xforward", "").split()
    for arguments in xfwd.commands(xforward, announced):
        reply = await client.execute_command(b"XFORWARD", arguments.encode("ascii"))
        if reply.code != 250:
            log.warning("upstream refused XFORWARD: %s %s", reply.code, reply.message)
            return


async def _reset(client: aiosmtplib.SMTP) -> None:
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


def make_upstream(settings: UpstreamSettings, local_hostname: str | None = None) -> Upstream:
    if settings.url.startswith("file:"):
        return FileUpstream(settings.url.removeprefix("file:").removeprefix("//"))
    return SmtpUpstream(settings, local_hostname)
