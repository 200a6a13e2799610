"""Attribute reading of the trackers stage: values, spans, pixel sizes, labels, srcset lists.

Stage: detection (pure), used by ``htmlscan``. Input: a decoded HTML text and the offsets of one
start tag or attribute value. Output: the ``Found`` record of one image reference, with spans
that index the text as given. Nothing here copies the text or decodes entities.

Rule 1: HTML keeps the first of duplicate attributes; values may be quoted either way or not.
Rule 2: an attribute removed on its own (``background``, ``data-relay-purpose``) is removed with
        the whitespace before it and its closing quote, so the tag stays well formed.
Rule 3: a srcset candidate is removed with the comma that separates it from its neighbour.
Rule 4: only pixel sizes count as declared (``1``, ``1px``); inline CSS beats attributes.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from relay.detect.cssurls import NO_SIZE, BoxSize, css_size, css_urls, over_attributes
from relay.model import ElementKind

# One attribute as the HTML tokenizer reads it (see htmlgrammar Rule 1): a name (which may
# start with "=" and hold quotes), then optionally "=" and a value; a quote opens a value only
# right after "=". Quoted values run to their quote or the end of the region.
_ATTR = re.compile(
    r"""([^ \t\n\r\f/>][^ \t\n\r\f/>=]*+)(?:[ \t\n\r\f]*+=[ \t\n\r\f]*+"""
    r"""(?:"([^"]*+)(?:"|\Z)|'([^']*+)(?:'|\Z)|([^ \t\n\r\f>]*+)))?"""
)
_PIXELS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:px)?\s*$", re.IGNORECASE)
_SPACE = " \t\r\n\f"
_QUOTES_AND_SPACE = "\"' \t\r\n\f"
LABEL_ATTRIBUTE = "data-relay-purpose"
# name -> (value start, value end, attribute start)
Attrs = dict[str, tuple[int, int, int]]


class Found(NamedTuple):
    """One image reference. A tuple, not a dataclass: hundreds are built per message."""

    kind: ElementKind
    raw: str  # the URL as written (entities not decoded, whitespace trimmed)
    url_start: int
    url_end: int
    removal_start: int
    removal_end: int
    elem_start: int  # the tag (or CSS declaration) shown to auditors
    elem_end: int
    size: BoxSize
    label: str | None  # data-relay-purpose value, as written
    label_start: int  # the attribute with its leading whitespace, or -1
    label_end: int


def read_attrs(text: str, start: int, end: int) -> Attrs:
    """Every attribute of a tag (the slower path, for tags found from a hook word)."""
    found: Attrs = {}
    for m in _ATTR.finditer(text, start, end):
        name = m.group(1).lower()
        if name in found:  # HTML keeps the first of duplicate attributes
            continue
        group = m.lastindex or 1
        if group == 1:
            found[name] = (m.end(), m.end(), m.start())
        else:
            found[name] = (m.start(group), m.end(group), m.start())
    return found


def trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in _SPACE:
        start += 1
    while end > start and text[end - 1] in _SPACE:
        end -= 1
    return start, end


def attr_pixels(text: str, attrs: Attrs, name: str) -> int | None:
    span = attrs.get(name)
    if span is None:
        return None
    value = text[span[0] : span[1]]
    if value.isdigit():  # the common case, without a regex
        return int(value)
    m = _PIXELS.match(value)
    return int(float(m.group(1))) if m else None


def with_space(text: str, attr_start: int) -> int:
    """Start of an attribute including the whitespace before it (Rule 4)."""
    while attr_start > 0 and text[attr_start - 1] in _SPACE:
        attr_start -= 1
    return attr_start


def after_quote(text: str, end: int) -> int:
    """End of an attribute: just past the closing quote of its value, if quoted."""
    return end + 1 if end < len(text) and text[end] in "\"'" else end


class Element:
    """The tag being read: its span, attributes, declared size and label."""

    __slots__ = ("attrs", "end", "label", "label_end", "label_start", "size", "start", "text")

    def __init__(self, text: str, start: int, end: int, attrs: Attrs) -> None:
        self.text = text
        self.start = start
        self.end = end
        self.attrs = attrs
        self.size = self._size()
        self.label: str | None = None
        self.label_start = self.label_end = -1
        label = attrs.get(LABEL_ATTRIBUTE)
        if label is not None:
            self.label = text[label[0] : label[1]].strip()
            self.label_start = with_space(text, label[2])
            self.label_end = after_quote(text, label[1])

    def _size(self) -> BoxSize:
        text, attrs = self.text, self.attrs
        width = attr_pixels(text, attrs, "width")
        height = attr_pixels(text, attrs, "height")
        style = attrs.get("style")
        css = css_size(text, style[0], style[1]) if style else NO_SIZE
        return over_attributes(width, height, css)  # inline CSS beats the attributes

    def found(self, kind: ElementKind, url: tuple[int, int], removal: tuple[int, int]) -> Found:
        return Found(
            kind,
            self.text[url[0] : url[1]],
            url[0],
            url[1],
            removal[0],
            removal[1],
            self.start,
            self.end,
            self.size,
            self.label,
            self.label_start,
            self.label_end,
        )


def srcset_items(text: str, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """Candidates of a srcset value: (url start, url end, candidate start, candidate end)."""
    items: list[tuple[int, int, int, int]] = []
    pos = start
    while pos < end:
        while pos < end and (text[pos] in _SPACE or text[pos] == ","):
            pos += 1
        if pos >= end:
            break
        url_start = pos
        while pos < end and text[pos] not in _SPACE:
            pos += 1
        url_end = pos
        if text[url_end - 1] == ",":  # "a.png,b.png": the comma ends the URL
            while url_end > url_start and text[url_end - 1] == ",":
                url_end -= 1
            items.append((url_start, url_end, url_start, url_end))
            continue
        depth = 0  # descriptors run to the next comma outside parentheses
        while pos < end and (text[pos] != "," or depth):
            depth += {"(": 1, ")": -1}.get(text[pos], 0)
            pos += 1
        _, cand_end = trimmed(text, url_start, pos)
        items.append((url_start, url_end, url_start, cand_end))
    return items


def srcset_found(element: Element, kind: ElementKind, span: tuple[int, int, int]) -> list[Found]:
    items = srcset_items(element.text, span[0], span[1])
    found = []
    for n, (url_start, url_end, cand_start, cand_end) in enumerate(items):
        if n + 1 < len(items):  # up to the next candidate: this one, its comma, the space
            removal = (cand_start, items[n + 1][2])
        elif n > 0:  # the last one: from the end of the previous one (its comma before it)
            removal = (items[n - 1][3], cand_end)
        else:
            removal = (cand_start, cand_end)
        found.append(element.found(kind, (url_start, url_end), removal))
    return found


def style_and_background(element: Element) -> list[Found]:
    """``background`` attribute and ``url()`` in the ``style`` attribute of any element."""
    found: list[Found] = []
    text = element.text
    background = element.attrs.get("background")
    if background is not None:
        url = trimmed(text, background[0], background[1])
        if url[0] < url[1]:
            removal = (with_space(text, background[2]), after_quote(text, background[1]))
            found.append(element.found(ElementKind.BACKGROUND_ATTR, url, removal))
    style = element.attrs.get("style")
    if style is not None:
        for ref in css_urls(text, style[0], style[1]):
            url = (ref.url_start, ref.url_end)
            found.append(element.found(ElementKind.STYLE_ATTR, url, (ref.decl_start, ref.decl_end)))
    return found


def eq_value(text: str, span: tuple[int, int]) -> tuple[int, int]:
    """The value part of a group captured by ``htmlgrammar.first_attr`` ("=" and whitespace
    before it dropped; empty when the attribute has no value), quotes still on."""
    start, end = span
    eq = text.find("=", start, end)
    if eq < 0:
        return end, end
    start = eq + 1
    while start < end and text[start] in _SPACE:
        start += 1
    return start, end


def attr_value(text: str, span: tuple[int, int]) -> tuple[int, int]:
    """A captured attribute value without its quotes and surrounding whitespace (a quote left
    open at the end of the text has no closing one to drop)."""
    start, end = span
    if start < end and text[start] in "\"'":
        quote = text[start]
        start += 1
        if end > start and text[end - 1] == quote:
            end -= 1
    return trimmed(text, start, end)


def pixel_value(text: str, span: tuple[int, int]) -> int | None:
    """Pixels of a ``first_attr`` group (None when absent or not a pixel size)."""
    if span[0] < 0:
        return None
    start, end = eq_value(text, span)
    value = text[start:end].strip(_QUOTES_AND_SPACE)
    if value.isdigit():  # the common case, without a regex
        return int(value)
    m = _PIXELS.match(value)
    return int(float(m.group(1))) if m else None
