"""Identifiers in URLs: telling a per-message token from words, for the heuristics.

Stage: detection (pure). Input: a URL path (query included) and the thresholds of
``[detection]`` in ``rules/heuristics.toml``. Output: whether the path holds an identifier, and
which tracking words it uses.

Rule 1: a run of letters, digits, "-" and "_" is split at "-", "_" and "."; if every piece
        reads as a word (letters only, a vowel share and consonant runs that words have) or as
        a small number (a year, a date part, a size such as 600x300 or 1280px), the run is
        readable: a file name such as ``sidebar-gradient`` or ``photo-2023-03-22`` is not an
        identifier.
Rule 2: a run that is not readable and at least ``identifier_min_length`` long is an
        identifier when its characters are varied enough (Shannon entropy at least
        ``identifier_min_entropy`` bits per character): hex ids, base64 tokens, UUIDs, and
        all-letter random ids (``EcdnCanyEvKlusJGah...``) all are, ``aaaaaaaaaaaaaaaa`` is not.
Rule 3: a path segment, or a file name without its extension, that is one of the tracking
        words (``track``, ``open``, ``pixel`` ...) or starts with one followed by "-", "_" or
        a digit is a tracking word; so is a query value that is one (``action=track``), and
        the first label of the host (``tracking.example.net``). The words are a rule-file list.
Rule 4: an email address in the path or query (plain or percent-encoded) is an identifier.
Rule 5: so is a slot for one: a merge tag the sending template left unfilled (``[open]``,
        ``{{subscriber_id}}``, ``%%emailaddr%%``, ``*|UNIQID|*``, ``${uid}``, also
        percent-encoded) or a query parameter named for the address (``email=``, even empty).
        The template meant a per-recipient value there; a kit that failed to fill it this time
        fills it the next (``sklj.info/[open]``, ``/t?email=&...``, github.com/rf-peixoto/
        phishing_pot).
Rule 6: a host label is an identifier when it is longer than a DNS label can be (a token
        glued to the host by a broken template, ``theowensfamily.infoVEhjdkxo...``), or when
        it is one by Rule 2 and its letters and digits alternate at least four times (a
        per-recipient subdomain, ``T0V8kweX1aIxviB-p.adktrack34.xyz``; not a storage
        account's name such as ``acmeassets2024prod``): ``host_identifier``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

_RUN = re.compile(r"[A-Za-z0-9_-]+")
_PIECES = re.compile(r"[-_.]+")
_VOWELS = frozenset("aeiouyAEIOUY")
_CONSONANT_RUN = re.compile(r"[^aeiouyAEIOUY0-9]+")
_SMALL_NUMBER = re.compile(r"[0-9]{1,4}(?:x[0-9]{1,4})?(?:px)?\Z")
_SEGMENT = re.compile(r"[^/?&=;#]+")
_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# Rule 5: merge-tag syntaxes of mailing tools (brackets, braces, %%..%%, Mailchimp's *|..|*,
# ${..}), as written or percent-encoded, and query parameters named for the address.
_MERGE_TAG = re.compile(
    r"(?:\[|%5[bB])[A-Za-z_][A-Za-z0-9_.:-]{0,40}(?:\]|%5[dD])"
    r"|(?:\{|%7[bB]){1,2} ?[A-Za-z_$][A-Za-z0-9_.: -]{0,40}(?:\}|%7[dD])"
    r"|%%[A-Za-z_][A-Za-z0-9_]{0,40}%%"
    r"|(?:\*|%2[aA])(?:\||%7[cC])[A-Za-z_][A-Za-z0-9_:]{0,40}(?:\||%7[cC])(?:\*|%2[aA])"
    r"|(?:\$|%24)(?:\{|%7[bB])[A-Za-z_][A-Za-z0-9_.]{0,40}(?:\}|%7[dD])"
)
_DNS_LABEL_MAX = 63  # RFC 1035, section 2.3.4
_ALTERNATION = re.compile(r"[a-z](?=[0-9])|[0-9](?=[a-z])", re.IGNORECASE)
_MIN_ALTERNATIONS = 4
_ADDRESS_PARAM = re.compile(
    r"[?&;](?:e-?mail|email_?address|mail|recipient|subscriber_?email)=", re.IGNORECASE
)


@dataclass(frozen=True)
class TokenRules:
    """Thresholds of ``[detection]`` (rules/heuristics.toml)."""

    min_length: int = 16
    min_entropy: float = 3.0
    word_max_length: int = 20
    word_max_consonant_run: int = 4
    word_min_vowel_share: float = 0.2


def _word(piece: str, rules: TokenRules) -> bool:
    """A piece that reads like a word: letters in one case (or Capitalised), vowels in it."""
    if not piece.isalpha() or len(piece) > rules.word_max_length:
        return False
    if not (piece.islower() or piece.isupper() or piece[1:].islower()):
        return False  # "EcdnCany...": case changes inside a word are an id's, not a word's
    if len(piece) <= 3:
        return True
    vowels = sum(c in _VOWELS for c in piece)
    if vowels / len(piece) < rules.word_min_vowel_share:
        return False
    longest = max((len(m) for m in _CONSONANT_RUN.findall(piece)), default=0)
    return longest <= rules.word_max_consonant_run


def readable(run: str, rules: TokenRules) -> bool:
    """Rule 1: every piece of ``run`` is a word or a small number."""
    pieces = [p for p in _PIECES.split(run) if p]
    return bool(pieces) and all(_SMALL_NUMBER.match(p) or _word(p, rules) for p in pieces)


def entropy(text: str) -> float:
    """Shannon entropy of the characters of ``text``, in bits per character."""
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def is_identifier(run: str, rules: TokenRules) -> bool:
    """Rule 2."""
    if len(run) < rules.min_length or readable(run, rules):
        return False
    return entropy(run) >= rules.min_entropy


def has_identifier(path: str, rules: TokenRules) -> bool:
    """Whether ``path`` (path and query) holds an identifier (Rules 2, 4 and 5)."""
    if ("@" in path or "%40" in path) and _ADDRESS.search(path):
        return True
    if _MERGE_TAG.search(path) is not None or _ADDRESS_PARAM.search(path) is not None:
        return True  # Rule 5
    return any(is_identifier(m.group(), rules) for m in _RUN.finditer(path))


def host_identifier(host: str, rules: TokenRules) -> bool:
    """Rule 6: a label of ``host`` is an identifier: longer than a DNS label can be (a token
    glued to the host), or an identifier by Rule 2 whose letters and digits alternate as a
    random token's do (a storage account such as ``acmeassets2024prod`` does not)."""
    if len(host) <= rules.min_length:
        return False
    for label in host.split("."):
        if len(label) > _DNS_LABEL_MAX:
            return True
        if len(_ALTERNATION.findall(label)) >= _MIN_ALTERNATIONS and is_identifier(label, rules):
            return True
    return False


def _word_of(segment: str, words: frozenset[str]) -> str | None:
    stem = segment.rsplit(".", 1)[0] if "." in segment else segment
    if stem in words:
        return stem
    head = re.match(r"[a-z]+", stem)
    if (
        head is not None
        and head.group() in words
        and len(stem) > head.end()
        and stem[head.end()] in "-_0123456789"
    ):
        return head.group()
    return None


def tracking_word(host: str, path: str, words: frozenset[str]) -> str | None:
    """Rule 3: the first tracking word of the host's first label, the path's segments or the
    query's values."""
    found = _word_of(host.split(".", 1)[0], words) if "." in host else None
    if found is not None:
        return found
    base, _, query = path.partition("?")
    for m in _SEGMENT.finditer(base):
        found = _word_of(m.group().lower(), words)
        if found is not None:
            return found
    for pair in query.split("&"):
        value = pair.partition("=")[2].lower()
        if value in words:
            return value
    return None


def digit_count(path: str) -> int:
    return sum(c.isdigit() for c in path)
