"""Sending the failure notice the relay owes (``dsn``), and saying what became of it.

Stage: outbound (async edge). Input: the envelope, the recipients refused for good with their
replies, the original message. Output: the notice sent upstream to the envelope sender, and one
short phrase saying what happened, for the client's 250 reply and the log.

Rule 1: the phrase tells the truth: ``notice sent`` only once the upstream accepted the notice;
        otherwise why there is none: the null sender (a notice is never sent to ``<>``), the
        recipients' ``NOTIFY=NEVER`` or a NOTIFY without FAILURE (RFC 3461 4.1), or the
        upstream not accepting the notice (its reply is logged).
Rule 2: when only some of the refused recipients asked for a notice, the phrase says for how
        many it was sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from relay.model import Envelope
from relay.outbound.dsn import failure_notice
from relay.outbound.dsn_report import rcpt_params
from relay.outbound.outcome import Upstream

log = logging.getLogger("relay.outbound.dsn_failure")

SENT = "notice sent"
NULL_SENDER = "no notice: null sender"
NOTIFY_NEVER = "no notice: NOTIFY=NEVER"
NOT_ASKED = "no notice: NOTIFY did not ask for failures"
NOT_ACCEPTED = "no notice: the upstream did not accept it"


def asked_for_failures(envelope: Envelope, refused: Sequence[str]) -> tuple[list[str], bool]:
    """The refused recipients whose NOTIFY asks for a failure notice (or was not given), and
    whether every other one said ``NOTIFY=NEVER``."""
    options = dict(zip(envelope.rcpt_tos, envelope.rcpt_options, strict=False))
    asked: list[str] = []
    never = True
    for rcpt in refused:
        notify = rcpt_params(options.get(rcpt, ())).notify
        if notify is None or "FAILURE" in notify:
            asked.append(rcpt)
        elif "NEVER" not in notify:
            never = False
    return asked, never


async def send_failure_notice(
    upstream: Upstream,
    envelope: Envelope,
    refused: Mapping[str, str],
    *,
    reporting_mta: str,
    message_id: str,
    relay_id: str,
    original: bytes,
    intro: Sequence[str] | None,
) -> str:
    """Send the notice the refused recipients asked for; the phrase of Rules 1 and 2."""
    if not envelope.mail_from:
        return _said(relay_id, refused, NULL_SENDER)
    asked, never = asked_for_failures(envelope, list(refused))
    if not asked:
        return _said(relay_id, refused, NOTIFY_NEVER if never else NOT_ASKED)
    # NOTIFY, ORCPT, ENVID and RET as the sender asked (dsn.py).
    notice = failure_notice(
        envelope,
        refused,
        reporting_mta=reporting_mta,
        message_id=message_id,
        relay_id=relay_id,
        original=original,
        intro=intro,
    )
    assert notice is not None  # a sender, and recipients that asked
    options = ["BODY=8BITMIME"] if not notice.isascii() else []
    outcome = await upstream.send("", [envelope.mail_from], notice, options)
    if not outcome.accepted():
        log.error("[%s] could not send the failure notice: %s", relay_id, outcome.replies)
        return _said(relay_id, refused, NOT_ACCEPTED)
    if len(asked) < len(refused):
        return _said(
            relay_id, refused, f"notice sent for {len(asked)} (the others' NOTIFY asked for none)"
        )
    return _said(relay_id, refused, SENT)


def _said(relay_id: str, refused: Mapping[str, str], phrase: str) -> str:
    log.info("[%s] %d recipient(s) refused for good: %s", relay_id, len(refused), phrase)
    return phrase
