"""Recipient addresses -> normalised form and keyed hash (the only recipient id in keys and URLs).

Rule 1: the key is HMAC-SHA256(address_key, normalised address), hex, truncated to 32 chars
        (128 bits): stable across relays that share the key, useless without it.
Rule 2: normalisation lower-cases the domain and, because mailbox local parts are
        case-insensitive at every provider that matters, the local part too; it strips
        surrounding angle brackets and whitespace. It never removes dots or +tags: those can
        be distinct mailboxes.
Rule 3: ``mask`` is what operational logs may show of an address.
"""

from __future__ import annotations

import hashlib
import hmac


def normalise(address: str) -> str:
    return address.strip().strip("<>").strip().lower()


def recipient_key(address: str, key: bytes) -> str:
    digest = hmac.new(key, normalise(address).encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:32]


def mask(address: str) -> str:
    """``alice@example.org`` -> ``a***@example.org``."""
    local, at, domain = normalise(address).rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"
