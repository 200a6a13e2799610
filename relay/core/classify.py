"""Classification: parsed message + envelope -> (category, category_reason).

Stage: pure, once per message, before detection. Input: ``ParsedMessage``, ``Envelope`` and the
``Policy`` (whose ``classification`` comes from ``rules/classify.toml``, loaded by
``relay.core.classify_rules``). Output: a ``Category`` and the reason recorded for auditors. It
never does I/O and never changes the message (the pipeline removes ``X-Relay-*`` headers).

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
from collections.abc import Iterator, Sequence
from email.header import decode_header, make_header
from email.utils import parseaddr
from typing import Any

from relay import replies
from relay.core.classify_rules import EspRule, SenderRule
from relay.core.policy import Policy
from relay.errors import MalformedMessage
from relay.model import Category, Envelope, ParsedMessage

CATEGORY_HEADER = "X-Relay-Category"
_LIST_HEADERS = ("List-Id", "List-Unsubscribe")
_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
_TEXT_TYPES = frozenset({"text/plain", "text/html"})

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
