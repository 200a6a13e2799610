"""Fail-closed reading of a part the detector did not finish: every URL a client could fetch.

Stage: detection (pure). Input: the decoded text of an HTML part whose scan ran out of budget.
Output: the spans of every value that can make a client fetch something, found without reading
the HTML structure: the value of any ``src``, ``srcset``, ``background``, ``poster``, ``data``
or ``xlink:href`` attribute, the ``href`` of a ``<link>``, ``<image>`` or ``<feImage>``, every
CSS ``url(...)`` (its name escaped or not), ``@import "..."`` and ``image-set()`` string.

Rule 1: over-reading is the point: a span here is neutralised for every recipient whatever the
        consent (the filter's fail-closed path), so a word that only looks like an attribute
        costs at most a changed character sequence, never a request that should not leave.
Rule 2: one regex pass, each match consuming what it read (values run to their quote, their
        whitespace or the end of the text): linear on any input, and never subject to the
        budget that stopped the scan (it is what makes stopping safe).
"""

from __future__ import annotations

import re

from relay.detect.cssescape import name_pattern

_WS = r"[ \t\n\r\f]"


def _value(tag: str) -> str:
    """An attribute value as written, quoted or not, its groups named ``<tag>dq|sq|uq``."""
    return (
        rf"""(?:"(?P<{tag}dq>[^"]*+)(?:"|\Z)|'(?P<{tag}sq>[^']*+)(?:'|\Z)"""
        rf"""|(?P<{tag}uq>[^ \t\n\r\f>"']++))"""
    )


# Attribute names that fetch: src (img, input, source, video, audio, track, embed, iframe,
# frame, script), srcset, background (body, table, td), poster (video), data (object),
# lowsrc/dynsrc (old), and xlink:href (SVG image, feImage).
_ATTRIBUTE = (
    r"(?<![\w:-])(?:src|srcset|background|poster|data|lowsrc|dynsrc|xlink:href)"
    rf"{_WS}*+={_WS}*+{_value('a')}"
)
# href fetches in <link> (style sheets, hints) and SVG <image>/<feImage>: the tag's first href,
# looked for up to the tag's end or the next "<" (so every character is read from one tag
# start at most: linear on any input).
_TAG_HREF = (
    r"<(?:link|image|feimage)(?![\w:-])(?:[^<>h]++|h(?!ref))*+"
    rf"href{_WS}*+={_WS}*+{_value('h')}"
)
# url(), its name possibly written with CSS escapes (u\72l), and @import of a string after
# whatever else (whitespace, comments): up to 256 characters are looked through, stopping at a
# parenthesis, ";", a brace or a tag (an ``@import url()`` is read by the url() alternative),
# so that an unclosed comment after each of many @import costs a bounded read, not one to the
# end of the text each.
_CSS = (
    rf"{name_pattern('url')}\({_WS}*+(?:\"(?P<cdq>[^\"]*+)(?:\"|\Z)|'(?P<csq>[^']*+)(?:'|\Z)"
    r"|(?P<cuq>[^)\s\"']++))"
    rf"|@{name_pattern('import')}[^\"'();{{}}<>]{{0,256}}+"
    r"(?:\"(?P<idq>[^\"]*+)(?:\"|\Z)|'(?P<isq>[^']*+)(?:'|\Z))"
)
_FETCHES = re.compile(f"{_ATTRIBUTE}|{_TAG_HREF}|{_CSS}", re.IGNORECASE)
_GROUPS = tuple(
    _FETCHES.groupindex[g]
    for g in ("adq", "asq", "auq", "hdq", "hsq", "huq", "cdq", "csq", "cuq", "idq", "isq")
)
# image-set(): every string up to its ")" is a candidate URL (url() ones are found above).
_IMAGE_SET = re.compile(rf"(?:-webkit-)?{name_pattern('image-set')}\(", re.IGNORECASE)
_ENTITY_QUOTE = r"&(?:quot|apos|#0*3[49]|#[xX]0*2[27]);"  # a quote written in an attribute
_SET_ITEM = re.compile(
    r"\"(?P<dq>[^\"]*+)(?:\"|\Z)|'(?P<sq>[^']*+)(?:'|\Z)"
    rf"|{_ENTITY_QUOTE}(?P<eq>(?:[^&)]++|&(?!{_ENTITY_QUOTE[1:]}))*+)(?:{_ENTITY_QUOTE})?"
    r"|(?P<open>\()|\)",
    re.IGNORECASE,
)
_INLINE = ("cid:", "data:")


def _trimmed(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start] in " \t\n\r\f":
        start += 1
    while end > start and text[end - 1] in " \t\n\r\f":
        end -= 1
    if start < end and not text[start : start + 5].lower().startswith(_INLINE):
        spans.append((start, end))


def fetchable_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every value in ``text`` that may be fetched (Rule 1), in text order;
    inline ``cid:`` and ``data:`` values and empty ones are left out."""
    spans: list[tuple[int, int]] = []
    for m in _FETCHES.finditer(text):
        group = next(g for g in _GROUPS if m.start(g) >= 0)
        _trimmed(text, *m.span(group), spans)
    done = 0  # image-set() strings: each text position read once, nested ones included
    for m in _IMAGE_SET.finditer(text):
        pos, depth = max(m.end(), done), 1
        while depth and (item := _SET_ITEM.search(text, pos)) is not None:
            pos = item.end()
            if item.start("open") >= 0:
                depth += 1
            elif item.group() == ")":
                depth -= 1
            else:
                quoted = next(g for g in ("dq", "sq", "eq") if item.start(g) >= 0)
                _trimmed(text, *item.span(quoted), spans)
        done = pos if depth == 0 else len(text)
    return sorted(set(spans))
