"""Links of an HTML part: the ``href`` of every ``<a>``, for reporting click tracking.

Stage: detection (pure). Input: the decoded HTML text. Output: (href, host, path) triples.
Links are only reported (``relay check --json`` under ``links``), never changed, so no offsets
are kept.
"""

from __future__ import annotations

import re

from relay.detect.htmlscan import ATTRS_LAZY

# A double-quoted href that is a plain URL (what signatures.PLAIN_URL accepts, with nothing that
# attribute decoding would change: no "&", no whitespace) also yields its host and path, so that
# the usual link costs no further regex call. The look-ahead is optional ("|" an empty branch):
# when it fails, the same value is still read, as before. It is case-sensitive (``(?-i:``) so
# that IGNORECASE cannot let a non-ASCII letter through where PLAIN_URL would not.
_PLAIN_HREF = (
    r"""(?-i:(?:[hH][tT][tT][pP][sS]?:)?//([a-zA-Z0-9_-]++(?:\.[a-zA-Z0-9_-]++)*+)"""
    r"""(/[^#\\"&\s]*+)(?:\#[^"&\s]*+)?")"""
)
_HREF = re.compile(
    r"<a\s"
    + ATTRS_LAZY
    + r"""(?<![\w-])href\s*=\s*(?:"(?:(?="""
    + _PLAIN_HREF
    + r""")|)([^"]*)"|'([^']*)'|([^\s"'>]+))""",
    re.IGNORECASE,
)


def hrefs(text: str) -> list[tuple[str, str, str]]:
    """The ``href`` of every ``<a>``, as written, with its host (lower-cased) and path when it
    is a plain URL (see _PLAIN_HREF), else two empty strings. One C-level pass: links are only
    reported, so no offsets are kept; a link inside a comment is reported too (harmless)."""
    return [
        (dq, host.lower(), path) if host else (dq or sq or uq, "", "")
        for host, path, dq, sq, uq in _HREF.findall(text)
    ]
