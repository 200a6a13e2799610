"""The removable unit of an image element: where its own closing tag ends, looked up only for
the few references that are trackers (htmlscan Rule 4).

Stage: detection (pure). Input: the HTML text and a ``Found`` of ``htmlscan``. Output: the end
of the unit to remove (``removal_end``) and the text's AMP index (``AmpIndex``).

Rule 1: an image element's unit runs to its own closing tag when one follows (``</img>``,
        ``</amp-img>``, a VML closing tag), else it is the tag alone; a self-closed tag
        (``/>``) is its own unit.
Rule 2: an AMP image's closing tag counts only before any other AMP image starts, or the
        removal would swallow other content; the AMP tags of a text are indexed in one pass
        when the first AMP tracker needs them (no search per tracker, linear).
"""

from __future__ import annotations

import bisect
import re

from relay.detect.htmlattrs import Found
from relay.model import ElementKind

_CLOSE = re.compile(
    r"[ \t\n\r\f]*+</(img|amp-img|amp-anim|v:image|v:fill|v:imagedata)[ \t\n\r\f]*+>", re.I
)
_AMP_TAGS = re.compile(r"<(/?)amp-(?:img|anim)(?:[ \t\n\r\f/>]|\Z)", re.IGNORECASE)
_AMP_CLOSE_END = re.compile(r"[ \t\n\r\f]*+>")
_ELEMENT_KINDS = frozenset({ElementKind.IMG, ElementKind.AMP_IMG, ElementKind.VML})
_TAG_NAME = re.compile(r"<([^ \t\n\r\f/>]+)")


class AmpIndex:
    """Where the AMP image tags of one text open and close, found in one pass when the first
    AMP tracker needs its closing tag (Rule 5: no search per tracker)."""

    __slots__ = ("closes", "opens")

    def __init__(self, text: str) -> None:
        self.opens: list[int] = []
        self.closes: list[tuple[int, int]] = []
        for m in _AMP_TAGS.finditer(text):
            if m.group(1):
                end = _AMP_CLOSE_END.match(text, m.end() - (text[m.end() - 1] == ">"))
                if end is not None:
                    self.closes.append((m.start(), end.end()))
            else:
                self.opens.append(m.start())

    def element_end(self, tag_end: int) -> int:
        """The end of this AMP image's own closing tag, or ``tag_end``: the closing tag must
        come before any other AMP image starts, or the removal would swallow other content."""
        n = bisect.bisect_left(self.closes, (tag_end, -1))
        if n == len(self.closes):
            return tag_end
        close_start, close_end = self.closes[n]
        other = bisect.bisect_left(self.opens, tag_end)
        if other < len(self.opens) and self.opens[other] < close_start:
            return tag_end
        return close_end


def _element_end(text: str, name: str, tag_end: int, amp: AmpIndex | None) -> int:
    """Where the removable unit of an image element ends (Rule 4)."""
    if text[tag_end - 2 : tag_end] == "/>":
        return tag_end
    if name in ("amp-img", "amp-anim"):
        return (amp or AmpIndex(text)).element_end(tag_end)
    m = _CLOSE.match(text, tag_end)
    if m is not None and m.group(1).lower() == name:
        return m.end()
    return tag_end


def removal_end(text: str, found: Found, amp: AmpIndex | None = None) -> int:
    """End of the removable unit of a src reference: the element's own closing tag is looked
    for only here, for the few references that are trackers (Rule 4). ``amp`` is the text's
    AMP index when the caller keeps one (it is built on first use otherwise)."""
    if found.kind not in _ELEMENT_KINDS or found.removal_end != found.elem_end:
        return found.removal_end
    m = _TAG_NAME.match(text, found.elem_start)
    if m is None:
        return found.removal_end
    return _element_end(text, m.group(1).lower(), found.elem_end, amp)
