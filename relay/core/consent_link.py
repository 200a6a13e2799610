"""Consent links and consent requests: what may be tracked in asking for consent, and when.

Stage: pure, per message then per recipient, conducted by ``filtering``. Input: the category,
the detected links and placeholders, the recipient's consent state and the policy. Output:
the click-tracking links that make a consent request unsendable, and for each
``{{relay:consent_url}}`` placeholder a decision: filled, or left empty and why.

Rule 1: a consent request carries no other tracking (recommendation 4.2: the email asking for
        consent "shall not contain a tracking device subject to consent"; the ESP guidance:
        "only the consent collection link is tracked"). Its open pixels are stripped by the
        table (row ``*-consent-request``); a vendor's click-tracking link (recognised by the
        ``[[click_tracker]]`` signatures) cannot be unwrapped offline with certainty, so such a
        message is refused with a 5xx naming the links' rule ids. The ESP's own click tracking
        is switched off for it (``esp``).
Rule 2: the relay's consent link is the tracking link the recommendation asks for (4.2: "the
        use of a tracking link in order to allow the sole holder of the email address to
        express his consent", exempt as a security measure): each placeholder is recorded as
        a tracker of purpose ``authentication_security``, basis ``exempt``, rule
        ``consent-link``, so that the decision record lists every link that identifies the
        recipient.
Rule 3: the re-ask window applies to a placeholder in any email (4.2: "no longer solicited in
        subsequent emails for a certain period of time ... 6 months"; inactivity counts as
        refusal): inside ``[reask] days`` after a refusal, a withdrawal or an unanswered
        request, the placeholder is left empty (the link is not there), the message still
        goes out, and the decision says ``remove`` with rule ``reask-window``. A consent state
        that could not be read gives no link either (rule ``reask-unknown``: fail closed, the
        window cannot be checked). A ``consent_request`` inside the window is refused at SMTP
        time instead (``decide.reask_blocked_until``, the conductor).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from relay.core.decide import reask_blocked_until
from relay.core.policy import Policy
from relay.model import (
    Action,
    Basis,
    Candidate,
    Category,
    ConsentState,
    Decision,
    ElementKind,
    Link,
    Placeholder,
    Purpose,
    Span,
)

CONSENT_LINK_RULE = "relay-consent-link"
FILLED = "consent-link"
REASK_WINDOW = "reask-window"
REASK_UNKNOWN = "reask-unknown"
NO_CONTROLLER = "no-controller"  # no configured controller covers the message (filtering)


def click_trackers(category: Category, links: Sequence[Link]) -> tuple[Link, ...]:
    """The vendor click-tracking links that make a consent request unsendable (Rule 1)."""
    if category is not Category.CONSENT_REQUEST:
        return ()
    return tuple(link for link in links if link.rule)


def link_candidates(placeholders: Sequence[Placeholder], first_id: int) -> tuple[Candidate, ...]:
    """One recorded tracker per ``{{relay:consent_url}}`` placeholder (Rule 2)."""
    out: list[Candidate] = []
    for ph in placeholders:
        if ph.name != "consent_url":
            continue
        out.append(
            Candidate(
                id=first_id + len(out),
                part_index=ph.part_index,
                url="{{relay:consent_url}}",
                element=ElementKind.OTHER,
                element_text="{{relay:consent_url}} (the relay's consent link)",
                rule=CONSENT_LINK_RULE,
                vendor="consent-relay",
                purpose=Purpose.AUTHENTICATION_SECURITY,
                no_consent_action=Action.REMOVE,
                identifying_params=(),
                url_span=Span(ph.span.start, ph.span.end),
                removal_span=Span(ph.span.start, ph.span.end),
            )
        )
    return tuple(out)


def link_decisions(
    links: Sequence[Candidate],
    category: Category,
    consent: ConsentState,
    policy: Policy,
    now: datetime,
    *,
    linkable: bool = True,
) -> tuple[tuple[Decision, ...], bool]:
    """(the decision for each consent link, whether the links are filled) for one recipient
    (Rule 3); ``linkable`` False when no controller covers the message (no page can ask)."""
    if not links:
        return (), True
    if not linkable:
        rule, fill = NO_CONTROLLER, False
    elif category is Category.CONSENT_REQUEST:
        rule, fill = FILLED, True  # the window was checked at SMTP time
    elif not consent.available:
        rule, fill = REASK_UNKNOWN, False
    elif reask_blocked_until(consent, policy, now) is not None:
        rule, fill = REASK_WINDOW, False
    else:
        rule, fill = FILLED, True
    action, basis = (Action.KEEP, Basis.EXEMPT) if fill else (Action.REMOVE, Basis.NONE)
    return tuple(Decision(c.id, action, basis, rule) for c in links), fill
