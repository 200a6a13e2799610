"""The recipient-facing web application: pages, pixel gateway, consent API, health.

Stage: async edge (HTTP), served by uvicorn in the relay's process (``relay serve``).
Input: HTTP requests carrying signed link tokens (never an address) or an API bearer token.
Output: HTML pages, a 43-byte GIF or a redirect, JSON; consent events through the store.

Rule 1: GET and HEAD never change consent (link scanners and pre-fetchers open every link);
        only a page's POST does, with a single-use nonce bound to the link's token.
Rule 2: every failure a visitor can cause is a clear 4xx page in their language; an
        unexpected one is a 500 page without a traceback; Redis down is a 503 page that says
        nothing was recorded. The pixel endpoints answer the GIF instead whenever they can.
Rule 3: pages load nothing from elsewhere (one local stylesheet), run no JavaScript, and send a
        Content-Security-Policy saying so, plus ``Referrer-Policy: no-referrer`` because the
        URL holds the recipient's token.
Rule 4: request framing and body size are checked (``guard``) before any handler runs; the
        auditors' workspace (``audit``) is mounted only when auditors are configured.
Rule 5: the client of a request is the visitor, not a reverse proxy in front (``real_client``
        from ``[web] trusted_proxies``; the PROXY header in ``limits``).
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from relay.core.controllers import Controllers, build_controllers
from relay.core.links import LinkMinter, LinkSigner
from relay.settings import Settings
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from relay.web import api, gateway, pages
from relay.web.audit import routes as audit
from relay.web.context import STATIC, ConsentStore, WebContext, error_page, templates_environment
from relay.web.guard import RequestGuard
from relay.web.real_client import RealClient

log = logging.getLogger("relay.web")


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 400
    reason = {404: "notfound", 405: "method"}.get(status, "badrequest")
    return error_page(request, status, reason)


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_page(request, 500, "internal")


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request) -> Response:
    """Readiness: Redis answers and the upstream can be reached (503 naming what is not)."""
    from relay.ops.readiness import check_ready

    context: WebContext = request.app.state.web
    problems = await check_ready(context.settings, context.redis)
    status = 503 if problems else 200
    body = {"status": "not ready" if problems else "ready", "problems": problems}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


async def metrics_endpoint(request: Request) -> Response:
    from relay.ops.metrics import exposition

    body, content_type = exposition()
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


def create_app(
    *,
    settings: Settings,
    redis: AsyncRedis,
    store: ConsentStore,
    signer: LinkSigner,
    controllers: Controllers | None = None,
) -> Starlette:
    page_methods = ["GET", "HEAD", "POST"]
    routes = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/w/{token}", pages.withdraw, methods=page_methods),
        Route("/p/{token}", pages.preferences, methods=page_methods),
        Route("/c/{token}", pages.consent, methods=page_methods),
        Route("/g/{token}", gateway.gateway, methods=["GET", "HEAD"]),
        Route("/m/{token}", gateway.minimise, methods=["GET", "HEAD"]),
        Route("/api/v1/consent", api.record_consent, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    if settings.audit_ui.users:
        routes += audit.routes()
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _internal},
        middleware=[
            Middleware(RealClient, settings=settings),
            Middleware(RequestGuard, max_body=settings.web.max_body_size),
        ],
    )
    app.state.web = WebContext(
        settings=settings,
        redis=redis,
        keys=Keys(settings.redis.prefix),
        store=store,
        signer=signer,
        templates=templates_environment(),
        controllers=controllers or build_controllers(settings.controllers),
        minter=LinkMinter(settings.web.public_url, signer),
    )
    if settings.audit_ui.users:
        keys = app.state.web.keys
        app.state.audit = audit.Workspace(settings, redis, keys, app.state.web.templates)
    return app
