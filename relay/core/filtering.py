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
Rule 5: a message belongs to one controller (``controllers.for_message``, from its From
        domain); every link minted for it names that controller and the email's language.
        A message no configured controller covers is decided as if its recipients had no
        consent at all, and its page placeholders are emptied: no one could be consented to.
Rule 6: the memory of one message is bounded: groups whose recipients are all in ``skip``
        (delivered by an earlier attempt or batch) are not rendered, and rendering stops
        once the next group could take the renderings past ``budget`` bytes; the groups
        left are listed in ``unrendered`` for the conductor's next batch (always at least
        one group is rendered, so every batch makes progress).
Rule 7: detection has a CPU budget (``FilterContext.cpu_budget``, on the caller's clock): the
        parts it did not finish are filtered fail-closed, every fetchable value in them
        neutralised for every recipient whatever the consent (rule and policy row
        ``cpu-budget``); ``FilterResult.unfinished_parts`` names them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr

from relay import replies
from relay.core.controllers import Controller, Controllers
from relay.core.decide import plan, reask_blocked_until
from relay.core.dkim_sign import DkimKey, key_for, needs_resign, resign
from relay.core.esp import controlled_headers, esp_controls
from relay.core.footer import FooterFacts, declared_language, footer_edits, message_language
from relay.core.grouping import Batch, group_and_render
from relay.core.links import LinkMinter, gateway_link_id
from relay.core.parse import parse_message
from relay.core.plan_finish import VIRTUAL_RULES, MessageRules
from relay.core.policy import Policy, pack_for
from relay.core.recipients import recipient_key
from relay.core.rewrite import edits_for, render
from relay.detect.budget import Budget
from relay.detect.trackers import BUDGET_RULE, DetectionRules, detect
from relay.errors import LockedMessage, MalformedMessage
from relay.model import (
    TRACKING_ACTIONS,
    Action,
    Basis,
    Candidate,
    Category,
    ConsentState,
    Decision,
    Envelope,
    GatewayLink,
    Header,
    Link,
    ParsedMessage,
    Placeholder,
    RecipientPlan,
    RenderedGroup,
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
    esp_tracking: str = "consented"  # or "off": the ESP never adds its own tracking
    ses_no_tracking_set: str = ""
    dkim_mode: str = "off"  # "off", "resign", "upstream" ([dkim] mode)
    dkim_keys: Mapping[str, DkimKey] = field(default_factory=dict)
    dkim_replace_all: bool = False
    report_links: bool = False  # report <a href> and click trackers (relay check), not acted on
    controllers: Controllers = field(default_factory=Controllers)
    cpu_budget: float = 0.0  # CPU seconds detection may take per message (0 = none), Rule 7


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
    controller: Controller | None = None  # None: no configured controller covers the message
    # rkey -> address of every recipient whose copy carries a relay link (pages, gateway): the
    # web side must find the address behind each of them (every minted link must work).
    linked: Mapping[str, str] = field(default_factory=dict)
    # Recipients whose copy is not delivered, and why (a signed part's tracker without basis).
    withheld: Mapping[str, str] = field(default_factory=dict)
    # Recipient groups not rendered in this call (Rule 6): render them in a later batch.
    unrendered: tuple[tuple[str, ...], ...] = ()
    unfinished_parts: tuple[int, ...] = ()  # parts detection did not finish (Rule 7)


_PLAIN_ADDRESS = re.compile(r"[^\s<>()\[\]\",;:\\@]+@[^\s<>()\[\]\",;:\\@]+")


def _domain(address: str) -> str:
    """Domain of ``a@b``, ``<a@b>`` or ``Name <a@b>`` (a From header), lower-cased. An envelope
    address (``local@domain`` without quotes, brackets or comments) is read as it is, which is
    what ``parseaddr`` makes of it at a tenth of the cost."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return address.rpartition("@")[2].lower()
    return parseaddr(address)[1].rpartition("@")[2].lower()


def _fail_closed(rplan: RecipientPlan, forced: frozenset[int]) -> RecipientPlan:
    """References of parts detection did not finish are neutralised for everyone (Rule 7)."""
    if not forced:
        return rplan
    decisions = tuple(
        Decision(d.candidate_id, Action.NEUTRALISE, Basis.NONE, BUDGET_RULE)
        if d.candidate_id in forced
        else d
        for d in rplan.decisions
    )
    return RecipientPlan(
        rplan.rcpt, rplan.recipient_key, decisions, rplan.footer, rplan.needs_links
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
        controller: Controller | None,
    ) -> None:
        self.ctx = ctx
        self.message = message
        self.candidates = candidates
        self.placeholders = placeholders
        self.strip_headers = strip_headers
        self.message_ref = message_ref
        self.now = now
        self.lang = message_language(message)
        self.token_lang = declared_language(message) or ""
        self.controller = controller
        # Tokens name the controller; "" for the implicit one, so that links stay valid when
        # controllers are configured later (the owner of the older consent answers for "").
        self.token_controller = "" if controller is None or controller.implicit else controller.id
        self.linked: dict[str, str] = {}

    def esp_headers(self, esp_may_track: bool) -> tuple[tuple[str, str], ...]:
        if self.ctx.esp_profile == "none" or esp_may_track:
            return ()
        existing = self.message.header("X-SMTPAPI")
        # SPEC section 2: both of the ESP's controls, opens and clicks, for such a group.
        return esp_controls(
            self.ctx.esp_profile,
            opens_removed=True,
            clicks_allowed=False,
            ses_no_tracking_set=self.ctx.ses_no_tracking_set,
            existing_smtpapi=existing.strip() if existing else None,
        )

    def render(
        self, rplan: RecipientPlan, esp_may_track: bool = True, fill_consent: bool = True
    ) -> tuple[bytes, tuple[GatewayLink, ...], tuple[tuple[str, str], ...]]:
        urls: dict[int, str] = {}
        links: list[GatewayLink] = []
        minter = self.ctx.minter
        # Consent links and the ESP's pixel are recorded, not edited (plan_finish Rule 4).
        real = [
            d for d in rplan.decisions if self.candidates[d.candidate_id].rule not in VIRTUAL_RULES
        ]
        for decision in real:
            candidate = self.candidates[decision.candidate_id]
            if decision.action not in (Action.GATEWAY, Action.MINIMISE):
                continue
            link_id = gateway_link_id(self.message_ref, candidate.url)
            ctl, rkey = self.token_controller, rplan.recipient_key
            if decision.action is Action.GATEWAY:
                urls[candidate.id] = minter.gateway_url(
                    rkey, link_id, candidate.purpose, self.now, ctl
                )
            else:
                urls[candidate.id] = minter.minimise_url(rkey, link_id, self.now, ctl)
            links.append(GatewayLink(link_id, candidate.url, candidate.purpose, decision.action))
            self.linked[rkey] = rplan.rcpt
        edits = edits_for(self.candidates, real, urls)
        if rplan.footer or self.placeholders:
            wording = self.ctx.footer_wording.get(self.lang) or self.ctx.footer_wording.get(
                "fr", {}
            )
            edits += footer_edits(
                self.message,
                self.placeholders,
                self.page_urls(rplan, fill_consent),
                inject=rplan.footer,
                lang=self.lang,
                wording=wording,
                facts=self.facts(rplan),
            )
        controls = self.esp_headers(esp_may_track)
        remove = self.strip_headers
        if controls:
            # The application's own tracking switches would contradict ours: ours replace them.
            names = controlled_headers(self.ctx.esp_profile)
            remove += tuple(h for h in self.message.headers if h.name.lower() in names)
        data = render(self.message, edits, remove_headers=remove, add_headers=controls)
        return self.sign(data), tuple(links), controls

    def page_urls(self, rplan: RecipientPlan, fill_consent: bool = True) -> dict[str, str]:
        """This recipient's page links; empty ones when no controller covers the message, and
        no consent link inside the re-ask window (consent_link Rule 3)."""
        names = ("withdraw_url", "preferences_url", "consent_url")
        if self.controller is None:
            return dict.fromkeys(names, "")
        self.linked[rplan.recipient_key] = rplan.rcpt
        kinds = {"withdraw_url": "w", "preferences_url": "p", "consent_url": "c"}
        urls = {
            name: self.ctx.minter.page_url(
                kinds[name], rplan.recipient_key, self.message_ref, self.now,
                controller=self.token_controller, lang=self.token_lang,
            )
            for name in names
        }  # fmt: skip
        return urls if fill_consent else {**urls, "consent_url": ""}

    def facts(self, rplan: RecipientPlan) -> FooterFacts:
        """What the footer states: who, the purposes kept, and whether it is an objection."""
        kept = [
            d for d in rplan.decisions
            if d.action in TRACKING_ACTIONS and d.basis in (Basis.CONSENT, Basis.LEGACY)
        ]  # fmt: skip
        purposes = tuple(dict.fromkeys(self.candidates[d.candidate_id].purpose for d in kept))
        legacy = bool(kept) and all(d.basis is Basis.LEGACY for d in kept)
        name = self.controller.name if self.controller is not None else ""
        return FooterFacts(name, purposes, legacy)

    def sign(self, data: bytes) -> bytes:
        """A signature the relay's edits broke is removed, and replaced when we hold the key."""
        raw = self.message.raw
        if self.ctx.dkim_mode == "off" or not needs_resign(raw, data):
            return data
        key = key_for(raw, self.ctx.dkim_keys) if self.ctx.dkim_mode == "resign" else None
        return resign(data, key, original=raw, replace_all=self.ctx.dkim_replace_all)


def _parse(ctx: FilterContext, raw: bytes) -> ParsedMessage:
    message = parse_message(raw)
    # What the parser did not read is refused even with malformed = "strip": it would go out
    # as is, trackers and all (issue 13, item 4).
    refused = message.unread if ctx.malformed == "strip" else message.defects
    if refused:
        detail = "; ".join(refused[:3])
        if ctx.malformed == "strip":
            detail += " (refused even with [smtp] malformed = strip)"
        raise MalformedMessage(detail, replies.BAD_MIME.with_detail(detail))
    return message


def filter_message(
    ctx: FilterContext,
    raw: bytes,
    envelope: Envelope,
    states: Mapping[str, ConsentState],
    now: datetime,
    controller: str | None = None,
    *,
    skip: Collection[str] = frozenset(),
    budget: int = 0,
    clock: Callable[[], float] | None = None,
) -> FilterResult:
    """Run the whole pure core for one message and every recipient of its envelope; render
    the groups not all in ``skip``, within ``budget`` bytes when it is set (Rule 6).

    ``controller`` forces the controller (``relay check --controller``); by default it is the
    one covering the message's From domain, exactly as the conductor found it (Rule 5).
    ``clock`` (``time.process_time`` in the relay) runs the CPU budget (Rule 7).
    """
    owner = (
        ctx.controllers.resolve(controller)
        if controller
        else ctx.controllers.for_message(raw, envelope.mail_from)
    )
    message = _parse(ctx, raw)
    # Imported here to keep the stage order readable at the top of the module.
    from relay.core.classify import classify

    category, reason = classify(message, envelope, ctx.policy)
    with_links = ctx.report_links or category is Category.CONSENT_REQUEST
    cpu = Budget(clock, ctx.cpu_budget) if clock is not None and ctx.cpu_budget > 0 else None
    detection = detect(message, ctx.detection, envelope.rcpt_tos, with_links=with_links, budget=cpu)
    forced = frozenset(c.id for c in detection.candidates if c.rule == BUDGET_RULE)
    extras = MessageRules(
        message, detection.candidates, detection.links, detection.placeholders, category,
        ctx.policy, esp_profile=ctx.esp_profile, esp_tracking=ctx.esp_tracking,
        ses_no_tracking_set=ctx.ses_no_tracking_set,
    )  # fmt: skip
    candidates = extras.candidates
    if extras.locked and ctx.signed == "reject":
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
    fill_consent: dict[str, bool] = {}
    withheld: dict[str, str] = {}
    packs: dict[str, str] = {}
    reask: dict[str, datetime] = {}
    for rcpt in envelope.rcpt_tos:
        rkey = recipient_key(rcpt, ctx.address_key)
        state = states.get(rcpt) or _unavailable(rkey)
        if owner is None:
            state = ConsentState(rkey)  # no controller: nobody was consented to (Rule 5)
        if fail_closed:
            state = _unavailable(rkey)
        pack = pack_for(ctx.policy, sender_domain, _domain(rcpt))
        packs[rcpt] = pack
        if category is Category.CONSENT_REQUEST:
            until = reask_blocked_until(state, ctx.policy, now)
            if until is not None:
                reask[rcpt] = until
        rplan = _fail_closed(
            plan(rcpt, detection.candidates, category, state, ctx.policy, pack, now), forced
        )
        done = extras.finish(rplan, state, pack, now, linkable=owner is not None)
        plans.append(done.plan)
        esp_may_track[rcpt], fill_consent[rcpt] = done.esp_may_track, done.fill_consent
        if done.withheld:
            withheld[rcpt] = done.withheld

    renderer = _Renderer(
        ctx, message, candidates, detection.placeholders, strip_headers, message_ref, now, owner
    )
    delivered = [p for p in plans if p.rcpt not in withheld]
    batch = Batch(skip, budget, len(raw))
    groups = group_and_render(
        renderer, delivered, bool(detection.placeholders), esp_may_track, fill_consent, batch
    )
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
        locked=extras.locked,
        rules_digest=ctx.policy.digest,
        controller=owner,
        linked=renderer.linked,
        withheld=withheld,
        unrendered=tuple(batch.left),
        unfinished_parts=detection.unfinished,
    )
