"""Withdrawal page, preference centre and consent page.

Stage: async edge (HTTP handlers), behind ``relay.web.app``.
Input: a signed page token (``/w``, ``/p``, ``/c``), a form POST with its nonce.
Output: an HTML page; on a valid POST, consent events with proof in the consent store.

Rule 1: GET shows, HEAD shows nothing new and writes nothing at all, POST changes. A GET
        writes only the form's nonce (a random value bound to this token's id, kept 2 hours),
        never consent.
Rule 2: the nonce is single-use: the first POST claims it atomically and records; a second
        POST with it (a double click, a reload) records nothing and shows the same
        confirmation; a missing, unknown or foreign nonce is a 403 page.
Rule 3: every recorded event carries its proof: evidence (IP, the visitor's behind a trusted
        proxy as ``relay.web.real_client`` resolves it; user agent, token id), source
        (page, form id and version, message reference), the notice shown (id, version,
        language, hash of the whole notice text, ``relay.web.notice``), the controller, actor
        "recipient" and the method. A POST whose form was shown under another wording (its
        ``notice`` field differs) records nothing and asks to reload.
Rule 4: a page speaks for the controller its token names (the owner of the older consent for
        a token without one), reads and writes that controller's consent only, and shows its
        name, privacy policy, contact and third parties, and the recipient's masked address.
Rule 5: withdrawal covers every purpose that needs consent; a recipient tracked only under the
        legacy regime (section 7) never consented: the page speaks of objecting and records an
        ``objected`` event; one who also granted gets both.
Rule 6: refusing is as easy as accepting: "accept all" and "refuse all" are buttons of the
        same weight, and a purpose left without a choice counts as refused.
Rule 7: every action is counted in ``/metrics`` (action, purpose, controller) and logged with
        the address masked.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from relay.core.controllers import Controller
from relay.core.links import CONSENT, PREFERENCES, WITHDRAW, TokenClaims
from relay.core.recipients import mask, recipient_key
from relay.errors import RelayError, TokenError
from relay.model import ConsentEvent, ConsentState, EventType, Purpose
from relay.ops import metrics
from relay.store.link_store import recipient_address, remember_notice
from relay.web import i18n, notice
from relay.web.context import WebContext, context_of, error_page, language, render
from relay.web.nonce import claim_nonce, new_nonce, release_nonce
from relay.web.notice import PageNotice, build_notice
from relay.web.wording import TEXTS

log = logging.getLogger("relay.web.pages")

FORM_VERSION = "2"
TOKEN_STATUS = {"malformed": 400, "forged": 403, "unknown key": 403, "wrong kind": 404}
PAGE_NAMES = {WITHDRAW: "withdraw", PREFERENCES: "preferences", CONSENT: "consent"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PageError(Exception):
    def __init__(self, status: int, reason: str, lang: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.lang = lang


@dataclass(frozen=True)
class Visit:
    """A verified page request: who, through which token, for which controller, in which
    language, with what state."""

    claims: TokenClaims
    address: str
    state: ConsentState
    lang: str
    now: datetime
    controller: Controller

    @property
    def masked(self) -> str:
        return mask(self.address)

    @property
    def legacy_only(self) -> bool:
        """Tracked under the legacy regime and never consented: the page is an objection."""
        granted = any(c.state is EventType.GRANTED for c in self.state.purposes.values())
        return bool(self.state.legacy_purposes) and not self.state.objected and not granted


def _controller(ctx: WebContext, claims: TokenClaims, lang: str) -> Controller:
    found = ctx.controllers.for_token(claims.controller)
    if found is None:
        raise PageError(404, "controller", lang)
    return found


async def _visit(request: Request, kind: str, form_lang: str | None) -> Visit:
    ctx = context_of(request)
    now = datetime.now(UTC)
    try:
        claims = ctx.signer.verify(request.path_params["token"], kinds={kind}, now=now)
    except TokenError as exc:
        reason = str(exc)
        raise PageError(TOKEN_STATUS.get(reason, 410), reason) from None
    lang = language(request, form_lang, claims.lang)
    controller = _controller(ctx, claims, lang)
    try:
        address = await recipient_address(ctx.redis, ctx.keys, claims.rkey)
        # The stored address must hash back to the token's key: a mix-up must never let one
        # recipient's click be recorded under another's address.
        if address is None or recipient_key(address, ctx.settings.address_key) != claims.rkey:
            raise PageError(404, "unknown", lang)
        found = await ctx.store.states([address], now, controller.id)
    except (RedisError, RelayError, OSError):
        raise PageError(503, "unavailable", lang) from None
    state = found.get(address) or next(iter(found.values()), None)
    if state is None or not state.available:
        raise PageError(503, "unavailable", lang)
    return Visit(claims, address, state, lang, now, controller)


def _evidence(request: Request, claims: TokenClaims) -> dict[str, str]:
    evidence = {"token_id": claims.token_id}
    host = request.client.host if request.client else ""
    with contextlib.suppress(ValueError):  # e.g. a Unix socket peer: no IP to keep
        evidence["ip"] = str(ipaddress.ip_address(host))
    agent = _CONTROL.sub(" ", request.headers.get("user-agent", ""))[:500].strip()
    if agent:
        evidence["user_agent"] = agent
    return evidence


def _event(
    request: Request,
    visit: Visit,
    shown: PageNotice,
    event: EventType,
    purposes: Sequence[Purpose],
    method: str,
) -> ConsentEvent:
    ctx = context_of(request)
    page = PAGE_NAMES[visit.claims.kind]
    return ConsentEvent(
        event=event,
        purposes=tuple(purposes),
        address=visit.address,
        occurred_at=visit.now,
        actor="recipient",
        method=method,
        source={
            "page": page,
            "form_id": f"relay-{page}",
            "form_version": FORM_VERSION,
            "message_ref": visit.claims.ref,
        },
        notice={
            "id": shown.id,
            "version": ctx.settings.consent.notice_version,
            "language": shown.lang,
            "hash": shown.hash,
        },
        evidence=_evidence(request, visit.claims),
        controller=visit.controller.id,
    )


def _current(state: ConsentState) -> dict[Purpose, str]:
    """Purpose -> "granted"/"refused"/"withdrawn"/"expired"/"none" for display."""
    shown: dict[Purpose, str] = {}
    for purpose in i18n.CHOICE_PURPOSES:
        held = state.purposes.get(purpose)
        shown[purpose] = held.state.value if held and held.state else "none"
    return shown


def _tracked(visit: Visit) -> list[Purpose]:
    """The purposes the withdrawal page lists as tracked now (granted, or legacy)."""
    current = _current(visit.state)
    tracked = [p for p, s in current.items() if s == "granted"]
    if visit.state.legacy_purposes and not visit.state.objected:
        tracked += [p for p in visit.state.legacy_purposes if current.get(p) == "none"]
    return tracked


def _notice(kind: str, visit: Visit) -> PageNotice:
    """The notice this page shows this visitor (Rule 3: also rebuilt to check a POST)."""
    if kind == WITHDRAW:
        page = notice.OBJECT if visit.legacy_only else notice.WITHDRAW
        return build_notice(page, visit.lang, visit.controller, visit.masked, _tracked(visit))
    page = notice.CONSENT if kind == CONSENT else notice.PREFERENCES
    return build_notice(page, visit.lang, visit.controller, visit.masked, i18n.CHOICE_PURPOSES)


def _links(request: Request, visit: Visit) -> dict[str, str]:
    """Links to the other pages for the same recipient, controller and language."""
    ctx = context_of(request)
    claims = visit.claims
    return {
        name: ctx.minter.page_url(
            kind, claims.rkey, "", visit.now, controller=claims.controller, lang=visit.lang,
            ref_id=claims.ref,
        )
        for name, kind in (("withdraw_url", WITHDRAW), ("prefs_url", PREFERENCES))
    }  # fmt: skip


async def _handle(request: Request, kind: str) -> Response:
    """GET/HEAD/POST of one page kind; errors become pages."""
    form: FormData | None = None
    if request.method == "POST":
        form = await request.form(max_files=0, max_fields=20)
    form_lang = str(form.get("lang", "")) if form is not None else None
    try:
        visit = await _visit(request, kind, form_lang)
        if form is None:
            return await _show(request, kind, visit)
        return await _submit(request, kind, visit, form)
    except PageError as exc:
        return error_page(request, exc.status, exc.reason, exc.lang or language(request, form_lang))
    except (RedisError, OSError):
        return error_page(request, 503, "unavailable", language(request, form_lang))


async def _show(request: Request, kind: str, visit: Visit) -> Response:
    ctx = context_of(request)
    # HEAD writes nothing, not even a nonce: its body is never shown, so no form is used.
    nonce = "" if request.method == "HEAD" else await new_nonce(ctx, visit.claims)
    shown = _notice(kind, visit)
    values: dict[str, Any] = {"nonce": nonce, "notice": shown, "links": _links(request, visit)}
    if kind == WITHDRAW:
        button = "object" if visit.legacy_only else "stop"
        return render(request, "withdraw.html", visit.lang, button=button, **values)
    return render(
        request, "preferences.html", visit.lang, current=_current(visit.state),
        choices=i18n.CHOICE_PURPOSES, page="consent" if kind == CONSENT else "prefs", **values,
    )  # fmt: skip


def _choices(form: FormData) -> tuple[dict[Purpose, bool], str]:
    """The submitted choice per purpose (True = accept) and the button used."""
    action = str(form.get("action", "save"))
    if action == "accept_all":
        return dict.fromkeys(i18n.CHOICE_PURPOSES, True), action
    if action == "refuse_all":
        return dict.fromkeys(i18n.CHOICE_PURPOSES, False), action
    # A purpose without an answer is refused: consent needs a positive act.
    return {p: form.get(f"purpose_{p.value}") == "granted" for p in i18n.CHOICE_PURPOSES}, "save"


Plan = list[tuple[EventType, list[Purpose]]]


def _plan(kind: str, visit: Visit, form: FormData) -> tuple[Plan, str]:
    """The events one POST records and the summary shown (and replayed) as confirmation."""
    if kind == WITHDRAW:
        if visit.legacy_only:  # Rule 5: nothing to withdraw, an objection
            return [(EventType.OBJECTED, list(visit.state.legacy_purposes))], "objected"
        plan: Plan = [(EventType.WITHDRAWN, list(i18n.CHOICE_PURPOSES))]
        if visit.state.legacy_purposes and not visit.state.objected:
            plan.append((EventType.OBJECTED, list(visit.state.legacy_purposes)))
        return plan, "withdrawn"
    choices, _action = _choices(form)
    current = _current(visit.state)
    granted = [p for p, yes in choices.items() if yes]
    withdrawn = [p for p, yes in choices.items() if not yes and current[p] == "granted"]
    refused = [p for p, yes in choices.items() if not yes and current[p] != "granted"]
    plan = [(e, ps) for e, ps in ((EventType.GRANTED, granted), (EventType.WITHDRAWN, withdrawn),
                                  (EventType.REFUSED, refused)) if ps]  # fmt: skip
    summary = ",".join(f"{p.value}={'granted' if yes else 'refused'}" for p, yes in choices.items())
    return plan, summary


def _method(kind: str, form: FormData) -> str:
    if kind == WITHDRAW:
        return "button"
    if kind == CONSENT:
        return "link_confirmation"
    return "checkbox" if str(form.get("action", "save")) == "save" else "button"


async def _submit(request: Request, kind: str, visit: Visit, form: FormData) -> Response:
    ctx = context_of(request)
    nonce = str(form.get("nonce", ""))
    shown = _notice(kind, visit)
    posted_notice = str(form.get("notice", ""))
    plan, summary = _plan(kind, visit, form)
    status, stored = await claim_nonce(ctx, nonce, visit.claims, summary)
    if status == 0:
        return error_page(request, 403, "nonce", visit.lang)
    if status == 1 and posted_notice and posted_notice != shown.hash:
        # Rule 3: the visitor read another wording; a proof must name the one they read.
        await release_nonce(ctx, nonce, visit.claims)
        return error_page(request, 409, "notice", visit.lang)
    if status == 1:
        method = _method(kind, form)
        try:
            await remember_notice(ctx.redis, ctx.keys, shown.hash, shown.text)
            for event, purposes in plan:
                await ctx.store.record(_event(request, visit, shown, event, purposes, method))
        except (RedisError, RelayError, OSError):
            await release_nonce(ctx, nonce, visit.claims)
            return error_page(request, 503, "unavailable", visit.lang)
        except ValueError:  # the store refused our own event: a bug, but keep it retryable
            await release_nonce(ctx, nonce, visit.claims)
            raise
        _count(kind, visit, plan)
    return _confirmation(request, kind, visit, stored)


def _count(kind: str, visit: Visit, plan: Plan) -> None:
    """Rule 7: operators see what recipients do on the pages (no address in a label)."""
    for event, purposes in plan:
        for purpose in purposes:
            metrics.PAGE_ACTIONS.labels(event.value, purpose.value, visit.controller.id).inc()
        log.info(
            "%s page: %s %s for %s (controller %s)", PAGE_NAMES[kind], event.value,
            ",".join(p.value for p in purposes), visit.masked, visit.controller.id,
        )  # fmt: skip


def _confirmation(request: Request, kind: str, visit: Visit, summary: str) -> Response:
    texts = TEXTS[visit.lang]
    name = notice.who(visit.controller, visit.lang)[0]
    values = {"name": name, "address": visit.masked}
    links = _links(request, visit)
    if kind == WITHDRAW:
        done = "objected" if summary == "objected" else "withdrawn"
        return render(
            request, "done.html", visit.lang, title=texts[f"{done}_title"],
            body=texts[f"{done}_body"].format(**values),
            next=texts[f"{done}_next"].format(**values), outcome=[], links=links,
        )  # fmt: skip
    outcome: list[tuple[Purpose, str]] = []
    for item in summary.split(","):
        name_, _, value = item.partition("=")
        if name_ in {p.value for p in Purpose}:
            outcome.append((Purpose(name_), value))
    return render(
        request, "done.html", visit.lang, title=texts["saved_title"],
        body=texts["saved_body"].format(**values), next=texts["saved_next"].format(**values),
        outcome=outcome, links=links,
    )  # fmt: skip


async def withdraw(request: Request) -> Response:
    return await _handle(request, WITHDRAW)


async def preferences(request: Request) -> Response:
    return await _handle(request, PREFERENCES)


async def consent(request: Request) -> Response:
    return await _handle(request, CONSENT)
