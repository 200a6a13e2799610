"""Fail-closed reading of a part the detector did not finish: every URL a client could fetch.

Stage: detection (pure). Input: the decoded text of an HTML part whose scan ran out of budget.
Output: the spans of every value that can make a client fetch something, found without reading
the HTML structure: the value of any ``src``, ``srcset``, ``background``, ``poster``, ``data``
or ``href`` of a ``<link>``-like attribute, every CSS ``url(...)`` and ``@import "..."``.

Rule 1: over-reading is the point: a span here is neutralised for every recipient whatever the
        consent (the filter's fail-closed path), so a word that only looks like an attribute
        costs at most a changed character sequence, never a request that should not leave.
Rule 2: one regex pass, each match consuming what it read (values run to their quote, their
        whitespace or the end of the text): linear on any input, and never subject to the
        budget that stopped the scan (it is what makes stopping safe).
"""

from __future__ import annotations

import re

# Attribute names that fetch: src (img, input, source, video, audio, embed, iframe, script),
# srcset, background (body, table, td), poster (video), data (object), lowsrc/dynsrc (old).
_ATTRIBUTE = (
    r"(?<![\w-])(?:src|srcset|background|poster|data|lowsrc|dynsrc)[ \t\n\r\f]*+=[ \t\n\r\f]*+"
    r"""(?:"(?P<dq>[^"]*+)(?:"|\Z)|'(?P<sq>[^']*+)(?:'|\Z)|(?P<uq>[^ \t\n\r\f>"']++))"""
)
_CSS = (
    r"url\([ \t\n\r\f]*+(?:\"(?P<cdq>[^\"]*+)(?:\"|\Z)|'(?P<csq>[^']*+)(?:'|\Z)"
    r"|(?P<cuq>[^)\s\"']++))"
    r"|@import[ \t\n\r\f]++(?:\"(?P<idq>[^\"]*+)(?:\"|\Z)|'(?P<isq>[^']*+)(?:'|\Z))"
)
_FETCHES = re.compile(f"{_ATTRIBUTE}|{_CSS}", re.IGNORECASE)
_GROUPS = tuple(
    _FETCHES.groupindex[g] for g in ("dq", "sq", "uq", "cdq", "csq", "cuq", "idq", "isq")
)
_INLINE = ("cid:", "data:")


def fetchable_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every value in ``text`` that may be fetched (Rule 1), in text order;
    inline ``cid:`` and ``data:`` values and empty ones are left out."""
    spans: list[tuple[int, int]] = []
    for m in _FETCHES.finditer(text):
        group = next(g for g in _GROUPS if m.start(g) >= 0)
        start, end = m.span(group)
        while start < end and text[start] in " \t\n\r\f":
            start += 1
        while end > start and text[end - 1] in " \t\n\r\f":
            end -= 1
        if start < end and not text[start : start + 5].lower().startswith(_INLINE):
            spans.append((start, end))
    return spans
