"""After the upstream answered: the one SMTP reply the client gets (pipeline Rules 1, 2), the
metrics of the decisions, and the ``requested`` consent events a consent request leaves.

Rule 1: 250 only when every recipient was accepted upstream, now or by an earlier attempt
        (``done``, keyed by ``key``); any deferral, or a recipient left unanswered, is a 4xx.
Rule 2: some refused for good and others accepted: 250 saying how many were refused and, once
        the conductor sent the failure notice, whether it was sent or why not
        (``with_notice``); all refused: 554 with the upstream's reply.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime

from relay import replies
from relay.core.filtering import FilterResult
from relay.model import ConsentEvent, Envelope, EventType, Purpose
from relay.ops import metrics
from relay.outbound.forward import GroupOutcome, UpstreamReply
from relay.replies import Reply


def summarise(
    rcpts: Sequence[str],
    outcomes: Sequence[GroupOutcome],
    done: Collection[str],
    key: Callable[[str], str] = str.lower,
) -> Reply:
    """Map every recipient's upstream answer to the one reply the client gets (Rules 1, 2)."""
    replies_by_rcpt: dict[str, UpstreamReply] = {}
    for outcome in outcomes:
        replies_by_rcpt.update(outcome.replies)
    delivered = deferred = refused = 0
    last_refusal = last_deferral = ""
    for rcpt in rcpts:
        reply = replies_by_rcpt.get(rcpt)
        if reply is None:
            if key(rcpt) in done:
                delivered += 1
            else:
                deferred += 1
            continue
        if reply.accepted:
            delivered += 1
        elif reply.permanent:
            refused += 1
            last_refusal = reply.text
        else:
            deferred += 1
            last_deferral = reply.text
    if deferred:
        answer = replies.TEMP_PARTIAL if delivered or refused else replies.TEMP_UPSTREAM
        return answer.with_detail(f"upstream said: {last_deferral}") if last_deferral else answer
    if refused and not delivered:
        return replies.UPSTREAM_REJECTED.with_detail(last_refusal)
    if refused:
        return replies.OK_QUEUED.with_detail(f"{refused} recipient(s) refused")
    return replies.OK_QUEUED


def with_notice(answer: Reply, notice: str) -> Reply:
    """The 250 of Rule 2 with what became of the failure notice (``dsn_failure`` Rule 1)."""
    return Reply(answer.code, answer.enhanced, f"{answer.message}, {notice}", answer.id)


def count_decisions(result: FilterResult, outcomes: Sequence[GroupOutcome]) -> None:
    for outcome in outcomes:
        for reply in outcome.replies.values():
            metrics.count(metrics.UPSTREAM_REPLIES, metrics.reply_class(reply.code))
    for rplan in result.plans:
        if rplan.footer:
            metrics.count(metrics.FOOTERS)
        for decision in rplan.decisions:
            purpose = result.candidates[decision.candidate_id].purpose.value
            metrics.count(metrics.TRACKERS, decision.action.value, purpose)


# Purposes a consent request asks about: every purpose that may need consent.
REQUESTED_PURPOSES = tuple(p for p in Purpose if p is not Purpose.AUTHENTICATION_SECURITY)


def requested_events(
    envelope: Envelope, result: FilterResult, upstream: Mapping[str, str], when: datetime
) -> list[ConsentEvent]:
    """One ``requested`` event per recipient the upstream accepted a consent request for."""
    return [
        ConsentEvent(
            event=EventType.REQUESTED,
            purposes=REQUESTED_PURPOSES,
            address=rcpt,
            occurred_at=when,
            actor="system",
            method="relay",
            source={"message_ref": result.message_id},
            rules_digest=result.rules_digest,
            controller=result.controller.id if result.controller else "",
        )
        for rcpt in envelope.rcpt_tos
        if upstream.get(rcpt, "").startswith("2")
    ]
