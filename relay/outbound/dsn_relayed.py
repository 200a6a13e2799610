"""The "relayed" notice (RFC 3461 5.2.2, RFC 3464) the relay owes a sender who asked for it.

When the upstream does not announce DSN, the relay cannot pass NOTIFY, ORCPT, RET or ENVID on,
so it is the last hop that can honour them: for each recipient whose NOTIFY included SUCCESS
it reports the hand-over with ``Action: relayed`` (Postfix does the same). A recipient whose
NOTIFY said NEVER, or did not include SUCCESS, is owed nothing for its success; its failures,
if any, are then reported (or not) by the upstream, which never saw the request.

Rule 1: ``build_relayed_dsn`` is pure; it returns the bytes of a multipart/report message with
        CRLF line endings and carries no part of the original message (RET governs what a
        failure notice returns). ``notify_relayed`` sends it, with the null sender.
Rule 2: the notice is sent once, right after the upstream accepted the recipients, whatever the
        client is answered: those recipients are in the ledger and are never sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from relay.model import Envelope
from relay.outbound.dsn_report import Report, mail_params, one_line, rcpt_params
from relay.outbound.outcome import GroupOutcome, Upstream
from relay.settings import Settings

log = logging.getLogger("relay.outbound.dsn_relayed")


def build_relayed_dsn(
    *,
    reporting_mta: str,
    remote_mta: str,
    original_sender: str,
    message_id: str,
    relayed: Mapping[str, str],
    rcpt_options: Mapping[str, Sequence[str]],
    mail_options: Sequence[str],
    relay_id: str,
    now: datetime | None = None,
) -> bytes:
    """``relayed``: recipient -> the upstream's reply that accepted it."""
    envid = mail_params(mail_options).envid
    report = Report(reporting_mta, original_sender, relay_id, now or datetime.now(UTC), envid)
    human = [
        "This is the consent-relay at " + reporting_mta + ".",
        "",
        "Your message " + (message_id or "(no Message-ID)") + " was handed over to",
        remote_mta + " for these recipients. That server does not offer delivery status",
        "notifications, so no further notice of success can be sent:",
        "",
    ]
    per_rcpt: list[str] = []
    for rcpt, reply in relayed.items():
        human.append(f"  <{rcpt}>: {reply}")
        per_rcpt.append("")
        orcpt = rcpt_params(rcpt_options.get(rcpt, ())).orcpt
        if orcpt is not None:
            per_rcpt.append(f"Original-Recipient: {orcpt[0]}; {one_line(orcpt[1])}")
        per_rcpt += [
            f"Final-Recipient: rfc822; {rcpt}",
            "Action: relayed",
            "Status: 2.0.0",
            f"Remote-MTA: dns; {remote_mta}",
            f"Diagnostic-Code: smtp; {one_line(reply)}",
        ]
    head = report.head("Successful Mail Delivery Report", "relayed", human, per_rcpt)
    return head + report.end()


async def notify_relayed(
    upstream: Upstream,
    settings: Settings,
    envelope: Envelope,
    message_id: str,
    outcomes: Sequence[GroupOutcome],
    relay_id: str,
) -> None:
    """Rule 2: one notice for every recipient the upstream accepted without DSN and whose
    NOTIFY asked for SUCCESS; never for a null sender (a notice is not answered by one)."""
    relayed = {r: o.replies[r].text for o in outcomes for r in o.relayed}
    if not relayed or not envelope.mail_from:
        return
    notice = build_relayed_dsn(
        reporting_mta=settings.smtp.hostname or "consent-relay",
        remote_mta=urlsplit(settings.upstream.url).hostname or "upstream",
        original_sender=envelope.mail_from,
        message_id=message_id,
        relayed=relayed,
        rcpt_options=dict(zip(envelope.rcpt_tos, envelope.rcpt_options, strict=False)),
        mail_options=envelope.mail_options,
        relay_id=relay_id,
    )
    outcome = await upstream.send("", [envelope.mail_from], notice, [])
    if not outcome.accepted():
        log.error("[%s] could not send the relayed notice: %s", relay_id, outcome.replies)
