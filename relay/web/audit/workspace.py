"""The auditors' workspace: who may enter, what every page shares, how each access is logged.

Stage: async edge (HTTP) support for the ``/audit/`` handlers.
Input: requests with HTTP basic credentials; ``[audit_ui]`` settings. Output: the signed-in
auditor's name for a handler, or a ``401``/``429`` page; rendered pages with their headers.

Rule 1: a password is checked against its scrypt hash (``relay.passwords``) in a worker thread,
        never in the event loop; a successful check is remembered for ``CACHE_SECONDS`` under
        a keyed hash of (user, password) whose key exists only in this process's memory, so a
        page and its stylesheet do not cost two scrypt runs. An unknown user costs the same
        work as a known one.
Rule 2: more than ``MAX_FAILURES`` failed logins from one address (the visitor's behind a
        trusted proxy, ``relay.web.real_client``) within ``FAILURE_WINDOW``
        seconds get ``429`` until the window passes; the failures are logged without the
        password, and with the user name only when it is a configured auditor.
Rule 3: every answer to a signed-in auditor is logged (user, method, path and query, status):
        the workspace's URLs never carry an address (recipients appear as their key), so the
        log may be kept as long as accountability needs.
Rule 4: every page carries ``Cache-Control: no-store`` (and ``Pragma: no-cache``), the
        recipient pages' Content-Security-Policy (no script, nothing from elsewhere) and
        ``noindex``: what an auditor saw is never kept by a browser or a proxy.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from relay.core.controllers import build_controllers
from relay.core.recipients import mask
from relay.errors import RelayError
from relay.passwords import UserTable
from relay.settings import Settings
from relay.store import audit_legend
from relay.store.audit import AuditLog, message_key
from relay.store.audit_query import AuditReader
from relay.store.consent import RedisConsentStore
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from relay.web.context import PAGE_HEADERS

log = logging.getLogger("relay.web.audit")

CACHE_SECONDS = 300.0
CACHE_SIZE = 256
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0
REALM = 'Basic realm="consent-relay auditors", charset="UTF-8"'
HEADERS = {**PAGE_HEADERS, "Pragma": "no-cache", "X-Robots-Tag": "noindex, nofollow"}

View = Callable[[Request, str], Awaitable[Response]]


@dataclass(frozen=True)
class PolicyRow:
    pack: str
    description: str
    where: str
    basis: str


def _policy_rows(settings: Settings) -> dict[str, PolicyRow]:
    """Row id -> what the running rule files say of it ({} if they cannot be read)."""
    from relay.context import load_rule_set
    from relay.core.policy_rules import load_policy

    try:
        policy = load_policy(load_rule_set(settings), settings)
    except (RelayError, OSError) as exc:
        log.warning("auditors' workspace: decision rows not described (%s)", exc)
        return {}
    rows: dict[str, PolicyRow] = {}
    for pack in policy.packs.values():
        for row in pack.rows:
            described = PolicyRow(pack.name, row.description, row.where, row.basis.value)
            rows.setdefault(row.id, described)
    return rows


class Workspace:
    """What every ``/audit/`` handler shares."""

    def __init__(
        self, settings: Settings, redis: AsyncRedis, keys: Keys, templates: jinja2.Environment
    ) -> None:
        self.settings = settings
        self.users = UserTable(settings.audit_ui.users)
        self.reveal_users = frozenset(settings.audit_ui.reveal_users)
        self.templates = templates
        self.log = AuditLog(
            redis,
            keys,
            settings.audit.journal,
            timeout=settings.redis.timeout,
            retention_days=settings.audit.retention_days,
            address_key=settings.address_key,
        )
        self.reader = AuditReader(self.log)
        self.consent = RedisConsentStore(
            redis,
            keys,
            settings.address_key,
            settings.consent,
            timeout=settings.redis.timeout,
            controllers=build_controllers(settings.controllers),
        )
        self.address_key = settings.address_key
        self._cache_key = os.urandom(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._failures: dict[str, tuple[float, int]] = {}
        self._rows: dict[str, PolicyRow] | None = None

    # -- authentication (Rules 1 and 2) -------------------------------------------------------

    def may_reveal(self, user: str) -> bool:
        return "*" in self.reveal_users or user in self.reveal_users

    def policy_rows(self) -> Mapping[str, PolicyRow]:
        if self._rows is None:
            self._rows = _policy_rows(self.settings)
        return self._rows

    def _throttled(self, ip: str, now: float) -> bool:
        start, count = self._failures.get(ip, (now, 0))
        return now - start < FAILURE_WINDOW and count >= MAX_FAILURES

    def _failed(self, ip: str, now: float) -> None:
        start, count = self._failures.get(ip, (now, 0))
        if now - start >= FAILURE_WINDOW:
            start, count = now, 0
        self._failures[ip] = (start, count + 1)
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            cutoff = now - FAILURE_WINDOW
            self._failures = {k: v for k, v in self._failures.items() if v[0] >= cutoff}

    async def authenticate(self, request: Request) -> str | Response:
        ip = request.client.host if request.client else ""
        now = time.monotonic()
        if self._throttled(ip, now):
            return self.plain(429, "Too many failed logins from this address; wait a minute.")
        credentials = _basic(request.headers.get("authorization", ""))
        if credentials is None:
            return self.plain(401, "Sign in with an auditor's name and password.")
        user, password = credentials
        token = hmac.new(self._cache_key, user + b"\0" + password, hashlib.sha256).digest()
        if self._verified.get(token, 0.0) > now:
            return user.decode("utf-8", "replace")
        if await asyncio.to_thread(self.users.verify, user, password):
            self._verified[token] = now + CACHE_SECONDS
            while len(self._verified) > CACHE_SIZE:
                self._verified.popitem(last=False)
            return user.decode("utf-8", "replace")
        self._failed(ip, now)
        name = user.decode("utf-8", "replace")
        known = name in self.settings.audit_ui.users
        log.warning(
            "audit login failed for %s from %s", repr(name) if known else "an unknown user", ip
        )
        return self.plain(401, "Wrong name or password.")

    # -- answers (Rules 3 and 4) ----------------------------------------------------------------

    def plain(self, status: int, message: str) -> Response:
        headers = dict(HEADERS)
        if status == 401:
            headers["WWW-Authenticate"] = REALM
        if status == 429:
            headers["Retry-After"] = str(int(FAILURE_WINDOW))
        html = self.templates.get_template("audit/error.html").render(
            status=status, message=message, root="/audit/", user=""
        )
        return Response(html, status, headers=headers, media_type="text/html; charset=utf-8")

    def render(self, request: Request, user: str, template: str, **values: Any) -> Response:
        root = root_of(request.url.path)
        html = self.templates.get_template(template).render(
            root=root, user=user, mask=mask, legend=audit_legend, message_key=message_key, **values
        )
        status = int(values.get("status", 200))
        return Response(html, status, headers=HEADERS, media_type="text/html; charset=utf-8")

    def error(self, request: Request, user: str, status: int, message: str) -> Response:
        return self.render(request, user, "audit/error.html", status=status, message=message)


def root_of(path: str) -> str:
    """The relative way back to ``/audit/`` from ``path`` (links work behind a path prefix)."""
    rest = path.split("/audit/", 1)[1] if "/audit/" in path else ""
    depth = rest.count("/")
    return "../" * depth or "./"


def _basic(header: str) -> tuple[bytes, bytes] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep and user else None


def protected(view: View) -> Callable[[Request], Awaitable[Response]]:
    """A handler behind the workspace's login, its answer logged (Rule 3)."""

    async def endpoint(request: Request) -> Response:
        workspace: Workspace = request.app.state.audit
        user = await workspace.authenticate(request)
        if isinstance(user, Response):
            return user
        try:
            response = await view(request, user)
        except ValueError as exc:  # a bad parameter: the page names it
            response = workspace.error(request, user, 400, str(exc))
        except (RelayError, RedisError, OSError, TimeoutError) as exc:
            log.warning("audit page %s: store unavailable (%s)", request.url.path, exc)
            response = workspace.error(
                request, user, 503, "The decision log cannot be read right now; try again."
            )
        query = f"?{request.url.query}" if request.url.query else ""
        log.info(
            "audit access user=%s %s %s%s status=%d",
            user,
            request.method,
            request.url.path,
            query,
            response.status_code,
        )
        return response

    return endpoint


__all__ = ["HEADERS", "PolicyRow", "Workspace", "protected", "root_of"]
