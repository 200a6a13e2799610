"""Recipient needles: the forms in which a recipient's address can appear in an image URL.

Stage: detection (pure). Input: the envelope recipients and the shortest address looked for
(``recipient-in-url``'s ``min_address_length``). Output: the strings to search the message's
image URLs for.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence


def recipient_needles(recipients: Sequence[str], min_length: int) -> tuple[str, ...]:
    """Forms in which an address can appear in a URL: plain, percent-encoded, base64 (at any
    alignment inside a longer base64 string, standard and URL-safe alphabets) and hashed."""
    needles: list[str] = []
    for address in recipients:
        plain = address.strip().lower()
        if len(plain) < min_length or "@" not in plain:
            continue
        needles += [plain, plain.replace("@", "%40")]
        raw = plain.encode("utf-8")
        for pad in range(3):
            encoded = base64.b64encode(b"\0" * pad + raw).decode("ascii")
            start = 4 if pad else 0
            end = ((pad + len(raw)) // 3) * 4
            piece = encoded[start:end]
            if len(piece) >= 8:
                needles += [piece, piece.replace("+", "-").replace("/", "_")]
        needles += [
            hashlib.md5(raw, usedforsecurity=False).hexdigest(),
            hashlib.sha1(raw, usedforsecurity=False).hexdigest(),
            hashlib.sha256(raw).hexdigest(),
        ]
    return tuple(dict.fromkeys(needles))
