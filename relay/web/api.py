"""Consent API: apps record consent collected in their own forms.

Stage: async edge (HTTP handler), behind ``relay.web.app``.
Input: ``POST /api/v1/consent`` with ``Authorization: Bearer <token>`` and a JSON body.
Output: 201 ``{"id": ...}`` with the stored event id; 400 ``{"error": ...}`` naming the bad
field; 401 without a valid token; 413 for a body over 64 KiB (or ``[web] max_body_size``);
503 when the store is down.

Rule 1: the bearer token is compared in constant time with every configured token
        (``[web] api_tokens`` or ``$RELAY_API_TOKENS``); none configured means none accepted.
Rule 2: the body is validated by ``relay.store.consent.validate_api_payload``: nothing half-valid is
        stored, and the error names the field. Proof before reliance: a ``granted`` or
        ``informed`` event without ``method``, ``source`` or ``notice.version`` is a 400
        naming the missing fields (``consent_proof`` Rule 6).
Rule 3: the body is read with a size cap before it is parsed (never whole, then checked), and
        JSON nested deeper than ``MAX_DEPTH`` is refused with 400 before the parser could
        recurse: a hostile body costs at most ``MAX_BODY`` bytes and one linear pass.
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
MAX_DEPTH = 32  # a consent event nests 2 levels; deeper JSON is refused before parsing
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


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The body, read chunk by chunk; None as soon as it passes ``limit`` (the rest unread)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest, outside strings (one pass; Rule 3)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _error(status: int, message: str) -> Response:
    headers = dict(_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="consent-relay"'
    return JSONResponse({"error": message}, status, headers=headers)


async def record_consent(request: Request) -> Response:
    ctx = context_of(request)
    if not authorised(request.headers.get("authorization", ""), ctx.settings.web.api_tokens):
        return _error(401, "authorization: a valid bearer token is required")
    limit = min(MAX_BODY, ctx.settings.web.max_body_size)
    body = await read_capped(request, limit)
    if body is None:
        return _error(413, f"body: larger than {limit} bytes")
    if json_depth(body) > MAX_DEPTH:
        return _error(400, f"body: JSON nested deeper than {MAX_DEPTH} levels")
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
