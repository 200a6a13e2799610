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
Rule 4: a ``url()`` inside a CSS comment or a CSS string is not a reference; ``@import "..."``
        is one. A ``url(`` that the text ends inside is one (browsers fetch it, CSS Syntax 4.3.6).
Rule 5: linear time: the region is read by one tokenizer pass in which comments, strings and
        url() tokens are each consumed whole (to their end or the region's end); declaration and
        block bounds are found by searches that never go back over text already searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from relay.detect.cssescape import ESCAPE, name_pattern, unescape

# The tokens that matter, in one pass: comments and strings (consumed, so that nothing inside
# them counts), url() (quoted or not, its name possibly written with escapes; the closing
# parenthesis may be missing at the end), @import of a quoted URL (which fetches a style sheet
# just the same, with or without whitespace or comments before the string) and the opening of
# an image-set() (whose strings are URLs, read by ``_SET_TOKEN``). Each alternative either fails
# on its first characters or consumes what it read (Rule 5).
_COMMENT = r"/\*(?:[^*]++|\*(?!/))*+(?:\*/|\Z)"
_DQ = r"(?:[^\"\\]++|\\[\s\S])*+"
_SQ = r"(?:[^'\\]++|\\[\s\S])*+"
_URL_TOKEN = (
    rf"{name_pattern('url')}\(\s*+(?:\"(?P<dq>{_DQ})(?:\"|\Z)|'(?P<sq>{_SQ})(?:'|\Z)"
    rf"|(?P<uq>(?:[^)\s\"'\\]++|{ESCAPE})*+))\s*+\)?"
)
_TOKEN = re.compile(
    rf"{_COMMENT}"
    r"|\"(?:[^\"\\\n]++|\\[\s\S])*+(?:\"|\n|\Z)"
    r"|'(?:[^'\\\n]++|\\[\s\S])*+(?:'|\n|\Z)"
    rf"|{_URL_TOKEN}"
    rf"|@{name_pattern('import')}(?:\s++|{_COMMENT})*+"
    rf"(?:\"(?P<idq>{_DQ})(?:\"|\Z)|'(?P<isq>{_SQ})(?:'|\Z))"
    rf"|(?P<iset>(?:-webkit-)?{name_pattern('image-set')}\()",
    re.IGNORECASE,
)
_URL_GROUPS = tuple(_TOKEN.groupindex[g] for g in ("dq", "sq", "uq", "idq", "isq"))
_G_SET = _TOKEN.groupindex["iset"]
# Inside image-set(): its strings at the first level are URLs (a string in a nested function,
# such as type("image/avif"), is not), url() tokens too; parentheses are counted to its end.
# In a style attribute the quotes may be written as character references (the attribute is
# decoded before CSS reads it): &quot;...&quot; is a string too (read as one in <style> blocks
# as well, where it is not: over-reading a URL there costs nothing).
_ENTITY_QUOTE = r"&(?:quot|apos|#0*3[49]|#[xX]0*2[27]);"
_SET_TOKEN = re.compile(
    rf"{_COMMENT}"
    rf"|\"(?P<dq>{_DQ})(?:\"|\Z)|'(?P<sq>{_SQ})(?:'|\Z)"
    rf"|{_ENTITY_QUOTE}(?P<eq>(?:[^&)]++|&(?!{_ENTITY_QUOTE[1:]}))*+)(?:{_ENTITY_QUOTE})?"
    rf"|{_URL_TOKEN.replace('?P<dq>', '?P<udq>').replace('?P<sq>', '?P<usq>')}"
    r"|(?P<open>\()|(?P<close>\))",
    re.IGNORECASE,
)
_SET_STRINGS = tuple(_SET_TOKEN.groupindex[g] for g in ("dq", "sq", "eq"))
_SET_URLS = tuple(_SET_TOKEN.groupindex[g] for g in ("udq", "usq", "uq"))
_G_OPEN, _G_CLOSE = _SET_TOKEN.groupindex["open"], _SET_TOKEN.groupindex["close"]

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


class _Bounds:
    """Declaration bounds of the url() references of one region, found left to right: the
    search back for a declaration's start stops where the previous reference's search began,
    and the search forward for its end is reused until a reference lies past it (Rule 5)."""

    __slots__ = ("after", "end", "prev_end", "prev_start", "start", "stop", "text")

    def __init__(self, text: str, start: int, end: int) -> None:
        self.text, self.start, self.end = text, start, end
        self.prev_end = start  # where the previous reference ended
        self.prev_start = start  # the previous declaration's start
        self.after = -1  # the url end the cached stop was searched from
        self.stop = (-1, "")  # first ";" or "}" after it: (position, char), or (end, "")

    def declaration(self, url_start: int, url_end: int) -> tuple[int, int]:
        """Rule 2: from after the last ";", "{" or "}" before the url() to its ";"."""
        text = self.text
        mark = max(
            text.rfind(";", self.prev_end, url_start),
            text.rfind("{", self.prev_end, url_start),
            text.rfind("}", self.prev_end, url_start),
        )
        # No delimiter since the previous reference: the same declaration goes on.
        start = mark + 1 if mark >= 0 else self.prev_start
        self.prev_start, self.prev_end = start, url_end
        while start < url_start and text[start] in _SPACE:
            start += 1
        if self.stop[0] < url_end:
            semi = text.find(";", url_end, self.end)
            brace = text.find("}", url_end, semi if semi >= 0 else self.end)
            if brace >= 0:
                self.stop = (brace, "}")
            elif semi >= 0:
                self.stop = (semi, ";")
            else:
                self.stop = (self.end, "")
        at, char = self.stop
        if char == ";":
            return start, at + 1
        end = at
        while end > url_end and text[end - 1] in _SPACE:
            end -= 1
        return start, end


def css_urls(text: str, start: int, end: int) -> list[CssUrl]:
    """Every ``url()`` (and ``@import "..."``, and each candidate of an ``image-set()``) in
    ``text[start:end]``, with absolute offsets; none inside a CSS comment or string (Rule 4)."""
    found: list[CssUrl] = []
    bounds = _Bounds(text, start, end)
    pos = start
    search = _TOKEN.search
    while True:
        m = search(text, pos, end)
        if m is None:
            return found
        pos = m.end()
        if m.start(_G_SET) >= 0:
            pos = _image_set(text, pos, end, bounds, found)
            continue
        group = next((g for g in _URL_GROUPS if m.start(g) >= 0), 0)
        if group:  # else a comment or a string
            _add(text, m, group, bounds, found)


def _add(text: str, m: re.Match[str], group: int, bounds: _Bounds, found: list[CssUrl]) -> None:
    url_start, url_end = _trim_url(text, m.start(group), m.end(group))
    if url_start < url_end:
        decl_start, decl_end = bounds.declaration(m.start(), m.end())
        found.append(CssUrl(text[url_start:url_end], url_start, url_end, decl_start, decl_end))


def _image_set(text: str, pos: int, end: int, bounds: _Bounds, found: list[CssUrl]) -> int:
    """The candidates of an ``image-set()`` whose "(" ends at ``pos``; returns where it ends
    (its ")" or ``end``). One forward pass: each token is read once (Rule 5)."""
    depth = 1
    search = _SET_TOKEN.search
    while True:
        m = search(text, pos, end)
        if m is None:
            return end
        pos = m.end()
        if m.start(_G_OPEN) >= 0:
            depth += 1
        elif m.start(_G_CLOSE) >= 0:
            depth -= 1
            if not depth:
                return pos
        else:
            urls = _SET_STRINGS if depth == 1 else ()
            group = next((g for g in (*urls, *_SET_URLS) if m.start(g) >= 0), 0)
            if group:
                _add(text, m, group, bounds, found)


def css_hook(lower: str, start: int, end: int) -> bool:
    """Whether a style value may hold a fetch: "url(", "image-set(" or a CSS escape."""
    return (
        lower.find("url(", start, end) >= 0
        or lower.find("-set(", start, end) >= 0
        or lower.find("\\", start, end) >= 0
    )


def over_attributes(width: int | None, height: int | None, css: BoxSize) -> BoxSize:
    """An element's size: its inline CSS sizes over its width and height attributes."""
    if css is NO_SIZE:
        return NO_SIZE if width is None and height is None else BoxSize(width, height)
    return BoxSize(
        css.width if css.width is not None else width,
        css.height if css.height is not None else height,
        css.max_width,
        css.max_height,
    )


def css_size(text: str, start: int, end: int) -> BoxSize:
    """Pixel sizes declared in ``text[start:end]`` (Rule 3)."""
    values: dict[str, tuple[int, bool]] = {}
    if text.find("\\", start, end) >= 0:  # names written with escapes: read them resolved
        text = unescape(text[start:end])
        start, end = 0, len(text)
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


class BlockSizes:
    """The declared size of the ``{...}`` rule body around each url() of a style block, for
    references given left to right: a body is found and measured once, however many url()
    it holds (Rule 5)."""

    __slots__ = ("close", "end", "open", "searched", "sizes", "start", "text")

    def __init__(self, text: str, start: int, end: int) -> None:
        self.text, self.start, self.end = text, start, end
        self.searched = start  # "{" were looked for up to here
        self.open = -1  # the last "{" before self.searched
        self.close = -1  # the first "}" after the last position asked, or end
        self.sizes: dict[tuple[int, int], BoxSize] = {}

    def at(self, pos: int) -> BoxSize:
        text = self.text
        if pos > self.searched:
            last = text.rfind("{", self.searched, pos)
            if last >= 0:
                self.open = last
            self.searched = pos
        if self.close < pos:
            close = text.find("}", pos, self.end)
            self.close = close if close >= 0 else self.end
        body = (self.open + 1 if self.open >= 0 else self.start, self.close)
        size = self.sizes.get(body)
        if size is None:
            size = self.sizes[body] = css_size(text, body[0], body[1])
        return size
