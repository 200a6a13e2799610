"""CSS helpers of the trackers stage: ``url()`` references with their declarations, and sizes.

Stage: detection (pure). Input: a decoded HTML text and a region of it that holds CSS (a
``style`` attribute value or a ``<style>`` block). Output: located ``url()`` references and the
declared box size. This module never decodes entities of the whole text and never allocates a
copy of the region: every regex runs on the original string with ``pos``/``endpos``, so that
the offsets it returns index ``Part.text`` directly.

Rule 1: a url() span covers exactly the URL as written: without the quotes, without the
        surrounding whitespace, and without ``&quot;`` entities that some editors write in
        place of quotes inside a style attribute.
Rule 2: a declaration span runs from the first character of the property name to the ``;``
        that ends it (included) or, without one, to its last non-space character before ``}``
        or the end of the region: deleting it leaves valid CSS.
Rule 3: only pixel sizes count (``1px``, or a bare number as quirks-mode clients read it,
        with or without ``!important``);
        percentages, ``em`` and ``auto`` are "not declared". The last declaration wins, except
        that an ``!important`` one beats a later normal one (the cascade, in small).
Rule 4: a ``url()`` inside a CSS comment is not a reference; ``@import "..."`` is one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

# One url() reference. Quoted forms first, then an unquoted one that stops at ")" or space.
# One url() reference, or an @import of a quoted URL (which fetches a style sheet just the same).
_URL = re.compile(
    r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)\s]*))\s*\)"""
    r"""|@import\s+(?:"([^"]*)"|'([^']*)')""",
    re.IGNORECASE,
)
_COMMENT = re.compile(r"/\*[\s\S]*?(?:\*/|$)")

# Entity-written quotes around a URL inside a style attribute: url(&quot;...&quot;).
_ENTITY_QUOTES = ("&quot;", "&#34;", "&#x22;", "&apos;", "&#39;", "&#x27;")

_SIZE = re.compile(
    r"(?<![\w-])(max-width|max-height|width|height)\s*:\s*(\d+(?:\.\d+)?)(px)?\s*"
    r"(!\s*important)?\s*(?=;|\}|$)",
    re.IGNORECASE,
)

_SPACE = " \t\r\n\f"


@dataclass(frozen=True, slots=True)
class CssUrl:
    """One ``url()`` found in CSS: the URL as written and the declaration holding it."""

    raw: str
    url_start: int
    url_end: int
    decl_start: int
    decl_end: int


class BoxSize(NamedTuple):
    """Pixel sizes declared in CSS (None: not declared in pixels). A tuple: one per image."""

    width: int | None = None
    height: int | None = None
    max_width: int | None = None
    max_height: int | None = None


NO_SIZE = BoxSize()


def _trim_url(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop surrounding whitespace and entity-written quotes from a URL span (Rule 1)."""
    while start < end and text[start] in _SPACE:
        start += 1
    while end > start and text[end - 1] in _SPACE:
        end -= 1
    for quote in _ENTITY_QUOTES:
        if text.startswith(quote, start) and end - start > 2 * len(quote):
            if text.endswith(quote, start, end):
                return start + len(quote), end - len(quote)
            return start + len(quote), end
    return start, end


def _declaration(
    text: str, region_start: int, region_end: int, url_start: int, url_end: int
) -> tuple[int, int]:
    """The declaration around a url() (Rule 2): bounded by ``;``, ``{`` and ``}``."""
    start = url_start
    while start > region_start and text[start - 1] not in ";{}":
        start -= 1
    while start < url_start and text[start] in _SPACE:
        start += 1
    end = url_end
    while end < region_end:
        char = text[end]
        if char == ";":
            return start, end + 1
        if char == "}":
            break
        end += 1
    while end > url_end and text[end - 1] in _SPACE:
        end -= 1
    return start, end


def _comments(text: str, start: int, end: int) -> list[tuple[int, int]]:
    if text.find("/*", start, end) < 0:
        return []
    return [m.span() for m in _COMMENT.finditer(text, start, end)]


def css_urls(text: str, start: int, end: int) -> list[CssUrl]:
    """Every ``url()`` (and ``@import "..."``) in ``text[start:end]``, with absolute offsets;
    none inside a CSS comment (Rule 4)."""
    found: list[CssUrl] = []
    comments = _comments(text, start, end)
    for m in _URL.finditer(text, start, end):
        if any(c_start <= m.start() < c_end for c_start, c_end in comments):
            continue
        group = m.lastindex or 3
        url_start, url_end = _trim_url(text, m.start(group), m.end(group))
        if url_start >= url_end:
            continue
        decl_start, decl_end = _declaration(text, start, end, m.start(), m.end())
        found.append(CssUrl(text[url_start:url_end], url_start, url_end, decl_start, decl_end))
    return found


def css_size(text: str, start: int, end: int) -> BoxSize:
    """Pixel sizes declared in ``text[start:end]`` (Rule 3)."""
    values: dict[str, tuple[int, bool]] = {}
    for m in _SIZE.finditer(text, start, end):
        prop = m.group(1).lower()
        important = m.group(4) is not None
        previous = values.get(prop)
        if previous is not None and previous[1] and not important:
            continue
        values[prop] = (int(float(m.group(2))), important)
    if not values:
        return NO_SIZE

    def get(name: str) -> int | None:
        value = values.get(name)
        return None if value is None else value[0]

    return BoxSize(get("width"), get("height"), get("max-width"), get("max-height"))


def block_bounds(text: str, region_start: int, region_end: int, pos: int) -> tuple[int, int]:
    """The ``{...}`` rule body around ``pos`` inside a style block (for its declared size)."""
    open_at = text.rfind("{", region_start, pos)
    close_at = text.find("}", pos, region_end)
    return (open_at + 1 if open_at >= 0 else region_start), (
        close_at if close_at >= 0 else region_end
    )
