"""Finishing a recipient's plan: what the recommendation asks beyond the decision table.

Stage: pure, once per message (``MessageRules``) and once per recipient (``finish``), between
``decide`` and rendering; conducted by ``filtering``. Input: the parsed message, the detected
trackers, links and placeholders, the category, the recipient's plan and consent state.
Output: the plan with every tracker the recipient's copy carries or loses (its own trackers,
the relay's consent links, the ESP's downstream pixel), whether the copy is withheld and why,
whether the ESP may track this copy, whether its consent links are filled.

Rule 1: signed or encrypted parts (``locked``): a tracker there without a basis withholds the
        recipient's copy, never modifies the part.
Rule 2: consent requests: a vendor click-tracking link refuses the message
        (``TrackedConsentRequest``, a 5xx naming the links' rules); each
        ``{{relay:consent_url}}`` is a recorded tracker, filled or left empty by the re-ask
        window (``consent_link``).
Rule 3: the ESP's own open pixel is decided by the table like a campaign_performance tracker
        and recorded (``esp.esp_decision``); where it stays on consent or the legacy regime
        the copy gets the withdrawal footer like any tracked email (SPEC section 2).
Rule 4: recorded-only trackers (consent links, the ESP's pixel) are never edited by
        ``rewrite``: ``VIRTUAL_RULES`` names them, and the renderer leaves them out.
Rule 5: a footer is only claimed where it can be written: in a message whose body parts are
        all signed, none is, and the decision record says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from relay import replies
from relay.core.consent_link import (
    CONSENT_LINK_RULE,
    click_trackers,
    link_candidates,
    link_decisions,
)
from relay.core.decide import decide
from relay.core.esp import ESP_PIXEL_RULE, esp_decision, esp_pixel
from relay.core.locked import lock_decisions
from relay.core.policy import Policy
from relay.errors import TrackedConsentRequest
from relay.model import (
    Action,
    Basis,
    Candidate,
    Category,
    ConsentState,
    Link,
    ParsedMessage,
    Placeholder,
    RecipientPlan,
)

VIRTUAL_RULES = frozenset({ESP_PIXEL_RULE, CONSENT_LINK_RULE})
_BODY_TYPES = frozenset({"text/html", "text/plain"})


@dataclass(frozen=True, slots=True)
class Finished:
    plan: RecipientPlan
    withheld: str  # why this recipient's copy is not delivered ("": it is)
    esp_may_track: bool  # the ESP may add its own tracking to this copy
    fill_consent: bool  # the copy's {{relay:consent_url}} placeholders get the link


class MessageRules:
    """The per-message half: virtual trackers, locked trackers, the consent-request check."""

    def __init__(
        self,
        message: ParsedMessage,
        candidates: tuple[Candidate, ...],
        links: Sequence[Link],
        placeholders: Sequence[Placeholder],
        category: Category,
        policy: Policy,
        *,
        esp_profile: str = "none",
        esp_tracking: str = "consented",
        ses_no_tracking_set: str = "",
    ) -> None:
        tracked = click_trackers(category, links)
        if tracked:
            rules = ", ".join(dict.fromkeys(link.rule or "" for link in tracked))
            detail = f"{len(tracked)} click-tracking link(s) (rules: {rules})"
            raise TrackedConsentRequest(
                f"consent request with {detail}",
                replies.CONSENT_REQUEST_TRACKED.with_detail(detail),
            )
        self.category = category
        self.policy = policy
        self.esp_profile = esp_profile
        self.esp_tracking = esp_tracking
        self.ses_no_tracking_set = ses_no_tracking_set
        self.links = link_candidates(placeholders, len(candidates))
        virtual: tuple[Candidate, ...] = self.links
        self.esp: Candidate | None = None
        if esp_profile != "none":
            self.esp = esp_pixel(esp_profile, len(candidates) + len(self.links))
            virtual += (self.esp,)
        self.candidates = candidates + virtual
        self.by_id = {c.id: c for c in self.candidates}
        locked_parts = {p.index for p in message.parts if p.locked}
        self.locked = bool(locked_parts)
        self.locked_ids = frozenset(c.id for c in candidates if c.part_index in locked_parts)
        self.can_footer = any(
            p.content_type in _BODY_TYPES and p.text is not None and not p.locked
            for p in message.parts
        )

    def finish(
        self,
        rplan: RecipientPlan,
        state: ConsentState,
        pack: str,
        now: datetime,
        *,
        linkable: bool = True,
    ) -> Finished:
        """The recipient's plan with Rules 1-3 applied (``linkable``: a controller covers the
        message, so its page links can be minted)."""
        locked, withheld = lock_decisions(rplan, self.by_id, self.locked_ids)
        decisions = locked.decisions
        link, fill = link_decisions(
            self.links, self.category, state, self.policy, now, linkable=linkable
        )
        decisions += link
        may_track = True
        footer = locked.footer
        if self.esp is not None:
            table = decide(self.esp, self.category, state, self.policy, pack, now)
            recorded, may_track = esp_decision(
                table,
                self.esp_profile,
                tracking=self.esp_tracking,
                ses_no_tracking_set=self.ses_no_tracking_set,
            )
            decisions += (recorded,)
            footer = footer or (
                recorded.action is Action.KEEP and recorded.basis in (Basis.CONSENT, Basis.LEGACY)
            )
        footer = footer and self.can_footer
        plan = RecipientPlan(
            rplan.rcpt, rplan.recipient_key, decisions, footer, rplan.needs_links or footer
        )
        return Finished(plan, withheld, may_track, fill)
