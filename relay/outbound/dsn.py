"""Delivery status notifications (RFC 3464) for recipients the upstream refused for good.

The relay answers 250 when some recipients were accepted and others refused permanently, so it
owes the sender a report, as any MTA that accepted a message does, and honours what the
sender asked for in its DSN parameters (RFC 3461).

Rule 1: a recipient is reported only when its ``NOTIFY`` asked for failures or was not given
        (RFC 3461 4.1): ``NOTIFY=NEVER`` or ``NOTIFY=SUCCESS,DELAY`` gets no notice.
Rule 2: the per-message part names the sender's ``ENVID`` (``Original-Envelope-Id``) and each
        recipient's ``ORCPT`` (``Original-Recipient``), both decoded from xtext (RFC 3461 4.2,
        4.4; RFC 3464 2.2.1, 2.3.1).
Rule 3: the third part returns the original message's header block only (its body could hold
        personal data the sender already has), unless the sender asked ``RET=FULL``: then the
        whole message as received (RFC 3461 4.3).
Rule 4: pure; returns the bytes of a multipart/report message with CRLF line endings.
Rule 5: a copy the relay withholds itself (``FilterResult.withheld``: a signed part's tracker
        without a basis) is reported the same way, as the relay's own permanent refusal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from relay import replies
from relay.model import Envelope
from relay.outbound.dsn_report import Report, mail_params, one_line, rcpt_params
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


def failure_notice(
    envelope: Envelope,
    refused: Mapping[str, str],
    *,
    reporting_mta: str,
    message_id: str,
    relay_id: str,
    original: bytes = b"",
    now: datetime | None = None,
    intro: Sequence[str] | None = None,
) -> bytes | None:
    """The notice for the refused recipients that asked for one (Rules 1-3), or None."""
    if not envelope.mail_from:
        return None  # never bounce a bounce
    per_rcpt = dict(zip(envelope.rcpt_tos, envelope.rcpt_options, strict=False))
    wanted: dict[str, str] = {}
    orcpts: dict[str, tuple[str, str]] = {}
    for rcpt, reply in refused.items():
        rparams = rcpt_params(per_rcpt.get(rcpt, ()))
        if rparams.notify is not None and "FAILURE" not in rparams.notify:
            continue
        wanted[rcpt] = reply
        if rparams.orcpt is not None:
            orcpts[rcpt] = rparams.orcpt
    if not wanted:
        return None
    mail = mail_params(envelope.mail_options)
    return build_dsn(
        reporting_mta=reporting_mta,
        original_sender=envelope.mail_from,
        message_id=message_id,
        failures=wanted,
        relay_id=relay_id,
        now=now,
        envid=mail.envid,
        orcpts=orcpts,
        original=original,
        full=mail.ret == "FULL",
        intro=intro,
    )


def header_block(message: bytes) -> bytes:
    """The original's header fields, up to and without the blank line."""
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def build_dsn(
    *,
    reporting_mta: str,
    original_sender: str,
    message_id: str,
    failures: Mapping[str, str],
    relay_id: str,
    now: datetime | None = None,
    envid: str | None = None,
    orcpts: Mapping[str, tuple[str, str]] | None = None,
    original: bytes = b"",
    full: bool = False,
    intro: Sequence[str] | None = None,
) -> bytes:
    """``intro``: the lines after "was delivered to its other", when the default (the next
    mail server refused) does not say what happened."""
    report = Report(reporting_mta, original_sender, relay_id, now or datetime.now(UTC), envid)
    orcpts = orcpts or {}
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
        per_rcpt.append("")
        if rcpt in orcpts:
            kind, address = orcpts[rcpt]
            per_rcpt.append(f"Original-Recipient: {kind}; {one_line(address)}")
        per_rcpt += [
            f"Final-Recipient: rfc822; {rcpt}",
            "Action: failed",
            f"Status: {status}",
            f"Diagnostic-Code: smtp; {code} {one_line(reply.split(' ', 1)[-1])}",
        ]
    head = report.head("Undelivered Mail Returned to Sender", "dsn", human, per_rcpt)
    tail = report.end()
    if not original:
        return head + tail
    kind = "message/rfc822" if full else "text/rfc822-headers"
    returned = original if full else header_block(original)
    if not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    third = f"--{report.boundary}\r\nContent-Type: {kind}\r\n\r\n".encode()
    return head + third + returned + b"\r\n" + tail
