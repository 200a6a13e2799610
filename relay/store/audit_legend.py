"""The auditors' legend: what each code in a decision record means, in plain words.

Stage: pure vocabulary of the audit trail, read by the CSV exports, the auditors' workspace and
the HTML report, so that every place that shows a code explains it the same way.
Input: the ids of SPEC section 1 (categories, purposes, actions, bases, elements) and tracker
records. Output: short labels, one-sentence meanings, and the reason a tracker was kept.

Rule 1: "tracked without consent" has one definition, ``tracked_without_consent``: a tracker
        the recipient's client still fetches from the tracker's server (action ``keep``,
        ``gateway`` or ``strip_params``) on a basis other than ``consent`` or ``exempt``
        (``legacy``, or ``none`` as for a tracker inside a signed part the relay must not
        modify). ``minimise`` never contacts the tracker, so it is not tracking.
Rule 2: a code the legend does not know is shown as itself, never hidden or guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

# Actions after which the tracker's own server still receives the recipient's request.
REACHING_ACTIONS = frozenset({"keep", "gateway", "strip_params"})
# Bases that make such a request lawful without further question.
CLEAR_BASES = frozenset({"consent", "exempt"})

CATEGORIES: Mapping[str, str] = {
    "transactional": "order, invoice, shipping, password reset, account alert, receipt",
    "authentication": "login or one-time code",
    "public_service": "an administration's email for its public-service mission",
    "newsletter": "marketing the recipient asked to receive",
    "marketing": "prospecting, promotions, soft opt-in",
    "consent_request": "an email asking for tracking consent",
}

PURPOSES: Mapping[str, str] = {
    "deliverability": "individual open measurement for deliverability",
    "campaign_performance": "open-rate analysis to measure and optimise campaigns",
    "cross_context_profiling": "profiles used to target the recipient elsewhere",
    "fraud_detection": "detection of suspected fraud",
    "authentication_security": "securing an authentication",
}

ACTIONS: Mapping[str, str] = {
    "keep": "kept as written: the tracker is fetched",
    "gateway": "kept behind the relay's gateway, which checks consent again at each opening",
    "minimise": "rewritten to the relay's day-only counter; the tracker is never contacted",
    "strip_params": "fetched without its identifying parameters",
    "neutralise": "replaced by a transparent inline image: nothing is fetched",
    "remove": "deleted: nothing is fetched",
}

BASES: Mapping[str, str] = {
    "consent": "the recipient's valid consent for the purpose",
    "legacy": "the legacy regime (address collected before the publication date, notice sent "
    "in the grace period, no objection)",
    "exempt": "an exemption of the recommendation (minimised deliverability, authentication)",
    "none": "no legal basis: the tracker must not be fetched",
}

ELEMENTS: Mapping[str, str] = {
    "img": "<img src>",
    "img_srcset": "<img srcset> candidate",
    "source_srcset": "<picture><source srcset> candidate",
    "background": "background attribute",
    "style_attr": "inline style url()",
    "style_block": "<style> block url()",
    "vml": "Outlook VML image",
    "amp_img": "AMP image",
    "input_image": "<input type=image>",
    "other": "other image reference",
}

# Decision-table rows and pseudo-rows that are not in the rule files' tables.
POLICY_ROWS: Mapping[str, str] = {
    "signed-unmodified": "inside a signed or encrypted part, which the relay never modifies",
}

DIMENSIONS: Mapping[str, Mapping[str, str]] = {
    "category": CATEGORIES,
    "purpose": PURPOSES,
    "action": ACTIONS,
    "basis": BASES,
    "element": ELEMENTS,
}


class TrackerFacts(Protocol):
    """What the legend reads of a tracker (``audit_record.TrackerRecord`` fits)."""

    @property
    def rule(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def basis(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def policy_rule(self) -> str: ...


def meaning(dimension: str, code: str) -> str:
    """The plain-words meaning of a code; the code itself when unknown (Rule 2)."""
    return DIMENSIONS.get(dimension, {}).get(code, code)


def tracked_without_consent(tracker: TrackerFacts) -> bool:
    """Rule 1."""
    return tracker.action in REACHING_ACTIONS and tracker.basis not in CLEAR_BASES


def reason(tracker: TrackerFacts) -> str:
    """Why a tracker was treated as it was, in one sentence an inspector can read."""
    row = tracker.policy_rule
    if row in POLICY_ROWS:
        why = POLICY_ROWS[row]
    elif tracker.rule == "esp-open-tracking":
        why = "the upstream ESP's own open pixel"
    else:
        why = f"decision row {row or '?'}"
    basis = BASES.get(tracker.basis, tracker.basis)
    action = ACTIONS.get(tracker.action, tracker.action)
    return f"{action}; basis: {basis}; {why}"


__all__ = [
    "ACTIONS",
    "BASES",
    "CATEGORIES",
    "CLEAR_BASES",
    "DIMENSIONS",
    "ELEMENTS",
    "POLICY_ROWS",
    "PURPOSES",
    "REACHING_ACTIONS",
    "TrackerFacts",
    "meaning",
    "reason",
    "tracked_without_consent",
]
