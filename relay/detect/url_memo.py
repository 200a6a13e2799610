"""What the trackers stage works out from an image URL alone, kept from one message to the next.

Stage: detection (pure). Input: an image reference's URL as written, or its (host, path) pairs
and the signature table. Output: the host and path the one-call split gives
(``trackers._PLAIN_ATTRIBUTE``), and the rule of the table that matches each pair
(``SignatureSet.match_all``): the very answers of those calls
(tests/detect/test_trackers_speed_equivalence.py).

Rule 1: both answers depend on their inputs alone (a table never changes once built), and a
        sender's messages repeat their template's image URLs: logos, product pictures and
        spacers are the same in every copy of a campaign, only the open pixel differs. So the
        answers are kept: a URL seen before costs one dictionary lookup instead of a regex call
        and the signature dispatch (about 0.5 us each; the 67 KB reference newsletter has 122
        images).
Rule 2: the tables stay bounded, as the image sizes do (imagesizes Rule 2): an answer for more
        than ``KEY_LIMIT`` characters of URL is not kept, and a table starts again when it
        holds ``MEMO_LIMIT`` answers; URLs seen once each (every open pixel has its own) cost a
        lookup and an insert, never more memory.
Rule 3: the signature answers belong to one table: a call with another one (rules reloaded, or
        a message still in flight with the rules it began with) drops the answers kept first.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from typing import cast

from relay.detect.signatures import Signature, SignatureSet

MEMO_LIMIT = 4096
KEY_LIMIT = 300

Split = tuple[str, str]
# Sentinels: no answer kept (None is an answer). Compared by identity: no split is this tuple.
MISSING_SPLIT: Split = ("", "")
_MISSING = object()

PLAIN_SPLITS: dict[str, Split | None] = {}
_HOST_PATH = operator.itemgetter(3, 4)  # (Ref.host, Ref.path)


def plain_split(raw: str, plain: re.Pattern[str]) -> Split | None:
    """``plain.match(raw).group(1, 2)`` or None, kept (Rules 1 and 2). The hot loop looks in
    ``PLAIN_SPLITS`` itself and calls this for what it does not find."""
    found = plain.match(raw)
    split = None if found is None else cast(Split, found.group(1, 2))
    if len(raw) <= KEY_LIMIT:
        if len(PLAIN_SPLITS) >= MEMO_LIMIT:
            PLAIN_SPLITS.clear()
        PLAIN_SPLITS[raw] = split
    return split


# Rule 3: the table the kept signature answers belong to, and the answers.
_answers: tuple[SignatureSet | None, dict[Split, Signature | None]] = (None, {})


def signatures(table: SignatureSet, refs: Sequence[tuple[object, ...]]) -> list[Signature | None]:
    """``table.match_all`` of each reference's (host, path), from the kept answers where there
    are some; the others in one ``match_all`` call, then kept."""
    global _answers
    owner, kept = _answers
    if owner is not table:
        kept = {}
        _answers = (table, kept)
    get = kept.get
    pairs = list(map(_HOST_PATH, refs))
    found: list[object] = [get(pair, _MISSING) for pair in pairs]
    missing = [index for index, answer in enumerate(found) if answer is _MISSING]
    if missing:
        answers = table.match_all([pairs[index] for index in missing])
        for index, answer in zip(missing, answers, strict=True):
            found[index] = answer
            pair = pairs[index]
            if len(pair[0]) + len(pair[1]) <= KEY_LIMIT:
                if len(kept) >= MEMO_LIMIT:
                    kept.clear()
                kept[pair] = answer
    return cast(list[Signature | None], found)  # every _MISSING was replaced above
