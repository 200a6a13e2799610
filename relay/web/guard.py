"""Request framing and body size, checked before any handler sees a request.

Stage: async edge (ASGI middleware around the whole web application).
Input: an HTTP request's headers and body messages. Output: the same request for the
application, its body read at most once and at most ``max_body`` bytes; or a refusal.

Rule 1: ``Content-Length`` together with ``Transfer-Encoding`` is refused with ``400`` and the
        connection closed (RFC 9112 section 6.1: the framing is ambiguous, the classic request
        smuggling vector), whatever the route.
Rule 2: a body over ``max_body`` bytes is refused with ``413`` and the connection closed: a
        declared length at once, before reading a byte of it; a chunked body as soon as the
        bytes read pass the limit. The middleware holds at most ``max_body`` bytes of a request,
        so memory is bounded by the number of requests, never by what a client sends.
Rule 3: a refusal under ``/api/`` is JSON (``{"error": ...}``) like the API's own; elsewhere it
        is plain text. Neither ever reaches a handler, so no handler can answer 500 for it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    """A refusal that closes the connection (Rule 3 for its form)."""
    if str(scope.get("path", "")).startswith("/api/"):
        body = json.dumps({"error": message}).encode()
        kind = b"application/json"
    else:
        body = (message + "\n").encode()
        kind = b"text/plain; charset=utf-8"
    headers = [
        (b"content-type", kind),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        lengths = [v for k, v in scope.get("headers", ()) if k == b"content-length"]
        chunked = any(k == b"transfer-encoding" for k, _v in scope.get("headers", ()))
        if lengths and chunked:
            await refuse(scope, send, 400, "request: Content-Length and Transfer-Encoding "
                         "together are refused (ambiguous framing)")  # fmt: skip
            return
        declared = int(lengths[0]) if lengths and lengths[0].isdigit() else 0
        if declared > self.max_body:
            await refuse(scope, send, 413, f"body: larger than {self.max_body} bytes")
            return
        if not declared and not chunked:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its whole body
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await refuse(scope, send, 413, f"body: larger than {self.max_body} bytes")
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body in one message, then the real ``receive`` (for a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


__all__ = ["RequestGuard", "refuse"]
