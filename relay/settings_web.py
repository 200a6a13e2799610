"""``[web]`` and ``[audit_ui]`` settings: the web listener, its limits, the auditors.

Part of the settings vocabulary (``relay.settings`` loads and checks them with this module).
Rule 1: every limit of the web listener (``relay.web.limits``, ``relay.web.guard``) is above 0;
        only ``max_connections_per_client`` may be 0 (no per-client cap, behind a proxy).
Rule 2: auditors are scrypt hashes made by ``relay hash-password`` (``relay.passwords``); a value
        in any other form stops start-up naming the user, never a login that silently fails.
Rule 3: ``reveal_users`` names configured auditors only ("*" = every auditor, [] = nobody).
Rule 4: ``trusted_proxies`` are IP addresses or networks; ``proxy_protocol`` needs at least one
        (no peer could send a header otherwise).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from relay.errors import SettingsError
from relay.passwords import check_hash


@dataclass(frozen=True)
class WebSettings:
    listen: str = "127.0.0.1:8025"
    public_url: str = "http://127.0.0.1:8025"
    api_tokens: tuple[str, ...] = ()  # bearer tokens accepted by the consent API
    max_connections: int = 512  # open HTTP connections per process; more get 503 (web/limits.py)
    max_connections_per_client: int = 64  # per client IP address; 0 = no per-client cap
    header_timeout: float = 10.0  # seconds to send a request's line and headers
    body_timeout: float = 30.0  # seconds to send a request's body once the headers are in
    max_body_size: int = 65_536  # bytes of a request body (413 above)
    trusted_proxies: tuple[str, ...] = ()  # peers whose client header counts; () = nobody
    client_header: str = "x-forwarded-for"  # what they write: "x-forwarded-for" or "forwarded"
    proxy_protocol: bool = False  # trusted proxies open each connection with a PROXY header


@dataclass(frozen=True)
class AuditUiSettings:
    users: Mapping[str, str] = field(default_factory=dict)  # auditor -> "scrypt$..." hash
    reveal_users: tuple[str, ...] = ("*",)  # who may see full addresses; "*" = every auditor


def check_web(
    web: WebSettings, ui: AuditUiSettings, fail: Callable[[str, str], SettingsError]
) -> None:
    """Rules 1 to 3; ``fail(dotted key, message)`` builds the error naming file and line."""
    for name in ("max_connections", "header_timeout", "body_timeout", "max_body_size"):
        if not getattr(web, name):
            raise fail(f"web.{name}", "must be greater than 0")
    for net in web.trusted_proxies:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise fail("web.trusted_proxies", f"not an IP address or network: {net!r}") from None
    if web.proxy_protocol and not web.trusted_proxies:
        raise fail("web.proxy_protocol", "needs web.trusted_proxies (the proxies that send it)")
    for user, value in ui.users.items():
        try:
            check_hash(value)
        except ValueError as exc:
            raise fail(f"audit_ui.users.{user}", str(exc)) from None
    for user in sorted(set(ui.reveal_users) - set(ui.users) - {"*"}):
        raise fail("audit_ui.reveal_users", f"{user!r} is not in audit_ui.users")
