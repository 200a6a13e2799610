"""Classification rules: ``rules/classify.toml`` -> the tables ``classify`` reads.

Stage: pure, at start-up and on SIGHUP (through ``relay.core.policy.load_policy``). Input: the
merged ``RuleSet``. Output: ``Classification`` (sender, ESP and content rules) and the
``[categories]`` settings. Errors are ``RulesError`` naming file and line; nothing is guessed.
A disabled entry is validated too, so that switching it on later cannot break a reload.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from relay.errors import RulesError
from relay.model import Category
from relay.rulefiles import RuleEntry, RuleSet

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SenderRule:
    """A ``[[classify]]`` rule: every condition written must hold (patterns are lower case)."""

    id: str
    category: Category
    auth_users: tuple[str, ...] = ()
    clients: tuple[IpNetwork, ...] = ()
    senders: tuple[str, ...] = ()
    header_from: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EspRule:
    id: str
    category: Category
    headers: tuple[str, ...]  # header names as written in the rule
    values: tuple[str, ...]  # lower-case glob patterns


@dataclass(frozen=True, slots=True)
class ContentRule:
    id: str
    category: Category
    subject: re.Pattern[str] | None
    body: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class Classification:
    senders: tuple[SenderRule, ...] = ()
    esp: tuple[EspRule, ...] = ()
    content: tuple[ContentRule, ...] = ()


# ---------------------------------------------------------------------------------------------
# Loading


def _category(rules: RuleSet, dotted: str, raw: Any) -> Category:
    try:
        return Category(raw)
    except ValueError:
        choices = ", ".join(c.value for c in Category)
        raise RulesError(
            f"{rules.where(dotted)}: [categories] key {dotted.rsplit('.', maxsplit=1)[-1]!r}: "
            f"{raw!r} is not one of: {choices}"
        ) from None


def load_categories(rules: RuleSet) -> tuple[Category, frozenset[Category], Category]:
    """``[categories]``: (default, requested, list_headers); unknown keys refused."""
    table: Mapping[str, Any] = rules.tables.get("categories", {})
    for key in table:
        if key not in ("default", "requested", "list_headers"):
            raise RulesError(
                f"{rules.where(f'categories.{key}')}: [categories] key {key!r}: unknown key "
                "(allowed: default, requested, list_headers)"
            )
    default = _category(rules, "categories.default", table.get("default", "marketing"))
    listed = _category(rules, "categories.list_headers", table.get("list_headers", "marketing"))
    raw = table.get(
        "requested", ["transactional", "authentication", "public_service", "newsletter"]
    )
    if not isinstance(raw, list):
        raise RulesError(
            f"{rules.where('categories.requested')}: [categories] key 'requested': "
            "must be a list of categories"
        )
    requested = frozenset(_category(rules, "categories.requested", item) for item in raw)
    if Category.CONSENT_REQUEST in requested:
        # A consent request is never something the recipient asked for (section 4.2).
        raise RulesError(
            f"{rules.where('categories.requested')}: [categories] key 'requested': "
            "consent_request can never be a requested category"
        )
    return default, requested, listed


def load_classification(rules: RuleSet) -> Classification:
    """``[[classify]]``, ``[[esp]]`` and ``[[content]]`` rules; ``RulesError`` names file:line.

    A disabled entry is validated too, so that switching it on later cannot break a reload.
    """
    return Classification(
        senders=_enabled(rules, "classify", _sender_rule),
        esp=_enabled(rules, "esp", _esp_rule),
        content=_enabled(rules, "content", _content_rule),
    )


def _enabled(rules: RuleSet, table: str, build: Callable[[RuleEntry], T]) -> tuple[T, ...]:
    entries = rules.of(table, include_disabled=True)
    built = [build(entry) for entry in entries]
    return tuple(rule for entry, rule in zip(entries, built, strict=True) if entry.enabled)


def _entry_category(entry: RuleEntry) -> Category:
    raw = entry.data["category"]
    try:
        return Category(raw)
    except ValueError:
        choices = ", ".join(c.value for c in Category)
        raise entry.error("category", f"{raw!r} is not one of: {choices}") from None


def _strings(entry: RuleEntry, key: str) -> tuple[str, ...]:
    raw = entry.data.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
        raise entry.error(key, 'must be a list of texts such as ["value"]')
    return tuple(raw)


def _sender_rule(entry: RuleEntry) -> SenderRule:
    conditions = ("auth_user", "client", "sender", "header_from")
    entry.check(("category", *conditions), required=("category",))
    if not any(key in entry.data for key in conditions):
        raise entry.error(None, f"needs at least one condition ({', '.join(conditions)})")
    networks: list[IpNetwork] = []
    for text in _strings(entry, "client"):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise entry.error("client", f"{text!r} is not an address or network") from None
    return SenderRule(
        id=entry.id,
        category=_entry_category(entry),
        auth_users=tuple(v.lower() for v in _strings(entry, "auth_user")),
        clients=tuple(networks),
        senders=tuple(v.lower() for v in _strings(entry, "sender")),
        header_from=tuple(v.lower() for v in _strings(entry, "header_from")),
    )


def _esp_rule(entry: RuleEntry) -> EspRule:
    entry.check(("headers", "values", "category"), required=("headers", "values", "category"))
    headers, values = _strings(entry, "headers"), _strings(entry, "values")
    if not headers or not values:
        raise entry.error("headers" if not headers else "values", "must not be empty")
    return EspRule(entry.id, _entry_category(entry), headers, tuple(v.lower() for v in values))


def _words(entry: RuleEntry, key: str) -> re.Pattern[str] | None:
    words = _strings(entry, key)
    if not words:
        return None
    # A word matches on its own, not inside another word ("sale" is not in "wholesale"); an
    # edge that is not a letter or digit ("% off") needs no boundary.
    parts = []
    for word in sorted(words, key=len, reverse=True):
        head = r"(?<!\w)" if re.match(r"\w", word) else ""
        tail = r"(?!\w)" if re.search(r"\w$", word) else ""
        parts.append(f"{head}{re.escape(word)}{tail}")
    return re.compile("|".join(parts), re.IGNORECASE)


def _content_rule(entry: RuleEntry) -> ContentRule:
    entry.check(("subject_words", "body_words", "category"), required=("category",))
    category = _entry_category(entry)
    if category is Category.CONSENT_REQUEST:
        raise entry.error(
            "category", "content clues cannot make a consent_request (the application declares it)"
        )
    subject, body = _words(entry, "subject_words"), _words(entry, "body_words")
    if subject is None and body is None:
        raise entry.error(None, "needs subject_words or body_words")
    return ContentRule(entry.id, category, subject, body)
