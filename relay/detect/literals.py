"""Literal prefixes of a signature's path pattern, for the host-less dispatch in ``signatures``.

Stage: detection (pure), at rule-load time only. Input: a rule's path regular expression.
Output: ``literal_prefixes``, the literal texts every match of it starts with.
Rule 1: never claim more than is sure: anything this small reader does not understand ends the
        literal part there, so a prefix can only be too short, which lets more paths through
        to the regex and never changes a result.
"""

from __future__ import annotations

# Prefix sets: the literal starts that every match of a rule's path pattern begins with. A small
# reader for the regex subset rules use (literals, escaped punctuation, "?", groups with
# alternatives); anything else ends the literal part there, which is always safe: a shorter
# prefix only lets more paths through to the regex.
_STOP = frozenset(".^$*+?{}[]|()\\")
_MAX_PREFIXES = 32
_Starts = list[tuple[str, bool]]  # (literal start, whether the pattern may continue it)


def _literal(pattern: str, n: int) -> tuple[str, int] | None:
    """The literal character at ``n`` and where the next item starts, or None."""
    char = pattern[n]
    if char == "\\":
        after = pattern[n + 1 : n + 2]
        # Only an escaped punctuation mark is a literal ("\d", "\b", "\1" are not).
        if not after or after.isalnum() or after == "_":
            return None
        return after, n + 2
    return None if char in _STOP else (char, n + 1)


def _closed(starts: _Starts) -> _Starts:
    return [(text, False) for text, _ in starts]


def _extend(starts: _Starts, tails: _Starts) -> _Starts:
    return [
        (text + tail, more) if open_ else (text, False)
        for text, open_ in starts
        for tail, more in (tails if open_ else [("", False)])
    ]


def _alternatives(pattern: str, n: int) -> tuple[_Starts, int]:
    """Starts of ``alt ("|" alt)*`` from ``n``, up to an unmatched ")" or the end."""
    found: _Starts = []
    while True:
        starts, n = _sequence(pattern, n)
        found += starts
        if n < len(pattern) and pattern[n] == "|":
            n += 1
            continue
        return found, n


def _class_end(pattern: str, n: int) -> int:
    """Index just past the "]" closing the character class opened at ``n``."""
    n += 1 + pattern.startswith("^", n + 1)
    n += pattern.startswith("]", n)  # "]" first in a class is a member
    while n < len(pattern) and pattern[n] != "]":
        n += 2 if pattern[n] == "\\" else 1
    return n + 1


def _group_end(pattern: str, n: int) -> int:
    """Index just past the ")" closing the group opened at ``n`` (escapes and classes skipped)."""
    depth = 0
    while n < len(pattern):
        char = pattern[n]
        if char == "\\":
            n += 2
            continue
        if char == "[":
            n = _class_end(pattern, n)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return n + 1
        n += 1
    return len(pattern)


def _sequence(pattern: str, n: int) -> tuple[_Starts, int]:
    """Starts of a sequence of items from ``n``, stopping before "|" or ")" at this level."""
    starts: _Starts = [("", True)]
    end = len(pattern)
    while n < end and pattern[n] not in "|)":
        if not any(open_ for _, open_ in starts) or len(starts) > _MAX_PREFIXES:
            return _closed(starts), _group_end_or_bar(pattern, n)
        item: _Starts
        if pattern.startswith("(?:", n) or (pattern[n] == "(" and pattern[n + 1 : n + 2] != "?"):
            inner, close = _alternatives(pattern, n + (3 if pattern[n + 1 : n + 2] == "?" else 1))
            if close >= end or pattern[close] != ")":
                return _closed(starts), end
            item, n = inner, close + 1
        else:
            literal = _literal(pattern, n)
            if literal is None:
                return _closed(starts), _group_end_or_bar(pattern, n)
            item, n = [(literal[0], True)], literal[1]
        quantifier = pattern[n : n + 1]
        if quantifier and quantifier in "*{":  # may repeat zero times: the item is not sure
            return _closed(starts), _group_end_or_bar(pattern, n)
        if quantifier == "?":
            n += 1 + pattern.startswith("?", n + 1)  # "??" too
            starts = _extend(starts, item) + [(t, o) for t, o in starts if o]
        elif quantifier == "+":
            starts = _closed(_extend(starts, item))
            return starts, _group_end_or_bar(pattern, n)
        else:
            starts = _extend(starts, item)
    return starts, n


def _group_end_or_bar(pattern: str, n: int) -> int:
    """From inside a sequence, the index of the "|" or ")" that ends it at this level."""
    while n < len(pattern):
        char = pattern[n]
        if char in "|)":
            return n
        if char == "(":
            n = _group_end(pattern, n)
            continue
        if char == "[":
            n = _class_end(pattern, n)
            continue
        n += 2 if char == "\\" else 1
    return n


def literal_prefixes(pattern: str) -> tuple[str, ...]:
    """Literal texts such that every match of ``pattern`` (as ``re.match`` runs it, no flags)
    starts with one of them; ("",) when unsure."""
    starts, end = _alternatives(pattern, 0)
    texts = tuple(dict.fromkeys(text for text, _ in starts))
    if end < len(pattern) or not texts or len(texts) > _MAX_PREFIXES:
        return ("",)  # an unbalanced ")" or too many branches: claim nothing
    return texts
