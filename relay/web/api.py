"""Consent API: apps record consent collected in their own forms.

Stage: async edge (HTTP handler), behind ``relay.web.app``.
Input: ``POST /api/v1/consent`` with ``Authorization: Bearer <token>`` and a JSON body.
Output: 201 ``{"id": ...}`` with the stored event id; 400 ``{"error": ...}`` naming the bad
field; 401 without a valid token; 413 for a body over 64 KiB; 503 when the store is down.

Rule 1: the bearer token is compared in constant time with every configured token
        (``[web] api_tokens`` or ``$RELAY_API_TOKENS``); none configured means none accepted.
Rule 2: the body is validated by ``relay.store.consent.validate_api_payload``: nothing half-valid is
        stored, and the error names the field. Proof before reliance: a ``granted`` or
        ``informed`` event without ``method``, ``source`` or ``notice.version`` is a 400
        naming the missing fields (``consent_proof`` Rule 6).
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relay.errors import RelayError
from relay.store.consent import validate_api_payload
from relay.web.context import context_of

MAX_BODY = 65_536
_HEADERS = {"Cache-Control": "no-store"}


def authorised(header: str, tokens: tuple[str, ...]) -> bool:
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return False
    given = presented.strip().encode()
    ok = False
    for token in tokens:
        # No early exit: the time taken does not tell which token came close.
        ok |= bool(token) and hmac.compare_digest(given, token.encode())
    return ok


def _error(status: int, message: str) -> Response:
    headers = dict(_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="consent-relay"'
    return JSONResponse({"error": message}, status, headers=headers)


async def record_consent(request: Request) -> Response:
    ctx = context_of(request)
    if not authorised(request.headers.get("authorization", ""), ctx.settings.web.api_tokens):
        return _error(401, "authorization: a valid bearer token is required")
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_BODY:
        return _error(413, f"body: larger than {MAX_BODY} bytes")
    body = await request.body()
    if len(body) > MAX_BODY:
        return _error(413, f"body: larger than {MAX_BODY} bytes")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body: not valid JSON")
    now = datetime.now(UTC)
    try:
        event = validate_api_payload(payload, now)
    except ValueError as exc:
        return _error(400, str(exc))
    try:
        stored = await ctx.store.record(event)
    except ValueError as exc:
        return _error(400, str(exc))
    except (RedisError, RelayError, OSError):
        return _error(503, "store: temporarily unavailable, nothing was recorded")
    return JSONResponse({"id": stored.id}, 201, headers=_HEADERS)
