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
Rule 3: every recorded event carries its proof: evidence (IP, user agent, token id), source
        (page, form id and version, message reference), the notice shown (id, version,
        language, hash of the purpose texts), actor "recipient" and the method.
Rule 4: withdrawal covers every purpose that needs consent; a recipient under the legacy
        regime (section 7) also gets an ``objected`` event, since withdrawing is objecting.
Rule 5: refusing is as easy as accepting: "accept all" and "refuse all" are buttons of the
        same weight, and a purpose left without a choice counts as refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.exceptions import RedisError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from relay.core.links import CONSENT, PREFERENCES, WITHDRAW, TokenClaims
from relay.core.recipients import recipient_key
from relay.errors import RelayError, TokenError
from relay.model import ConsentEvent, ConsentState, EventType, Purpose
from relay.store.link_store import recipient_address
from relay.web import i18n
from relay.web.context import WebContext, context_of, error_page, language, render

NONCE_TTL = 7200  # seconds a page's form stays usable
FORM_VERSION = "1"
TOKEN_STATUS = {"malformed": 400, "forged": 403, "unknown key": 403, "wrong kind": 404}

# KEYS[1]: the nonce. ARGV: token id, outcome summary.
# Returns {1, summary} first use (claimed), {2, stored summary} replay, {0, ""} refused.
CLAIM_LUA = """
local v = redis.call('GET', KEYS[1])
if not v then return {0, ''} end
if v == ARGV[1] then
  redis.call('SET', KEYS[1], 'used|' .. ARGV[1] .. '|' .. ARGV[2], 'KEEPTTL')
  return {1, ARGV[2]}
end
local prefix = 'used|' .. ARGV[1] .. '|'
if string.sub(v, 1, string.len(prefix)) == prefix then
  return {2, string.sub(v, string.len(prefix) + 1)}
end
return {0, ''}
"""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PageError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Visit:
    """A verified page request: who, through which token, in which language, with what state."""

    claims: TokenClaims
    address: str
    state: ConsentState
    lang: str
    now: datetime


async def _visit(request: Request, kind: str, lang: str) -> Visit:
    ctx = context_of(request)
    now = datetime.now(UTC)
    try:
        claims = ctx.signer.verify(request.path_params["token"], kinds={kind}, now=now)
    except TokenError as exc:
        reason = str(exc)
        raise PageError(TOKEN_STATUS.get(reason, 410), reason) from None
    try:
        address = await recipient_address(ctx.redis, ctx.keys, claims.rkey)
        # The stored address must hash back to the token's key: a mix-up must never let one
        # recipient's click be recorded under another's address.
        if address is None or recipient_key(address, ctx.settings.address_key) != claims.rkey:
            raise PageError(404, "unknown")
        found = await ctx.store.states([address], now)
    except (RedisError, RelayError, OSError):
        raise PageError(503, "unavailable") from None
    state = found.get(address) or next(iter(found.values()), None)
    if state is None or not state.available:
        raise PageError(503, "unavailable")
    return Visit(claims, address, state, lang, now)


async def _new_nonce(ctx: WebContext, claims: TokenClaims) -> str:
    nonce = secrets.token_urlsafe(18)
    await ctx.redis.set(ctx.keys.form_nonce(nonce), claims.token_id, ex=NONCE_TTL)
    return nonce


async def _claim(ctx: WebContext, nonce: str, claims: TokenClaims, summary: str) -> tuple[int, str]:
    if not nonce or len(nonce) > 64:
        return 0, ""
    script = ctx.redis.register_script(CLAIM_LUA)
    result = await script(keys=[ctx.keys.form_nonce(nonce)], args=[claims.token_id, summary])
    status, stored = int(result[0]), result[1]
    return status, stored.decode() if isinstance(stored, bytes) else str(stored)


async def _release(ctx: WebContext, nonce: str, claims: TokenClaims) -> None:
    """Give the nonce back after a failed recording, so the visitor can simply retry."""
    await ctx.redis.set(ctx.keys.form_nonce(nonce), claims.token_id, ex=NONCE_TTL)


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
    request: Request, visit: Visit, event: EventType, purposes: Sequence[Purpose], method: str
) -> ConsentEvent:
    ctx = context_of(request)
    page = {WITHDRAW: "withdraw", PREFERENCES: "preferences", CONSENT: "consent"}[visit.claims.kind]
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
            "id": f"relay-{page}",
            "version": ctx.settings.consent.notice_version,
            "language": visit.lang,
            "hash": i18n.notice_hash(visit.lang),
        },
        evidence=_evidence(request, visit.claims),
    )


def _current(state: ConsentState) -> dict[Purpose, str]:
    """Purpose -> "granted"/"refused"/"withdrawn"/"expired"/"none" for display."""
    shown: dict[Purpose, str] = {}
    for purpose in i18n.CHOICE_PURPOSES:
        held = state.purposes.get(purpose)
        shown[purpose] = held.state.value if held and held.state else "none"
    return shown


async def _handle(request: Request, kind: str) -> Response:
    """GET/HEAD/POST of one page kind; errors become pages."""
    form: FormData | None = None
    if request.method == "POST":
        form = await request.form(max_files=0, max_fields=20)
    form_lang = str(form.get("lang", "")) if form is not None else None
    lang = language(request, form_lang)
    try:
        visit = await _visit(request, kind, lang)
        if form is None:
            return await _show(request, kind, visit)
        return await _submit(request, kind, visit, form)
    except PageError as exc:
        return error_page(request, exc.status, exc.reason, lang)
    except (RedisError, OSError):
        return error_page(request, 503, "unavailable", lang)


async def _show(request: Request, kind: str, visit: Visit) -> Response:
    ctx = context_of(request)
    # HEAD writes nothing, not even a nonce: its body is never shown, so no form is used.
    nonce = "" if request.method == "HEAD" else await _new_nonce(ctx, visit.claims)
    current = _current(visit.state)
    if kind == WITHDRAW:
        tracked = [p for p, s in current.items() if s == "granted"]
        if visit.state.legacy_purposes and not visit.state.objected:
            tracked += [p for p in visit.state.legacy_purposes if current.get(p) == "none"]
        return render(request, "withdraw.html", visit.lang, nonce=nonce, tracked=tracked)
    template_title = "consent" if kind == CONSENT else "prefs"
    return render(
        request,
        "preferences.html",
        visit.lang,
        nonce=nonce,
        current=current,
        choices=i18n.CHOICE_PURPOSES,
        page=template_title,
    )


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
    plan, summary = _plan(kind, visit, form)
    status, stored = await _claim(ctx, nonce, visit.claims, summary)
    if status == 0:
        return error_page(request, 403, "nonce", visit.lang)
    if status == 1:
        method = _method(kind, form)
        try:
            for event, purposes in plan:
                await ctx.store.record(_event(request, visit, event, purposes, method))
        except (RedisError, RelayError, OSError):
            await _release(ctx, nonce, visit.claims)
            return error_page(request, 503, "unavailable", visit.lang)
        except ValueError:  # the store refused our own event: a bug, but keep it retryable
            await _release(ctx, nonce, visit.claims)
            raise
    return _confirmation(request, kind, visit.lang, stored)


def _confirmation(request: Request, kind: str, lang: str, summary: str) -> Response:
    texts = i18n.TEXTS[lang]
    if kind == WITHDRAW:
        return render(
            request, "done.html", lang, title=texts["withdrawn_title"],
            body=texts["withdrawn_body"], outcome=[],
        )  # fmt: skip
    outcome: list[tuple[Purpose, str]] = []
    for item in summary.split(","):
        name, _, value = item.partition("=")
        if name in {p.value for p in Purpose}:
            outcome.append((Purpose(name), value))
    return render(
        request, "done.html", lang, title=texts["saved_title"], body=texts["saved_body"],
        outcome=outcome,
    )  # fmt: skip


async def withdraw(request: Request) -> Response:
    return await _handle(request, WITHDRAW)


async def preferences(request: Request) -> Response:
    return await _handle(request, PREFERENCES)


async def consent(request: Request) -> Response:
    return await _handle(request, CONSENT)
