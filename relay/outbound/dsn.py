"""Delivery status notifications (RFC 3464) for recipients the upstream refused for good.

The relay answers 250 when some recipients were accepted and others refused permanently, so it
owes the sender a report, as any MTA that accepted a message does. The report carries only the
headers of the original message (no body: it could hold personal data the sender already has).

Rule: pure; returns the bytes of a multipart/report message with CRLF line endings.
Rule: a copy the relay withholds itself (``FilterResult.withheld``: a signed part's tracker
      without a basis) is reported the same way, as the relay's own permanent refusal.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from relay import replies
from relay.outbound.forward import UpstreamReply
from relay.replies import Reply

# The failure notice's first lines when the relay itself withheld some copies.
NOTICE_INTRO = (
    "recipients, but not to these: the relay did not deliver it (the reason follows each",
    "address), or the next mail server refused it for good:",
)


def withheld_replies(withheld: Mapping[str, str]) -> dict[str, UpstreamReply]:
    """The relay's own permanent refusal, as an upstream reply, for each withheld copy."""
    texts = {r: replies.SIGNED_NO_BASIS.with_detail(why).text for r, why in withheld.items()}
    return {r: UpstreamReply(int(text[:3]), text[4:]) for r, text in texts.items()}


def first_refusal(withheld: Mapping[str, str]) -> Reply:
    """What the client is told when no recipient gets the message."""
    return replies.SIGNED_NO_BASIS.with_detail(next(iter(withheld.values())))


def build_dsn(
    *,
    reporting_mta: str,
    original_sender: str,
    message_id: str,
    failures: Mapping[str, str],
    relay_id: str,
    now: datetime | None = None,
    intro: Sequence[str] | None = None,
) -> bytes:
    """``intro``: the lines after "was delivered to its other", when the default (the next
    mail server refused) does not say what happened."""
    now = now or datetime.now(UTC)
    boundary = f"=_dsn_{uuid.uuid4().hex}"
    human = [
        "This is the consent-relay at " + reporting_mta + ".",
        "",
        "Your message " + (message_id or "(no Message-ID)") + " was delivered to its other",
        *(
            intro
            or ["recipients, but the next mail server refused it for good for these recipients:"]
        ),
        "",
    ]
    per_rcpt: list[str] = []
    for rcpt, reply in failures.items():
        human.append(f"  <{rcpt}>: {reply}")
        code = reply.split(" ", 1)[0]
        status = reply.split(" ", 2)[1] if reply.count(" ") >= 1 else "5.0.0"
        if not status[:1].isdigit():
            status = "5.0.0"
        per_rcpt += [
            "",
            f"Final-Recipient: rfc822; {rcpt}",
            "Action: failed",
            f"Status: {status}",
            f"Diagnostic-Code: smtp; {code} {reply.split(' ', 1)[-1]}",
        ]
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{original_sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{relay_id}.dsn@{reporting_mta}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *human,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Relay-Id: {relay_id}",
        f"Arrival-Date: {format_datetime(now)}",
        *per_rcpt,
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")
