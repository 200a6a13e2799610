"""Signed or encrypted parts: trackers the relay may not touch -> deliver unchanged, or withhold.

Stage: pure, per recipient, after ``decide``. Input: the recipient's plan, the candidates, the
ids of candidates inside locked parts (``Part.locked``: multipart/signed, multipart/encrypted,
application/pkcs7-mime). Output: the plan with those trackers' decisions made final, and the
reason this recipient cannot get the message, if any.

Rule 1: a locked part is never modified (``rewrite`` Rule 3): a broken signature helps nobody,
        and the recipient's client would show the message as tampered with.
Rule 2: a tracker inside one stays only where the table gave it a basis that holds for the
        tracker as written: consent or the legacy regime (``gateway`` becomes ``keep``: the
        relay cannot put its gateway in front) or an exemption kept as written
        (authentication security). The deliverability exemption holds only in its minimised
        form (recommendation 3.2), which cannot be applied inside a signed part.
Rule 3: every other tracker there would reach the recipient without a basis, which SPEC 2
        forbids (recommendation 2.1: loading it is the read operation). That recipient's copy
        is withheld: its decisions say ``remove`` with rule ``signed-no-basis``, and the
        conductor tells the client why (a 5xx when no recipient gets the message, else a
        failure notice for the withheld ones). Recipients with a basis get it unchanged.
Rule 4: with ``[smtp] signed = "reject"`` every signed or encrypted message is refused before
        this stage (``filtering``); no setting delivers a tracker without a basis.
"""

from __future__ import annotations

from collections.abc import Mapping

from relay.model import Action, Basis, Candidate, Decision, RecipientPlan

SIGNED_NO_BASIS = "signed-no-basis"

# Actions that leave a tracker working, which inside a locked part means: as written.
_KEPT = frozenset({Action.KEEP, Action.GATEWAY, Action.STRIP_PARAMS})


def _holds_as_written(decision: Decision) -> bool:
    return decision.basis is not Basis.NONE and decision.action in _KEPT


def lock_decisions(
    rplan: RecipientPlan, candidates: Mapping[int, Candidate], locked_ids: frozenset[int]
) -> tuple[RecipientPlan, str]:
    """The plan with locked trackers decided (Rules 2, 3) and the reason to withhold ("")."""
    if not locked_ids:
        return rplan, ""
    decisions: list[Decision] = []
    blocked: list[Candidate] = []
    for d in rplan.decisions:
        if d.candidate_id not in locked_ids:
            decisions.append(d)
        elif _holds_as_written(d):
            decisions.append(
                Decision(d.candidate_id, Action.KEEP, d.basis, d.policy_rule, d.consent_event_ids)
            )
        else:
            decisions.append(Decision(d.candidate_id, Action.REMOVE, Basis.NONE, SIGNED_NO_BASIS))
            blocked.append(candidates[d.candidate_id])
    plan = RecipientPlan(
        rplan.rcpt, rplan.recipient_key, tuple(decisions), rplan.footer, rplan.needs_links
    )
    if not blocked:
        return plan, ""
    found = ", ".join(dict.fromkeys(f"{c.rule} ({c.purpose.value})" for c in blocked))
    reason = (
        f"a signed or encrypted part carries tracker(s) this recipient has no basis for: "
        f"{found}; such parts are never modified (rule {SIGNED_NO_BASIS})"
    )
    return plan, reason
