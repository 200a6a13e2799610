"""Declared sizes of the images the HTML scan finds, from the attribute groups it captured.

Stage: detection (pure). Input: the text, its scanned form (lower-cased or as given, see
``htmlscan``) and the spans of an image element's ``width``, ``height`` and ``style`` groups
(``htmlgrammar.first_attr``: "=" and the value, empty without a value, -1 when absent).
Output: a ``BoxSize`` (``declared_size``), kept in ``SIZES`` by the scan's head of the element.

Rule 1: the width and height attributes count in pixels; a ``style`` with a width or height
        declaration (or a CSS escape, which may spell one) overrides them, and gives the
        maximum sizes (``cssurls.css_size``). Most content images have a style without any
        size: the CSS is then not read at all.
Rule 2: a size depends on nothing but those three strings, so it is kept across messages in
        ``SIZES``, keyed by the scan's head (which holds them): a sender's newsletters repeat
        their image attributes. The table stays bounded: a head over ``SIZE_KEY_LIMIT``
        characters is not kept, and the table starts again when it holds ``SIZES_LIMIT``.
"""

from __future__ import annotations

import re

from relay.detect.cssurls import NO_SIZE, BoxSize, css_size, over_attributes
from relay.detect.htmlattrs import attr_value, eq_value, pixel_value

Span = tuple[int, int]

SIZES: dict[tuple[str | None, ...], BoxSize] = {}
SIZES_LIMIT = 4096
SIZE_KEY_LIMIT = 300

_SIZE_WORD = re.compile("[wW][iI][dD][tT][hH]|[hH][eE][iI][gG][hH][tT]")


def declared_size(text: str, scanned: str, width: Span, height: Span, style: Span) -> BoxSize:
    """Rule 1, from the captured groups (see htmlattrs.Element's own size reading)."""
    width_px = pixel_value(text, width)
    height_px = pixel_value(text, height)
    style_start, style_end = style
    css = NO_SIZE
    if style_start >= 0 and (
        _SIZE_WORD.search(scanned, style_start, style_end)
        or scanned.find("\\", style_start, style_end) >= 0
    ):
        style_start, style_end = attr_value(text, eq_value(text, style))
        css = css_size(text, style_start, style_end)
    return over_attributes(width_px, height_px, css)


def new_size(
    head: tuple[str | None, ...], text: str, scanned: str, width: Span, height: Span, style: Span
) -> BoxSize:
    """The size of a head not in ``SIZES`` yet, kept there when its key is short (Rule 2)."""
    size = declared_size(text, scanned, width, height, style)
    if sum(len(part) for part in head if part is not None) <= SIZE_KEY_LIMIT:
        if len(SIZES) >= SIZES_LIMIT:
            SIZES.clear()
        SIZES[head] = size
    return size
