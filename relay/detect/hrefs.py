"""Links of an HTML part: the ``href`` of every ``<a>``, for reporting click tracking.

Stage: detection (pure). Input: the decoded HTML text. Output: (href, host, path) triples.
Links are only reported (``relay check --json`` under ``links``), never changed, so no offsets
are kept.

Rule 1: an ``<a>`` start tag is read with the tokenizer grammar of ``htmlgrammar`` (first
        ``href`` wins, quotes only after "=", a tag without ">" runs to the end): one pass,
        linear on any input. A link inside a comment is reported too (harmless).
"""

from __future__ import annotations

import re

from relay.detect.htmlgrammar import ATTRIBUTE, ELEMENT_NAME_END, TAG_END, first_attr, numbered

_HREF_ATTRS = rf"(?>(?:[ \t\n\r\f/]++|h{first_attr('href', 'ref')}|{ATTRIBUTE})*)"
_HREF = re.compile(numbered(rf"<a{ELEMENT_NAME_END}{_HREF_ATTRS}{TAG_END}"), re.IGNORECASE)
# A plain URL with nothing that attribute decoding would change (no "&", no whitespace): its
# host and path are split here, as signatures.split_url would (see PLAIN_URL there).
_PLAIN = re.compile(
    r"(?:[hH][tT][tT][pP][sS]?:)?//([a-zA-Z0-9_-]++(?:\.[a-zA-Z0-9_-]++)*+)(/[^#\\&\s]*+)"
    r"(?:#[^&\s]*+)?\Z"
)


def _value(group: str) -> str:
    """The href's value from its ``first_attr`` group ("=" and spaces before it, quotes)."""
    raw = group.partition("=")[2].lstrip(" \t\n\r\f")
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        raw = raw[1:-1] if len(raw) > 1 and raw.endswith(quote) else raw[1:]
    return raw


def hrefs(text: str) -> list[tuple[str, str, str]]:
    """The ``href`` of every ``<a>``, as written, with its host (lower-cased) and path when it
    is a plain URL, else two empty strings."""
    found: list[tuple[str, str, str]] = []
    for m in _HREF.finditer(text):
        raw = m.group("href")
        if raw is None:
            continue
        value = _value(raw)
        if not value:
            continue
        plain = _PLAIN.match(value) if value.startswith(("h", "H", "/")) else None
        if plain is not None:
            found.append((value, plain.group(1).lower(), plain.group(2)))
        else:
            found.append((value, "", ""))
    return found
