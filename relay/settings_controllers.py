"""``[controllers.<id>]`` settings: the organisations consent is given to (SPEC section 1).

Part of the settings vocabulary (``relay.settings`` loads and checks them with this module);
``relay.core.controllers`` turns them into the registry the relay uses.
Rule 1: an id is 1-32 of ``a-z 0-9 _ -`` (it appears in Redis keys, tokens and metrics labels).
Rule 2: ``name`` and ``domains`` are required; a domain belongs to one controller only; at most
        one controller says ``existing_consent = true``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from relay.errors import SettingsError


@dataclass(frozen=True)
class ControllerSettings:
    """``[controllers.<id>]``: an organisation consent is given to (SPEC section 1)."""

    name: str = ""  # shown to recipients on the pages and in the footer (required)
    domains: tuple[str, ...] = ()  # From domains of its mail, subdomains included (required)
    privacy_url: str = ""  # its privacy policy, linked from every page
    contact: str = ""  # where recipients reach it (address or URL)
    third_parties: tuple[str, ...] = ()  # vendors it uses, named on the consent page
    existing_consent: bool = False  # owns the consent recorded before controllers existed


def check_controllers(
    controllers: Mapping[str, ControllerSettings], fail: Callable[[str, str], SettingsError]
) -> None:
    """Ids, required keys, domains owned by one controller, one owner of the older consent."""
    owners: dict[str, str] = {}
    for cid, c in controllers.items():
        where = f"controllers.{cid}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", cid):
            raise fail(where, "an id is 1-32 of a-z 0-9 _ -, starting with a-z or 0-9")
        for key, ok in (("name", c.name.strip()), ("domains", c.domains)):
            if not ok:
                raise fail(where, f"{key} is required (see config.example.toml)")
        for domain in c.domains:
            clean = domain.strip().strip(".").lower()
            if not re.fullmatch(r"[^\s.@/:]+(\.[^\s.@/:]+)+", clean):
                raise fail(f"{where}.domains", f"not a domain: {domain!r}")
            if owners.setdefault(clean, cid) != cid:
                raise fail(f"{where}.domains", f"{domain!r} is also {owners[clean]}'s")
        if c.privacy_url and not c.privacy_url.startswith(("https://", "http://")):
            raise fail(f"{where}.privacy_url", "must start with https:// or http://")
    inherit = [cid for cid, c in controllers.items() if c.existing_consent]
    if len(inherit) > 1:
        raise fail(f"controllers.{inherit[1]}.existing_consent", "true for one only")
