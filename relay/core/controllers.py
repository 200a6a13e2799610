"""Controllers: who a consent is given to, and which controller a message belongs to.      pure

Input: the ``[controllers.<id>]`` settings; a message's raw header block and envelope.
Output: a ``Controllers`` registry; for one message, its ``Controller`` or None.

Rule 1: with no controller configured the relay serves one implicit controller, id
        ``default``, for all its mail (the behaviour before controllers existed). With some
        configured, a message belongs to the controller one of whose ``domains`` is the From
        domain or a parent of it (the most specific wins); a message no domain covers belongs to
        none and gets no consent-based tracker.
Rule 2: the From header (what the recipient sees as the sender) decides; the envelope sender
        only stands in when the message has no From address.
Rule 3: one controller owns the consent recorded before controllers were configured, whose
        Redis keys name no controller (``unscoped``): the implicit one, the only configured one,
        or the one configured with ``existing_consent = true``. Its ``scope`` is "", every other
        controller's scope is its id. So a single-controller relay keeps its data as it is.
Rule 4: ``resolve`` is how the CLI, the API and the store name a controller: an id, or nothing
        when exactly one is configured; anything else is a ``ValueError`` naming the choices.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Protocol

IMPLICIT_ID = "default"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

# The header block ends at the first empty line; From may be folded over several lines.
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FROM = re.compile(rb"^from[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
MAX_HEADER_SCAN = 256 * 1024  # a From past this many bytes of headers is not looked for


class ControllerLike(Protocol):
    """What the settings give for one controller (``relay.settings.ControllerSettings``)."""

    @property
    def name(self) -> str: ...
    @property
    def domains(self) -> tuple[str, ...]: ...
    @property
    def privacy_url(self) -> str: ...
    @property
    def contact(self) -> str: ...
    @property
    def third_parties(self) -> tuple[str, ...]: ...
    @property
    def existing_consent(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Controller:
    id: str
    name: str = ""  # "" for the implicit controller: the pages say "the sender"
    domains: tuple[str, ...] = ()
    privacy_url: str = ""
    contact: str = ""
    third_parties: tuple[str, ...] = ()
    implicit: bool = False
    unscoped: bool = False  # owns the consent stored without a controller in its keys

    @property
    def scope(self) -> str:
        """What the Redis keys of this controller's consent carry ("" for the unscoped one)."""
        return "" if self.unscoped else self.id


IMPLICIT = Controller(IMPLICIT_ID, implicit=True, unscoped=True)


def norm_domain(domain: str) -> str:
    """Lower case, no surrounding dots; an internationalised name in its ASCII (IDNA) form."""
    clean = domain.strip().strip(".").lower()
    if clean.isascii():
        return clean
    try:
        return clean.encode("idna").decode("ascii")
    except UnicodeError:
        return clean


@dataclass(frozen=True)
class Controllers:
    by_id: Mapping[str, Controller] = field(default_factory=lambda: {IMPLICIT_ID: IMPLICIT})
    by_domain: Mapping[str, str] = field(default_factory=dict)

    @property
    def implicit(self) -> bool:
        return any(c.implicit for c in self.by_id.values())

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.by_id)

    def get(self, controller_id: str) -> Controller | None:
        return self.by_id.get(controller_id)

    def unscoped(self) -> Controller | None:
        return next((c for c in self.by_id.values() if c.unscoped), None)

    def for_token(self, controller_id: str) -> Controller | None:
        """The controller a link names; "" (links minted before controllers, or for the
        implicit one) is the owner of the older consent. None: not configured (any more)."""
        return self.by_id.get(controller_id) if controller_id else self.unscoped()

    def resolve(self, controller_id: str | None) -> Controller:
        """An id (or None/"" when there is one controller) -> the controller (Rule 4)."""
        known = ", ".join(self.by_id)
        if not controller_id:
            if len(self.by_id) == 1:
                return next(iter(self.by_id.values()))
            raise ValueError(
                f"controller: {len(self.by_id)} controllers are configured, name one ({known})"
            )
        found = self.by_id.get(controller_id)
        if found is None:
            raise ValueError(f"controller: unknown controller {controller_id!r} (known: {known})")
        return found

    def for_domain(self, domain: str) -> Controller | None:
        """The controller of a From domain (Rule 1), None when no configured domain covers it."""
        if self.implicit:
            return next(iter(self.by_id.values()))
        labels = norm_domain(domain).split(".")
        for start in range(len(labels)):
            found = self.by_domain.get(".".join(labels[start:]))
            if found is not None:
                return self.by_id[found]
        return None

    def for_message(self, raw: bytes, mail_from: str) -> Controller | None:
        """The controller of a message from its raw bytes (Rule 2)."""
        if self.implicit:
            return next(iter(self.by_id.values()))
        return self.for_domain(from_domain(raw) or _domain(mail_from))

    def describe(self) -> list[str]:
        """One line per controller for the start-up log: id, name and the domains covered."""
        if self.implicit:
            return ["no controller configured: one implicit controller ('default') for all mail"]
        lines = []
        for c in self.by_id.values():
            domains = ", ".join(f"{d} (and subdomains)" for d in c.domains)
            owns = "; owns the consent recorded before controllers" if c.unscoped else ""
            lines.append(f"controller {c.id} ({c.name}): mail from {domains}{owns}")
        lines.append("mail from any other domain gets no consent-based tracker")
        return lines


def _domain(address: str) -> str:
    return address.strip().strip("<>").rpartition("@")[2]


def from_domain(raw: bytes) -> str:
    """The domain of the first address of the first From header, "" when there is none."""
    head = raw[:MAX_HEADER_SCAN]
    end = _HEADER_END.search(head)
    block = head[: end.start()] if end else head
    found = _FROM.search(block)
    if found is None:
        return ""
    value = re.sub(r"\r?\n[ \t]", " ", found.group(1).decode("utf-8", "replace"))
    for _name, address in getaddresses([value]):
        if "@" in address:
            return norm_domain(_domain(address))
    return ""


def build_controllers(configured: Mapping[str, ControllerLike]) -> Controllers:
    """The registry from the settings (already validated by ``relay.settings``)."""
    if not configured:
        return Controllers()
    owner = next((cid for cid, c in configured.items() if c.existing_consent), None)
    if owner is None and len(configured) == 1:
        owner = next(iter(configured))
    by_id: dict[str, Controller] = {}
    by_domain: dict[str, str] = {}
    for cid, c in configured.items():
        domains = tuple(norm_domain(d) for d in c.domains)
        by_id[cid] = Controller(
            cid, c.name, domains, c.privacy_url, c.contact, tuple(c.third_parties),
            unscoped=cid == owner,
        )  # fmt: skip
        by_domain.update(dict.fromkeys(domains, cid))
    return Controllers(by_id, by_domain)
