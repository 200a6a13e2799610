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
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import jinja2
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from relay.core.links import LinkSigner
from relay.model import ConsentEvent, ConsentState
from relay.settings import Settings
from relay.store.redis_keys import Keys
from relay.web import i18n

log = logging.getLogger("relay.web")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class ConsentStore(Protocol):
    """What the web side needs of the consent store (``relay.store.consent``)."""

    async def record(self, event: ConsentEvent) -> ConsentEvent: ...

    async def states(
        self, addresses: Sequence[str], now: datetime
    ) -> Mapping[str, ConsentState]: ...


@dataclass(frozen=True)
class WebContext:
    settings: Settings
    redis: Redis
    keys: Keys
    store: ConsentStore
    signer: LinkSigner
    templates: jinja2.Environment


def context_of(request: Request) -> WebContext:
    web: WebContext = request.app.state.web
    return web


def language(request: Request, form_lang: str | None = None) -> str:
    return i18n.choose(
        form_lang or request.query_params.get("lang"), request.headers.get("accept-language")
    )


def render(
    request: Request, template: str, lang: str, status: int = 200, **values: Any
) -> Response:
    ctx = context_of(request)
    html = ctx.templates.get_template(template).render(
        lang=lang,
        other=i18n.other(lang),
        t=i18n.TEXTS[lang],
        purposes=i18n.PURPOSES[lang],
        **values,
    )
    return Response(html, status, headers=PAGE_HEADERS, media_type="text/html; charset=utf-8")


def error_page(request: Request, status: int, reason: str, lang: str | None = None) -> Response:
    """A 4xx/5xx page naming what went wrong; ``reason`` is a key suffix of ``error_*``."""
    lang = lang or language(request)
    texts = i18n.TEXTS[lang]
    message = texts.get(f"error_{reason}", texts["error_internal"])
    reload = reason == "nonce"
    return render(request, "error.html", lang, status, message=message, reload=reload)


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


def templates_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def create_app(
    *, settings: Settings, redis: Redis, store: ConsentStore, signer: LinkSigner
) -> Starlette:
    from relay.web import api, gateway, pages

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
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _internal},
    )
    app.state.web = WebContext(
        settings=settings,
        redis=redis,
        keys=Keys(settings.redis.prefix),
        store=store,
        signer=signer,
        templates=templates_environment(),
    )
    return app
