"""What the detector knows about one image when heuristics run, and the size tests they share.

Stage: detection (pure). Input: an element's tag text, its declared ``BoxSize``. Output:
``ImageFacts`` fields and answers such as "declared visible" (heuristics Rule 5).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from relay.detect.cssurls import BoxSize
from relay.model import ElementKind


class ImageFacts(NamedTuple):
    """What the detector knows about one image reference when heuristics run (a tuple: one is
    built per image, and tuples are several times cheaper to build than frozen dataclasses)."""

    url: str
    path: str  # path and query, as split by signatures.split_url
    kind: ElementKind
    size: BoxSize
    host_alone: bool  # the host serves no other image URL in the message
    needles: tuple[str, ...]  # recipient needles present somewhere in the message's image URLs
    identifier: bool = False  # the path or query holds an identifier (tokens.has_identifier)
    hidden: bool = False  # the element is styled display:none
    alt: str = ""  # the element's alt text, as written
    lone_dynamic: bool = False  # the only non-file URL of a host whose others are image files
    host: str = ""  # lower-case host, as split by signatures.split_url


_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_ALT = re.compile(r"""[\s"']alt\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*))""", re.IGNORECASE)
# Alt texts that say nothing to a reader: a tracker's, or a placeholder's.
_EMPTY_ALTS = frozenset({"", "pixel", "tracker", "tracking", "spacer", "image", "img", "open",
                         "beacon", "x", "-", "."})  # fmt: skip


def element_facts(tag: str) -> tuple[bool, str]:
    """(styled display:none, alt text) of an element's tag text."""
    alt = _ALT.search(tag)
    text = next((g for g in alt.groups() if g is not None), "") if alt else ""
    return _HIDDEN.search(tag) is not None, text


def described(alt: str) -> bool:
    """An alt text a person reads (a name, a caption): the image is shown to humans."""
    words = alt.strip().lower()
    return words not in _EMPTY_ALTS and sum(c.isalpha() for c in words) >= 3


def declared_area(size: BoxSize) -> int | None:
    if size.width is None or size.height is None:
        return None
    return size.width * size.height


def visible_size(size: BoxSize, max_area: int = 25) -> bool:
    """Declared large enough to be seen: both sides declared, over ``max_area`` and no side
    squeezed to a pixel or less."""
    area = declared_area(size)
    return area is not None and area > max_area and size.width != 0 and size.height != 0


def tiny(size: BoxSize, params: dict[str, Any]) -> bool:
    area = declared_area(size)
    if area is not None:
        return bool(area <= params["max_area"])
    side = size.width if size.width is not None else size.height
    return side is not None and side <= params["max_single"]


def spacer(facts: ImageFacts, names: list[str]) -> bool:
    """A static spacer: a known file name, no query, no identifier (Rule 6)."""
    if "?" in facts.path or facts.identifier:
        return False
    stem = facts.path.rsplit("/", 1)[-1].split(".", 1)[0].lower()
    return any(stem == name or (len(name) >= 5 and name in stem) for name in names)


def shown(size: BoxSize, p: dict[str, Any]) -> bool:
    """Declared visible (Rule 5)."""
    area = declared_area(size)
    if area is not None:
        return bool(area > p["max_declared_area"]) and size.width != 0 and size.height != 0
    side = size.width if size.width is not None else size.height
    return side is not None and side >= p["content_min_side"]
