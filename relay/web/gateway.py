"""Pixel gateway (``/g/``) and minimised open counter (``/m/``).

Stage: async edge (HTTP handlers), behind ``relay.web.app``.
Input: a signed gateway or minimise token from an image URL the relay wrote into an email.
Output: a 302 to the original tracker, or the 43-byte transparent GIF.

Rule 1: ``/g/`` redirects to the original tracker only if consent for the token's purpose
        holds at this very moment (``store.states``), given to the controller the token names;
        otherwise, and whenever anything is missing or failing (unknown link, unknown
        recipient or controller, Redis down), it answers the GIF and records nothing. So a
        withdrawal also silences the emails sent before it.
Rule 2: ``/m/`` never contacts and never reveals the original tracker; it keeps only the day
        of the last open per recipient and controller (overwritten), and only for GET; a
        link of a controller no longer configured records nothing.
Rule 3: both answer with ``Cache-Control: no-store`` so that every re-open asks again, and
        ``Referrer-Policy: no-referrer`` so that the tracker never sees our token.
Rule 4: a forged or altered token gets a 4xx page; an expired one (an email older than the
        link lifetime) gets the GIF: nothing can be checked, so nothing is tracked.

Image proxies (Gmail's image proxy, Apple Mail Privacy Protection, some security scanners)
fetch images without a human opening the email, often at delivery time. A gateway hit or a
minimised "last open" day therefore means "fetched", not "read"; list cleaning with
``relay inactive`` should use generous delays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from relay.core.links import GATEWAY, MINIMISE
from relay.errors import RelayError, TokenError
from relay.model import ConsentState, EventType, Purpose
from relay.store.fanout import get_many
from relay.store.link_store import note_open_day
from relay.web.context import context_of, error_page

# 1x1 transparent GIF89a, 43 bytes.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE: Mapping[str, str] = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
TOKEN_STATUS = {"malformed": 400, "forged": 403, "unknown key": 403, "wrong kind": 404}


def blank() -> Response:
    return Response(GIF, 200, headers=NO_STORE, media_type="image/gif")


def consent_holds(state: ConsentState, purpose: Purpose) -> bool:
    """Consent for ``purpose`` at this moment: a grant still valid, or the legacy regime.

    The store already turned an old grant into ``expired``. A legacy recipient (informed,
    not objected, no decision of their own for this purpose) keeps the legacy basis the
    pipeline relied on when it wrote the link.
    """
    if not state.available:
        return False
    held = state.purposes.get(purpose)
    if held is not None and held.state is not None:
        return held.state is EventType.GRANTED
    return purpose in state.legacy_purposes and not state.objected


def _decode(value: object) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def gateway(request: Request) -> Response:
    ctx = context_of(request)
    now = datetime.now(UTC)
    try:
        claims = ctx.signer.verify(request.path_params["token"], kinds={GATEWAY}, now=now)
        purpose = Purpose(claims.extra)
    except TokenError as exc:
        reason = str(exc)
        if reason == "expired":
            return blank()
        return error_page(request, TOKEN_STATUS.get(reason, 400), reason)
    except ValueError:
        return blank()
    owner = ctx.controllers.for_token(claims.controller)
    if owner is None:
        return blank()  # a controller no longer configured: nobody's consent can be checked
    try:
        # One round trip for both lookups (one pipeline: their slots differ on a cluster);
        # then the consent state.
        target_raw, address_raw = await get_many(
            ctx.redis, [ctx.keys.gateway_link(claims.ref), ctx.keys.recipient_address(claims.rkey)]
        )
        target, address = _decode(target_raw), _decode(address_raw)
        if target is None or address is None:
            return blank()
        states = await ctx.store.states([address], now, owner.id)
    except (RedisError, RelayError, OSError):
        return blank()  # fail closed: no consent can be confirmed
    state = states.get(address) or next(iter(states.values()), None)
    if state is None or not consent_holds(state, purpose):
        return blank()
    if urlsplit(target).scheme not in ("http", "https"):
        return blank()  # never an open redirect to javascript:, data: ...
    return Response(status_code=302, headers={**NO_STORE, "Location": target})


async def minimise(request: Request) -> Response:
    ctx = context_of(request)
    now = datetime.now(UTC)
    try:
        claims = ctx.signer.verify(request.path_params["token"], kinds={MINIMISE}, now=now)
    except TokenError as exc:
        reason = str(exc)
        if reason == "expired":
            return blank()
        return error_page(request, TOKEN_STATUS.get(reason, 400), reason)
    owner = ctx.controllers.for_token(claims.controller)
    if request.method == "GET" and owner is not None:  # each controller's own day (link_store)
        # An open not counted is harmless; the image must still load.
        with contextlib.suppress(RedisError, OSError):
            await note_open_day(ctx.redis, ctx.keys, claims.rkey, now, owner.scope)
    return blank()
