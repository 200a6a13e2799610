"""Classification: parsed message + envelope -> (category, category_reason).

Stage: pure, once per message, before detection. Input: ``ParsedMessage``, ``Envelope`` and the
``Policy`` (whose ``classification`` comes from ``rules/classify.toml``, loaded here by
``load_classification``). Output: a ``Category`` and the reason recorded for auditors. It never
does I/O and never changes the message (the pipeline removes ``X-Relay-*`` headers).

Rule 1: the first source that applies settles the category, in this order:
        ``X-Relay-Category`` header ("header:X-Relay-Category"), ``[[classify]]`` rules on the
        authenticated user, client address, envelope sender or From address ("rule:<id>"), list
        headers List-Id / List-Unsubscribe / Precedence bulk|list|junk ("list-headers"), ESP
        stream and tag headers ("esp-header:<name>"), then ``[categories] default`` ("default").
Rule 2: an ``X-Relay-Category`` value that is not a category is an error
        (``MalformedMessage`` with reply ``BAD_CATEGORY``): the application asked for something
        the relay cannot honour, and guessing could track without a basis.
Rule 3: content clues (``[[content]]`` words in the subject or body) may only make the category
        stricter ("content:<id> over <previous reason>"). "Stricter" means fewer trackers are
        allowed without consent: consent_request (3, strips everything) > a category that is
        not requested (2, nothing exempt) > a requested category other than authentication
        (1, deliverability minimised) > authentication when requested (0, authentication
        security also exempt). Equal strictness changes nothing. So an application cannot buy
        an exemption by labelling a promotion "transactional", and words never relax a label.
Rule 4: a content clue never yields consent_request: that category refuses mail at SMTP time
        inside the re-ask window, which only the application's own declaration may trigger.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, TypeVar

from relay import replies
from relay.errors import MalformedMessage, RulesError
from relay.model import Category, Envelope, ParsedMessage
from relay.rulefiles import RuleEntry, RuleSet

if TYPE_CHECKING:
    from relay.core.policy import Policy

CATEGORY_HEADER = "X-Relay-Category"
_LIST_HEADERS = ("List-Id", "List-Unsubscribe")
_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
_TEXT_TYPES = frozenset({"text/plain", "text/html"})

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
# Classifying


def classify(message: ParsedMessage, envelope: Envelope, policy: Policy) -> tuple[Category, str]:
    """The message's category and the reason for it (see the module rules)."""
    category, reason = _declared(message, envelope, policy)
    return _content_clues(message, category, reason, policy)


def strictness(category: Category, policy: Policy) -> int:
    """Higher is stricter: fewer trackers allowed without consent (module Rule 3)."""
    if category is Category.CONSENT_REQUEST:
        return 3
    if not policy.is_requested(category):
        return 2
    return 0 if category is Category.AUTHENTICATION else 1


def _declared(message: ParsedMessage, envelope: Envelope, policy: Policy) -> tuple[Category, str]:
    header = message.header(CATEGORY_HEADER)
    if header is not None:
        return _header_category(header), f"header:{CATEGORY_HEADER}"
    for rule in policy.classification.senders:
        if _sender_matches(rule, message, envelope):
            return rule.category, f"rule:{rule.id}"
    if _is_list_mail(message):
        return policy.list_headers_category, "list-headers"
    for esp in policy.classification.esp:
        name = _esp_match(esp, message)
        if name is not None:
            return esp.category, f"esp-header:{name}"
    return policy.default_category, "default"


def _header_category(value: str) -> Category:
    cleaned = value.strip().lower()
    try:
        return Category(cleaned)
    except ValueError:
        shown = ascii(value.strip()[:40])
        choices = ", ".join(c.value for c in Category)
        reply = replies.BAD_CATEGORY.with_detail(f"{shown} (use one of: {choices})")
        raise MalformedMessage(f"{CATEGORY_HEADER}: {shown} is not a category", reply) from None


def _glob(value: str, patterns: Sequence[str]) -> bool:
    lowered = value.lower()
    return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in patterns)


def _sender_matches(rule: SenderRule, message: ParsedMessage, envelope: Envelope) -> bool:
    if rule.auth_users and not _glob(envelope.auth_user or "", rule.auth_users):
        return False
    if rule.clients:
        try:
            ip = ipaddress.ip_address(envelope.client_ip)
        except ValueError:
            return False
        if not any(ip.version == net.version and ip in net for net in rule.clients):
            return False
    if rule.senders and not (envelope.mail_from and _glob(envelope.mail_from, rule.senders)):
        return False
    if rule.header_from:
        address = parseaddr(message.header("From") or "")[1]
        if not (address and _glob(address, rule.header_from)):
            return False
    return True


def _is_list_mail(message: ParsedMessage) -> bool:
    if any(message.header(name) is not None for name in _LIST_HEADERS):
        return True
    precedence = (message.header("Precedence") or "").strip().lower()
    return precedence in _BULK_PRECEDENCE


def _esp_match(rule: EspRule, message: ParsedMessage) -> str | None:
    for name in rule.headers:
        for header in message.headers_named(name):
            if any(_glob(token, rule.values) for token in _tokens(header.value)):
                return name
    return None


def _tokens(value: str) -> Iterator[str]:
    """Tag values of an ESP header: a JSON object (SendGrid X-SMTPAPI: "category"; "tags"), or
    a comma-separated list (Mandrill X-MC-Tags), or one value."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data: Any = json.loads(text)
        except ValueError:
            return
        if isinstance(data, dict):
            for key in ("category", "tags"):
                item = data.get(key)
                items = item if isinstance(item, list) else [item]
                yield from (str(i).strip() for i in items if isinstance(i, str | int))
        return
    yield from (t.strip() for t in text.split(",") if t.strip())


def _content_clues(
    message: ParsedMessage, category: Category, reason: str, policy: Policy
) -> tuple[Category, str]:
    best, best_reason = category, reason
    subject: str | None = None
    body: str | None = None
    for rule in policy.classification.content:
        if strictness(rule.category, policy) <= strictness(best, policy):
            continue
        if rule.subject is not None:
            subject = _subject(message) if subject is None else subject
            if rule.subject.search(subject):
                best, best_reason = rule.category, f"content:{rule.id} over {reason}"
                continue
        if rule.body is not None:
            if body is None:
                body = "\n".join(
                    p.text or "" for p in message.parts if p.content_type in _TEXT_TYPES
                )
            if rule.body.search(body):
                best, best_reason = rule.category, f"content:{rule.id} over {reason}"
    return best, best_reason


def _subject(message: ParsedMessage) -> str:
    raw = message.header("Subject") or ""
    try:
        return str(make_header(decode_header(raw)))
    except (ValueError, LookupError):
        # An undecodable encoded-word: match on the raw text rather than fail the message.
        return raw


# ---------------------------------------------------------------------------------------------
# Loading (called by relay.core.policy.load_policy)


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
