"""The pure core, conducted: raw message + envelope + consent states -> rendered recipient groups.

Data flow (each stage in its own module, none of them doing I/O):

    parse -> classify -> trackers (detect) -> decide (per recipient) -> rewrite + footer

Rule 1: the message is parsed and analysed once; each recipient only adds a plan, and each
        distinct plan one rendering made of byte-range edits.
Rule 2: recipients whose output carries no per-recipient link and whose decisions are equal
        share one rendering (and so one upstream transaction).
Rule 3: this module does no I/O, so the conductor may run it in the event loop for small
        messages and in a worker process for large ones; everything it returns is picklable.
Rule 4: a consent state that could not be read counts as no consent (fail closed): the
        consent store returns ``available=False`` and the policy strips.
Rule 5: the memory of one message is bounded: groups whose recipients are all in ``skip``
        (delivered by an earlier attempt or batch) are not rendered, and rendering stops
        once the next group could take the renderings past ``budget`` bytes; the groups
        left are listed in ``unrendered`` for the conductor's next batch (always at least
        one group is rendered, so every batch makes progress).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from typing import Any

from relay import replies
from relay.core.decide import decide, plan, reask_blocked_until
from relay.core.dkim_sign import DkimKey, key_for, needs_resign, resign
from relay.core.esp import controlled_headers, esp_controls
from relay.core.footer import footer_edits, message_language
from relay.core.links import LinkMinter, gateway_link_id
from relay.core.parse import parse_message
from relay.core.policy import Policy, pack_for
from relay.core.recipients import recipient_key
from relay.core.rewrite import edits_for, render
from relay.detect.trackers import DetectionRules, detect
from relay.errors import LockedMessage, MalformedMessage
from relay.model import (
    Action,
    Basis,
    Candidate,
    Category,
    ConsentState,
    Decision,
    ElementKind,
    Envelope,
    GatewayLink,
    Header,
    Link,
    ParsedMessage,
    Placeholder,
    Purpose,
    RecipientPlan,
    RenderedGroup,
    Span,
)

# Header fields the application may set for the relay; they never leave it.
RELAY_HEADER_PREFIX = "x-relay-"


@dataclass(frozen=True)
class FilterContext:
    """Everything the pure core needs besides the message; rebuilt on rules reload."""

    detection: DetectionRules
    policy: Policy
    minter: LinkMinter
    footer_wording: Mapping[str, Mapping[str, str]]
    address_key: bytes
    malformed: str = "reject"  # or "strip"
    signed: str = "pass"  # or "reject"
    esp_profile: str = "none"  # the ESP behind the upstream (SPEC section 2)
    ses_no_tracking_set: str = ""
    dkim_mode: str = "off"  # "off", "resign", "upstream" ([dkim] mode)
    dkim_keys: Mapping[str, DkimKey] = field(default_factory=dict)
    dkim_replace_all: bool = False
    report_links: bool = False  # report <a href> and click trackers (relay check), not acted on


@dataclass(frozen=True)
class FilterResult:
    message_id: str
    from_header: str
    category: Category
    category_reason: str
    candidates: tuple[Candidate, ...]
    links: tuple[Link, ...]
    plans: tuple[RecipientPlan, ...]
    packs: Mapping[str, str]
    groups: tuple[RenderedGroup, ...]
    reask_blocked: Mapping[str, datetime]
    defects: tuple[str, ...]
    locked: bool
    rules_digest: str
    # Recipient groups not rendered in this call (Rule 5): render them in a later batch.
    unrendered: tuple[tuple[str, ...], ...] = ()


def _domain(address: str) -> str:
    """Domain of ``a@b``, ``<a@b>`` or ``Name <a@b>`` (a From header), lower-cased."""
    return parseaddr(address)[1].rpartition("@")[2].lower()


def _lock_decisions(rplan: RecipientPlan, locked_ids: frozenset[int]) -> RecipientPlan:
    """Trackers inside a signed/encrypted part pass unmodified, with a decision saying so."""
    if not locked_ids:
        return rplan
    decisions = tuple(
        Decision(d.candidate_id, Action.KEEP, Basis.NONE, "signed-unmodified")
        if d.candidate_id in locked_ids
        else d
        for d in rplan.decisions
    )
    return RecipientPlan(
        rplan.rcpt, rplan.recipient_key, decisions, rplan.footer, rplan.needs_links
    )


# The ESP behind the relay would add its own open pixel after the relay: that pixel is decided
# like any campaign_performance tracker, by the same table, for each recipient.
ESP_OPEN_PIXEL = Candidate(
    id=-1,
    part_index=-1,
    url="",
    element=ElementKind.OTHER,
    element_text="(open pixel the upstream ESP would add)",
    rule="esp-open-tracking",
    vendor="upstream ESP",
    purpose=Purpose.CAMPAIGN_PERFORMANCE,
    no_consent_action=Action.REMOVE,
    identifying_params=(),
    url_span=Span(0, 0),
    removal_span=Span(0, 0),
)


def _unavailable(rkey: str) -> ConsentState:
    return ConsentState(recipient_key=rkey, available=False)


class _Renderer:
    """Renders the variants of one analysed message."""

    def __init__(
        self,
        ctx: FilterContext,
        message: ParsedMessage,
        candidates: tuple[Candidate, ...],
        placeholders: tuple[Placeholder, ...],
        strip_headers: tuple[Header, ...],
        message_ref: str,
        now: datetime,
    ) -> None:
        self.ctx = ctx
        self.message = message
        self.candidates = candidates
        self.placeholders = placeholders
        self.strip_headers = strip_headers
        self.message_ref = message_ref
        self.now = now
        self.lang = message_language(message)

    def esp_headers(self, esp_may_track: bool) -> tuple[tuple[str, str], ...]:
        if self.ctx.esp_profile == "none" or esp_may_track:
            return ()
        existing = self.message.header("X-SMTPAPI")
        return esp_controls(
            self.ctx.esp_profile,
            opens_removed=True,
            ses_no_tracking_set=self.ctx.ses_no_tracking_set,
            existing_smtpapi=existing.strip() if existing else None,
        )

    def render(
        self, rplan: RecipientPlan, esp_may_track: bool = True
    ) -> tuple[bytes, tuple[GatewayLink, ...], tuple[tuple[str, str], ...]]:
        urls: dict[int, str] = {}
        links: list[GatewayLink] = []
        minter = self.ctx.minter
        for decision in rplan.decisions:
            candidate = self.candidates[decision.candidate_id]
            if decision.action not in (Action.GATEWAY, Action.MINIMISE):
                continue
            link_id = gateway_link_id(self.message_ref, candidate.url)
            if decision.action is Action.GATEWAY:
                urls[candidate.id] = minter.gateway_url(
                    rplan.recipient_key, link_id, candidate.purpose, self.now
                )
            else:
                urls[candidate.id] = minter.minimise_url(rplan.recipient_key, link_id, self.now)
            links.append(GatewayLink(link_id, candidate.url, candidate.purpose, decision.action))
        edits = edits_for(self.candidates, rplan.decisions, urls)
        if rplan.footer or self.placeholders:
            page_urls = {
                "withdraw_url": minter.withdraw_url(
                    rplan.recipient_key, self.message_ref, self.now
                ),
                "preferences_url": minter.preferences_url(
                    rplan.recipient_key, self.message_ref, self.now
                ),
                "consent_url": minter.consent_url(rplan.recipient_key, self.message_ref, self.now),
            }
            wording = self.ctx.footer_wording.get(self.lang) or self.ctx.footer_wording.get(
                "fr", {}
            )
            edits += footer_edits(
                self.message,
                self.placeholders,
                page_urls,
                inject=rplan.footer,
                lang=self.lang,
                wording=wording,
            )
        controls = self.esp_headers(esp_may_track)
        remove = self.strip_headers
        if controls:
            # The application's own tracking switches would contradict ours: ours replace them.
            names = controlled_headers(self.ctx.esp_profile)
            remove += tuple(h for h in self.message.headers if h.name.lower() in names)
        data = render(self.message, edits, remove_headers=remove, add_headers=controls)
        return self.sign(data), tuple(links), controls

    def sign(self, data: bytes) -> bytes:
        """A signature the relay's edits broke is removed, and replaced when we hold the key."""
        raw = self.message.raw
        if self.ctx.dkim_mode == "off" or not needs_resign(raw, data):
            return data
        key = key_for(raw, self.ctx.dkim_keys) if self.ctx.dkim_mode == "resign" else None
        return resign(data, key, original=raw, replace_all=self.ctx.dkim_replace_all)


def _parse(ctx: FilterContext, raw: bytes) -> ParsedMessage:
    message = parse_message(raw)
    if message.defects and ctx.malformed == "reject":
        raise MalformedMessage(
            "; ".join(message.defects[:3]),
            replies.BAD_MIME.with_detail("; ".join(message.defects[:3])),
        )
    return message


def filter_message(
    ctx: FilterContext,
    raw: bytes,
    envelope: Envelope,
    states: Mapping[str, ConsentState],
    now: datetime,
    *,
    skip: Collection[str] = frozenset(),
    budget: int = 0,
) -> FilterResult:
    """Run the whole pure core for one message and every recipient of its envelope; render
    the groups not all in ``skip``, within ``budget`` bytes when it is set (Rule 5)."""
    message = _parse(ctx, raw)
    # Imported here to keep the stage order readable at the top of the module.
    from relay.core.classify import classify

    category, reason = classify(message, envelope, ctx.policy)
    detection = detect(message, ctx.detection, envelope.rcpt_tos, with_links=ctx.report_links)
    candidates = detection.candidates
    locked_parts = {p.index for p in message.parts if p.locked}
    locked_ids = frozenset(c.id for c in candidates if c.part_index in locked_parts)
    if locked_parts and ctx.signed == "reject":
        raise LockedMessage("signed or encrypted message refused by [smtp] signed = reject")
    strip_headers = tuple(
        h for h in message.headers if h.name.lower().startswith(RELAY_HEADER_PREFIX)
    )
    message_id = (message.header("Message-ID") or "").strip()
    message_ref = message_id or envelope.mail_from
    sender_domain = _domain(envelope.mail_from or (message.header("From") or ""))
    fail_closed = bool(message.defects)  # "strip" mode: nothing consent-based goes out

    plans: list[RecipientPlan] = []
    esp_may_track: dict[str, bool] = {}
    packs: dict[str, str] = {}
    reask: dict[str, datetime] = {}
    for rcpt in envelope.rcpt_tos:
        rkey = recipient_key(rcpt, ctx.address_key)
        state = states.get(rcpt) or _unavailable(rkey)
        if fail_closed:
            state = _unavailable(rkey)
        pack = pack_for(ctx.policy, sender_domain, _domain(rcpt))
        packs[rcpt] = pack
        if category is Category.CONSENT_REQUEST:
            until = reask_blocked_until(state, ctx.policy, now)
            if until is not None:
                reask[rcpt] = until
        rplan = plan(rcpt, candidates, category, state, ctx.policy, pack, now)
        plans.append(_lock_decisions(rplan, locked_ids))
        if ctx.esp_profile != "none":
            esp = decide(ESP_OPEN_PIXEL, category, state, ctx.policy, pack, now)
            esp_may_track[rcpt] = esp.action in (Action.KEEP, Action.GATEWAY)

    renderer = _Renderer(
        ctx, message, candidates, detection.placeholders, strip_headers, message_ref, now
    )
    batch = _Batch(skip, budget, len(raw))
    groups = _group_and_render(renderer, plans, bool(detection.placeholders), esp_may_track, batch)
    return FilterResult(
        message_id=message_id,
        from_header=(message.header("From") or "").strip(),
        category=category,
        category_reason=reason,
        candidates=candidates,
        links=detection.links,
        plans=tuple(plans),
        packs=packs,
        groups=groups,
        reask_blocked=reask,
        defects=message.defects,
        locked=bool(locked_parts),
        rules_digest=ctx.policy.digest,
        unrendered=tuple(batch.left),
    )


class _Batch:
    """Which groups this call renders (Rule 5)."""

    def __init__(self, skip: Collection[str], budget: int, estimate: int) -> None:
        self.skip = skip
        self.budget = budget
        self.estimate = estimate  # a rendering is about as large as the message
        self.used = 0
        self.left: list[tuple[str, ...]] = []

    def take(self, rcpts: tuple[str, ...]) -> bool:
        if all(r in self.skip for r in rcpts):
            return False
        if self.left or (self.budget and self.used and self.used + self.estimate > self.budget):
            self.left.append(rcpts)
            return False
        return True

    def rendered(self, data: bytes) -> None:
        self.used += len(data)


def _group_and_render(
    renderer: _Renderer,
    plans: Sequence[RecipientPlan],
    placeholders: bool,
    esp_may_track: Mapping[str, bool],
    batch: _Batch,
) -> tuple[RenderedGroup, ...]:
    shared: dict[tuple[Any, ...], list[str]] = {}
    shared_plan: dict[tuple[Any, ...], RecipientPlan] = {}
    groups: list[RenderedGroup] = []
    for rplan in plans:
        esp = esp_may_track.get(rplan.rcpt, True)
        if rplan.needs_links or rplan.footer or placeholders:
            if batch.take((rplan.rcpt,)):
                data, links, controls = renderer.render(rplan, esp)
                batch.rendered(data)
                groups.append(RenderedGroup((rplan.rcpt,), data, links, controls))
            continue
        key = (esp, *((d.candidate_id, d.action) for d in rplan.decisions))
        shared.setdefault(key, []).append(rplan.rcpt)
        shared_plan.setdefault(key, rplan)
    for key, rcpts in shared.items():
        if batch.take(tuple(rcpts)):
            data, links, controls = renderer.render(shared_plan[key], bool(key[0]))
            batch.rendered(data)
            groups.append(RenderedGroup(tuple(rcpts), data, links, controls))
    return tuple(groups)
