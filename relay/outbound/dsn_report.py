"""What every delivery status notification the relay writes has in common (RFC 3464): the
header, the human-readable part and the machine-readable part of a multipart/report, and the
sender's DSN parameters read back from the envelope (RFC 3461).

Stage: outbound, pure. Used by ``dsn`` (failures) and ``dsn_relayed`` (``Action: relayed``).

Rule 1: a field value is one line: a reply, an ENVID or an ORCPT could hold a line break.
Rule 2: parameters were checked at MAIL and RCPT; reading them again for a notice never
        refuses it (an unreadable parameter counts as not given).
Rule 3: ``Report.head`` ends after the delivery-status part; the caller adds a returned part,
        if any, and then ``Report.end``. Lines end with CRLF.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime

from relay.smtp import param_syntax


def one_line(text: str) -> str:
    """Rule 1."""
    return " ".join(text.split())


def rcpt_params(written: Sequence[str]) -> param_syntax.RcptParams:
    """Rule 2: a recipient's NOTIFY and ORCPT."""
    try:
        return param_syntax.rcpt(tuple(written), smtputf8=True)
    except param_syntax.ParamError:
        return param_syntax.RcptParams(tuple(written))


def mail_params(written: Sequence[str]) -> param_syntax.MailParams:
    """Rule 2: the sender's RET and ENVID."""
    try:
        return param_syntax.mail(tuple(written))
    except param_syntax.ParamError:
        return param_syntax.MailParams(tuple(written))


@dataclass(frozen=True)
class Report:
    """One notice's envelope facts; ``head`` writes it up to the end of its delivery-status part
    (Rule 3), ``end`` closes it. The per-message fields follow RFC 3464 2.2's order
    (Original-Envelope-Id, Reporting-MTA, Arrival-Date), then the relay's own X-Relay-Id."""

    reporting_mta: str
    original_sender: str
    relay_id: str
    now: datetime
    envid: str | None = None
    boundary: str = field(default_factory=lambda: f"=_dsn_{uuid.uuid4().hex}")

    def head(self, subject: str, tag: str, human: Sequence[str], per_rcpt: Sequence[str]) -> bytes:
        """``tag`` makes the notice's Message-ID (``<relay id>.<tag>@<reporting MTA>``)."""
        per_message = [f"Original-Envelope-Id: {one_line(self.envid)}"] if self.envid else []
        per_message += [
            f"Reporting-MTA: dns; {self.reporting_mta}",
            f"Arrival-Date: {format_datetime(self.now)}",
            f"X-Relay-Id: {self.relay_id}",
        ]
        lines = [
            f"From: Mail Delivery System <MAILER-DAEMON@{self.reporting_mta}>",
            f"To: <{self.original_sender}>",
            f"Subject: {subject}",
            f"Date: {format_datetime(self.now)}",
            f"Message-ID: <{self.relay_id}.{tag}@{self.reporting_mta}>",
            "Auto-Submitted: auto-replied",
            "MIME-Version: 1.0",
            "Content-Type: multipart/report; report-type=delivery-status;"
            f' boundary="{self.boundary}"',
            "",
            f"--{self.boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "",
            *human,
            "",
            f"--{self.boundary}",
            "Content-Type: message/delivery-status",
            "",
            *per_message,
            *per_rcpt,
            "",
        ]
        return "\r\n".join(lines).encode("utf-8") + b"\r\n"

    def end(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()
