"""A plain HTML tokenizer, written character by character after the WHATWG HTML standard
(section 13.2.5), as the reference the regex scanner of ``relay.detect.htmlscan`` must agree with.

It is slow and obvious on purpose: one state at a time, no regex. It reports what the scanner
cares about: start tags with their attributes (first of duplicates kept, value spans in the
text) and the content of ``<style>`` elements; comments, bogus comments, end tags and raw text
elements are consumed and reported as nothing. Outlook's ``<!--[if ...]>`` opener is read as
markup that fetches nothing, its content as markup (what Outlook does, and what the relay must
scan). One rule is the relay's, not the standard's (htmlgrammar Rule 6): a "<" in a tag name
ends that tag there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WS = " \t\n\r\f"
RAW = ("title", "textarea", "script", "xmp", "iframe", "noembed", "noframes")


@dataclass
class Tag:
    name: str
    start: int
    end: int
    # name -> (value start, value end); the first attribute of a name wins
    attrs: dict[str, tuple[int, int]] = field(default_factory=dict)
    cut: bool = False  # its name ended at a "<"


@dataclass
class Style:
    css_start: int
    css_end: int


def _ascii_lower(text: str) -> str:
    """HTML compares names after lower-casing ASCII letters only (offsets unchanged)."""
    return "".join(c.lower() if c.isascii() else c for c in text)


def _find_ci(text: str, needle: str, start: int) -> int:
    return _ascii_lower(text).find(needle, start)


def _is_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _tag(text: str, pos: int, *, end_tag: bool) -> tuple[Tag, int]:
    """The tag whose "<" (and "/" for an end tag) is just before ``pos``: states tag name,
    before/after attribute name, attribute name, before/after attribute value, values."""
    n = len(text)
    start = pos - (2 if end_tag else 1)
    name_start = pos
    while pos < n and text[pos] not in WS + "/<>":
        pos += 1
    tag = Tag(_ascii_lower(text[name_start:pos]), start, n)
    if pos < n and text[pos] == "<":  # Rule 6 of htmlgrammar: the tag ends here
        tag.end = pos
        tag.cut = True
        return tag, pos
    while True:
        # before attribute name
        while pos < n and (text[pos] in WS or text[pos] == "/"):
            pos += 1
        if pos >= n:
            return tag, n
        if text[pos] == ">":
            tag.end = pos + 1
            return tag, pos + 1
        attr_start = pos
        pos += 1  # the first character may be "=" or a quote: it starts the name
        while pos < n and text[pos] not in WS + "/>=":
            pos += 1
        attr_name = _ascii_lower(text[attr_start:pos])
        value = (pos, pos)
        # after attribute name
        look = pos
        while look < n and text[look] in WS:
            look += 1
        if look < n and text[look] == "=":
            pos = look + 1
            while pos < n and text[pos] in WS:
                pos += 1
            if pos < n and text[pos] in "\"'":
                quote = text[pos]
                close = text.find(quote, pos + 1)
                close = n if close < 0 else close
                value = (pos + 1, close)
                pos = min(n, close + 1)
            else:
                value_start = pos
                while pos < n and text[pos] not in WS + ">":
                    pos += 1
                value = (value_start, pos)
        tag.attrs.setdefault(attr_name, value)


def _after_comment(text: str, pos: int) -> int:
    """Where a comment whose "<!--" ends at ``pos`` ends (Outlook's opener: at its ">")."""
    n = len(text)
    if text.startswith("[if", pos):
        gt = text.find(">", pos)
        return n if gt < 0 else gt + 1
    if text.startswith(">", pos) or text.startswith("->", pos):
        return pos + (1 if text[pos] == ">" else 2)
    ends = [e for e in (text.find("-->", pos), text.find("--!>", pos)) if e >= 0]
    if not ends:
        return n
    first = min(ends)
    return first + (3 if text.startswith("-->", first) else 4)


def _raw_end(text: str, name: str, pos: int) -> int:
    """Where the raw text of element ``name`` starting at ``pos`` ends (its "</name")."""
    n = len(text)
    close = pos
    while True:
        close = _find_ci(text, "</" + name, close)
        if close < 0:
            return n
        after = text[close + 2 + len(name) : close + 3 + len(name)]
        if after == "" or after in WS + "/>":
            return close
        close += 1


def tokens(text: str) -> list[Tag | Style]:
    """Start tags (and style contents) in document order."""
    out: list[Tag | Style] = []
    pos, n = 0, len(text)
    while pos < n:
        lt = text.find("<", pos)
        if lt < 0:
            break
        pos = lt + 1
        nxt = text[pos : pos + 1]
        if text.startswith("!--", pos):
            pos = _after_comment(text, pos + 3)
        elif nxt in ("!", "?") or (nxt == "/" and not _is_letter(text[pos + 1 : pos + 2])):
            gt = text.find(">", pos)  # a bogus comment (or "</>"): up to the first ">"
            pos = n if gt < 0 else gt + 1
        elif nxt == "/":
            _, pos = _tag(text, pos + 1, end_tag=True)
        elif _is_letter(nxt):
            tag, pos = _tag(text, pos, end_tag=False)
            out.append(tag)
            if tag.cut:
                continue
            if tag.name == "plaintext":
                break
            if tag.name in RAW or tag.name == "style":
                close = _raw_end(text, tag.name, pos)
                if tag.name == "style":
                    out.append(Style(pos, close))
                pos = _tag(text, close + 2, end_tag=True)[1] if close < n else n
        # else: a "<" that starts nothing
    return out
