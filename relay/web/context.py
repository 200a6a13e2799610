"""What every web handler shares: the request's context, the language, page rendering.

Stage: async edge (HTTP) support, imported by ``pages``, ``gateway``, ``api`` and ``app``.
Rule 1: a page is rendered only here, with the headers of ``PAGE_HEADERS`` (no external
        asset, no referrer, never cached), so no handler can forget them.
Rule 2: ``error_page`` is the one way to answer a failure: a page in the visitor's language
        naming what went wrong, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import jinja2
from starlette.requests import Request
from starlette.responses import Response

from relay.core.controllers import Controllers
from relay.core.links import LinkMinter, LinkSigner
from relay.model import ConsentEvent, ConsentState
from relay.settings import Settings
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from relay.web import i18n
from relay.web.wording import TEXTS

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
        self, addresses: Sequence[str], now: datetime, controller: str | None = None
    ) -> Mapping[str, ConsentState]: ...


@dataclass(frozen=True)
class WebContext:
    settings: Settings
    redis: AsyncRedis
    keys: Keys
    store: ConsentStore
    signer: LinkSigner
    templates: jinja2.Environment
    controllers: Controllers
    minter: LinkMinter  # links between the pages (withdrawal <-> preference centre)


def context_of(request: Request) -> WebContext:
    web: WebContext = request.app.state.web
    return web


def language(request: Request, form_lang: str | None = None, email_lang: str = "") -> str:
    return i18n.choose(
        form_lang or request.query_params.get("lang"),
        request.headers.get("accept-language"),
        email_lang,
    )


def render(
    request: Request, template: str, lang: str, status: int = 200, **values: Any
) -> Response:
    ctx = context_of(request)
    html = ctx.templates.get_template(template).render(
        lang=lang,
        other=i18n.other(lang),
        t=TEXTS[lang],
        purposes=i18n.PURPOSES[lang],
        **values,
    )
    return Response(html, status, headers=PAGE_HEADERS, media_type="text/html; charset=utf-8")


def error_page(request: Request, status: int, reason: str, lang: str | None = None) -> Response:
    """A 4xx/5xx page naming what went wrong; ``reason`` is a key suffix of ``error_*``."""
    lang = lang or language(request)
    texts = TEXTS[lang]
    message = texts.get(f"error_{reason}", texts["error_internal"])
    reload = reason in ("nonce", "notice")
    return render(request, "error.html", lang, status, message=message, reload=reload)


def templates_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
