"""SMTP out, the entry point: which upstream ``[upstream] url`` names, and the file outbox.

Input: rendered groups (recipients with byte-identical output) and the envelope sender.
Output: a ``GroupOutcome`` per group: which recipients the upstream accepted, refused for good
(5xx) or deferred (4xx, timeout, connection lost).

Modules of this folder, in the order a message meets them:
    pool.py         the connections to an SMTP upstream, reused; retries a stale one once
    session.py      connect, greeting, EHLO, STARTTLS (the TLS levels), AUTH
    transaction.py  MAIL / RCPT / DATA pipelined (RFC 2920), the message, its reply
    connection.py   one connection: bytes out as given, replies in
    outcome.py      UpstreamReply, GroupOutcome, the Upstream protocol
    dsn.py, dsn_relayed.py   the notices the relay owes the sender

Rule 1: ``file:`` upstreams write each group atomically (temporary name, fsync, rename) with
        its envelope beside it, so a reader never sees half a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from relay import replies
from relay.outbound.outcome import (
    Commit,
    Downgrade,
    GroupOutcome,
    Upstream,
    UpstreamReply,
    XForward,
    every,
)
from relay.outbound.pool import SmtpUpstream
from relay.settings import UpstreamSettings

__all__ = [
    "Commit",
    "FileUpstream",
    "GroupOutcome",
    "SmtpUpstream",
    "Upstream",
    "UpstreamReply",
    "XForward",
    "make_upstream",
]

log = logging.getLogger("relay.outbound.forward")


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
        rcpt_options: Mapping[str, Sequence[str]] | None = None,
        downgrade: Downgrade | None = None,
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
        if rcpt_options and any(rcpt_options.get(r) for r in rcpts):
            envelope["rcpt_options"] = {r: list(rcpt_options.get(r, ())) for r in rcpts}
        if xforward:
            envelope["xforward"] = dict(xforward)
        try:
            await asyncio.to_thread(self._write, name, data, envelope)
        except OSError as exc:
            log.error("outbox write failed: %s", exc.strerror)
            return every(rcpts, UpstreamReply.own(replies.OUT_OUTBOX, str(exc.strerror)))
        return every(rcpts, UpstreamReply(250, f"2.0.0 written to {name}.eml"))

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


def make_upstream(settings: UpstreamSettings, local_hostname: str | None = None) -> Upstream:
    if settings.url.startswith("file:"):
        return FileUpstream(settings.url.removeprefix("file:").removeprefix("//"))
    return SmtpUpstream(settings, local_hostname)
