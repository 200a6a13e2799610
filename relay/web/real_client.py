"""The real client of every request behind trusted reverse proxies, and its share of the listener.

Stage: async edge (ASGI middleware, outermost around the web application).
Input: a request's scope (its ``client`` is the TCP peer, or a PROXY header's source address
as ``relay.web.limits`` read it). Output: the same request with ``scope["client"]`` set to
the visitor ``relay.web.forwarded`` resolves, so that every reader of ``request.client`` (the
consent evidence of ``pages``, the auditors' failed-login limit, their log lines) sees the
visitor, never the proxy.

Rule 1: a peer outside ``[web] trusted_proxies`` is the client: its headers are not read.
Rule 2: a malformed header from a trusted proxy leaves the proxy's address in place; the first
        one is logged (what was wrong, never the header's content) and every one is counted
        in ``relay_web_client_header_invalid``.
Rule 3: behind a trusted proxy the connections are the proxy's (it multiplexes visitors over
        them), so ``max_connections_per_client`` counts a forwarded visitor's requests in
        progress instead: one more is answered ``503`` with ``Retry-After``, the others and
        other visitors go on.
"""

from __future__ import annotations

import logging

from relay.ops import metrics
from relay.settings import Settings
from relay.web.forwarded import networks, resolve
from relay.web.guard import ASGIApp, Receive, Scope, Send

log = logging.getLogger("relay.web.client")

BUSY_BODY = b"Too many requests in progress from your address; try again shortly.\n"


class RealClient:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.trusted = networks(settings.web.trusted_proxies)
        self.header = settings.web.client_header.lower()
        self.name = self.header.encode("ascii")
        self.per_client = settings.web.max_connections_per_client
        self.active: dict[str, int] = {}
        self.warned = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or not self.trusted:
            await self.app(scope, receive, send)
            return
        lines = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == self.name]
        found = resolve(scope.get("client"), lines, self.header, self.trusted)
        if found.problem:
            self._malformed(found.host, found.problem)
        if not found.forwarded:
            await self.app(scope, receive, send)
            return
        scope["client"] = (found.host, found.port)
        mine = self.active.get(found.host, 0)
        if self.per_client and mine >= self.per_client:
            await _busy(send)
            return
        self.active[found.host] = mine + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self.active[found.host] - 1
            if left:
                self.active[found.host] = left
            else:
                del self.active[found.host]

    def _malformed(self, proxy: str, problem: str) -> None:
        metrics.WEB_CLIENT_HEADER_INVALID.inc()
        if not self.warned:
            self.warned = True
            log.warning(
                "web: malformed client header from the trusted proxy %s (%s): the proxy's "
                "address is used; later ones are only counted (relay_web_client_header_invalid)",
                proxy,
                problem,
            )


async def _busy(send: Send) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(BUSY_BODY)).encode()),
        (b"cache-control", b"no-store"),
        (b"retry-after", b"5"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": BUSY_BODY, "more_body": False})


__all__ = ["RealClient"]
