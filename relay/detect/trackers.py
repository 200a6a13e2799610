"""Trackers stage: a parsed message -> tracker candidates, links and placeholders.

Stage: detection (pure, no I/O). Input: a ``ParsedMessage`` (decoded ``Part.text``), the
``DetectionRules`` built once by ``load_detection`` and the envelope recipients. Output: a
``Detection``: ``Candidate``s with exact character spans for the rewrite stage, every link with
its click-tracking rule (reported, never touched) and the ``{{relay:...}}`` placeholders.
This module never edits text, never fetches anything and never decides an action for a
recipient: it only says what each tracker is and what to do by default without consent.

Rule 1: text/html and text/x-amp-html parts are searched for trackers (``htmlscan`` says
        where); text/plain parts only for placeholders.
Rule 2: a URL is a tracker if a vendor signature matches it; otherwise, if it is fetchable
        (http, https, scheme-relative), not on a content CDN and not repeated many times, if a
        heuristic fires. ``cid:`` and ``data:`` images are never trackers.
Rule 3: an image labelled by the app with ``data-relay-purpose`` is always a candidate with that
        purpose (rule ``app-label`` when nothing else recognised it); the attribute's span is
        given so that it is removed on the way out.
Rule 4: default action without consent: the rule's ``no_consent``, else ``neutralise`` for an
        invisible image, ``strip_params`` when identifying parameters are known, else
        ``remove`` (SPEC section 2, item 6).
Rule 5: candidate ids are 0..n-1 over the whole message, in part order then text order.
Rule 6: with a CPU ``Budget``, a part whose scan runs out of it, and every later HTML part, is
        "unfinished": each value in it that a client could fetch becomes a candidate of rule
        ``cpu-budget`` (``failclosed``), neutralised for everyone by the filter. The detection
        names those parts; nothing found before the budget ran out is lost.
Rule 7: each candidate says how it was found: ``signature``, ``heuristic``, ``label`` (the app's
        ``data-relay-purpose``) or ``fail-closed`` (Rule 6).
Speed: a newsletter has a hundred images and a hundred links, so the per-URL work is kept to
one regex call where possible (``_PLAIN_ATTRIBUTE``, plain hrefs split by the scanner), rule
lookups run over all URLs in one loop (``SignatureSet.match_all``), host facts are computed
once per host, and an image URL seen in an earlier message gets its split from
``_PLAIN_SPLITS`` and its rule from the signature table's own answers (signatures Rule 6): a
campaign's copies repeat every image URL but the open pixel's. Both tables are bounded like the
image sizes. None of this changes a result (tests/detect/test_trackers_speed_equivalence.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from urllib.parse import urljoin

from relay.detect.budget import Budget, BudgetExceeded
from relay.detect.candidates import (
    APP_LABEL_RULE,
    BUDGET_RULE,
    attribute_url,
    fail_closed,
)
from relay.detect.candidates import candidate as make_candidate
from relay.detect.cssescape import unescape as css_unescape
from relay.detect.heuristics import HeuristicRules
from relay.detect.hostlists import HostList
from relay.detect.hrefs import hrefs
from relay.detect.htmlattrs import Found
from relay.detect.htmlscan import scan_document
from relay.detect.proxies import PROXY_SUFFIXES, carrier, unwrapped
from relay.detect.removal import AmpIndex
from relay.detect.signatures import (
    ANSWER_KEY_LIMIT,
    CACHE_LIMIT,
    SignatureSet,
    check_examples,
    load_signature,
    split_url,
)
from relay.detect.verdicts import (
    BY_FAIL_CLOSED,
    BY_HEURISTIC,
    BY_LABEL,
    BY_SIGNATURE,
    Classifier,
    DetectionRules,
    Ref,
    Verdict,
)
from relay.model import (
    Candidate,
    ElementKind,
    Link,
    ParsedMessage,
    Placeholder,
    Span,
)
from relay.rulefiles import RuleSet

__all__ = [
    "APP_LABEL_RULE",
    "BUDGET_RULE",
    "BY_FAIL_CLOSED",
    "BY_HEURISTIC",
    "BY_LABEL",
    "BY_SIGNATURE",
    "Detection",
    "DetectionRules",
    "attribute_url",
    "detect",
    "load_detection",
]

HTML_TYPES = frozenset({"text/html", "text/x-amp-html"})
PLACEHOLDER_TYPES = HTML_TYPES | {"text/plain"}
CONTENT_CDN_LIST = "content_cdns"

_PLACEHOLDER = re.compile(r"\{\{\s*relay:(withdraw_url|preferences_url|consent_url)\s*\}\}")
_BRACE_LIMIT = 16
# A URL with a scheme of its own (cid:, data:, mailto: ...): no base applies to it.
_INLINE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?!//)")
# An attribute value that attribute_url leaves as it is (no "&", no whitespace at all) and that
# signatures.PLAIN_URL splits (lower-case dotted host, "/" path, no backslash): for it, one
# match gives the URL, host and path that attribute_url and split_url would.
_PLAIN_ATTRIBUTE = re.compile(
    r"(?:[hH][tT][tT][pP][sS]?:)?//([a-z0-9_-]++(?:\.[a-z0-9_-]++)*+)(/[^#\\&\s]*+)(?:#[^&\s]*+)?\Z"
)
# What _PLAIN_ATTRIBUTE split of the URLs seen so far (Speed): URL as written -> (host, path),
# or None when it is not plain; at most PLAIN_SPLITS_LIMIT, of URLs up to ANSWER_KEY_LIMIT.
_PLAIN_SPLITS: dict[str, tuple[str, str] | None] = {}
PLAIN_SPLITS_LIMIT = CACHE_LIMIT  # the bound of the signature table's own answers
_NOT_SPLIT = ("", "")  # a sentinel: no split kept (compared by identity; no split is empty)


def _plain_split(raw: str) -> tuple[str, str] | None:
    """``_PLAIN_ATTRIBUTE``'s host and path of ``raw``, or None; kept in ``_PLAIN_SPLITS``."""
    found = _PLAIN_ATTRIBUTE.match(raw)
    split = None if found is None else (found.group(1), found.group(2))
    if len(raw) <= ANSWER_KEY_LIMIT:
        if len(_PLAIN_SPLITS) >= PLAIN_SPLITS_LIMIT:
            _PLAIN_SPLITS.clear()
        _PLAIN_SPLITS[raw] = split
    return split


@dataclass(frozen=True)
class Detection:
    candidates: tuple[Candidate, ...]
    links: tuple[Link, ...]
    placeholders: tuple[Placeholder, ...]
    unfinished: tuple[int, ...] = ()  # parts not fully read within the budget (Rule 6)


def load_detection(rules: RuleSet) -> DetectionRules:
    """Validate and compile ``[[tracker]]``, ``[[click_tracker]]``, ``[[heuristic]]``,
    ``[detection]`` and ``lists/content_cdns.txt``; raise ``RulesError`` naming file:line:key."""
    tracker_entries = rules.of("tracker")
    trackers = SignatureSet.build(load_signature(e, with_purpose=True) for e in tracker_entries)
    check_examples(tracker_entries, trackers)
    click_entries = rules.of("click_tracker")
    clicks = SignatureSet.build(load_signature(e, with_purpose=False) for e in click_entries)
    check_examples(click_entries, clicks)
    content = HostList.build(CONTENT_CDN_LIST, rules.lists.get(CONTENT_CDN_LIST, ()))
    return DetectionRules(trackers, clicks, content, HeuristicRules.load(rules), rules.digest)


def _first_braces(text: str) -> int:
    """Where the first "{{" may be, or -1. A single "{" is searched with memchr, many times
    faster than the regex's "{{" prefix; past a few single braces (CSS) the regex goes on."""
    brace = text.find("{")
    for _ in range(_BRACE_LIMIT):
        if brace < 0 or text.startswith("{", brace + 1):
            return brace
        brace = text.find("{", brace + 1)
    return brace


def _placeholders(part_index: int, text: str) -> list[Placeholder]:
    start = _first_braces(text)
    if start < 0:
        return []
    return [
        Placeholder(part_index, m.group(1), Span(m.start(), m.end()))
        for m in _PLACEHOLDER.finditer(text, start)
    ]


def _links(part_index: int, text: str, clicks: SignatureSet, base: str | None = None) -> list[Link]:
    """Every http(s) link of one part with its click-tracking rule (reported, never touched);
    relative ones resolved against the part's ``<base href>`` as a client follows them (a
    consent request must not hide a vendor's click link behind a base, ``consent_link``)."""
    urls: list[str] = []
    pairs: list[tuple[str, str]] = []
    for href, host, path in hrefs(text):
        if host:  # a plain URL, already split by the scanner: the href is the URL
            urls.append(href)
            pairs.append((host, path))
            continue
        url = attribute_url(href)
        split = split_url(url)
        if split is None and base is not None and _relative(url):
            url = urljoin(base, url)
            split = split_url(url)
        if split is not None:
            urls.append(url)
            pairs.append(split)
    ids = [rule.id if rule is not None else None for rule in clicks.match_all(pairs)]
    return list(map(Link, repeat(part_index), urls, ids))


def _relative(url: str) -> bool:
    """A reference a base URL applies to: not empty, no scheme of its own (cid:, data:,
    mailto: ...), not a relay placeholder (``{{relay:...}}`` becomes a URL of its own)."""
    return bool(url) and not _INLINE.match(url) and not url.startswith("{{")


def document_base(href: str) -> str | None:
    """The base URL relative references resolve against, from a ``<base href>`` value as
    written: an absolute http(s) URL (a scheme-relative one taken as https), else None (the
    base then changes nothing a client fetches from outside)."""
    url = attribute_url(href)
    if url.startswith("//"):
        url = "https:" + url
    scheme = url.partition(":")[0].lower()
    return url if scheme in ("http", "https") and split_url(url) is not None else None


def _url_of(item: Found) -> str:
    """The URL a client reads from a reference as written: entities decoded in attributes
    (not in <style> blocks, raw text in HTML), then CSS escapes in CSS."""
    kind, raw = item[0], item[1]
    if kind is ElementKind.STYLE_BLOCK:
        return css_unescape(raw).strip()
    url = attribute_url(raw)
    return css_unescape(url).strip() if kind is ElementKind.STYLE_ATTR else url


def _refs(part_index: int, text: str, budget: Budget | None = None) -> tuple[list[Ref], str | None]:
    """The image references of one part that a client would fetch (or that the app labelled),
    and the part's base URL. Relative ones are resolved against the part's ``<base href>``
    when it has one."""
    refs: list[Ref] = []
    append = refs.append
    new = tuple.__new__  # builds the NamedTuple without its Python-level __new__
    kept, not_split = _PLAIN_SPLITS, _NOT_SPLIT  # URLs seen before (Speed)
    style_block = ElementKind.STYLE_BLOCK
    found, base_span = scan_document(text, budget)
    base = document_base(text[base_span[0] : base_span[1]]) if base_span else None
    for item in found:
        raw = item[1]  # .raw; indexing a NamedTuple is cheaper than its property
        if item[0] is not style_block:
            plain = kept.get(raw, not_split)
            if plain is not_split:
                plain = _plain_split(raw)
            if plain is not None:  # the usual src: the URL as written, split in one call
                append(new(Ref, (part_index, item, raw, plain[0], plain[1])))
                continue
        url = _url_of(item)
        split = split_url(url)
        if split is None and base is not None and _relative(url):
            url = urljoin(base, url)
            split = split_url(url)
        if split is not None:
            append(new(Ref, (part_index, item, url, split[0], split[1])))
        elif item.label is not None:  # cid:, data:, relative: nothing is fetched, but the
            append(new(Ref, (part_index, item, url, "", "")))  # label must still come out
    return refs, base


def _verdicts(
    rules: DetectionRules, refs: list[Ref], recipients: Sequence[str], texts: dict[int, str]
) -> list[Verdict | None]:
    """One verdict per fetched reference (those with a host), in order. Behind a webmail's
    image proxy the proxied URL is what a client fetches (``proxies``), and what carries it
    stands for the original's identifying parameters (proxies Rule 2)."""
    fetched: list[Ref] = []
    carriers: dict[int, tuple[str, ...]] = {}  # index in fetched -> what carries the original
    for ref in refs:
        if not ref[3]:  # ref.host: nothing fetched
            continue
        inner = unwrapped(ref) if ref[3].endswith(PROXY_SUFFIXES) else ref  # one string test
        if inner is not ref:
            carriers[len(fetched)] = carrier(ref)
        fetched.append(inner)
    found = Classifier(rules, fetched, recipients, texts).verdicts(fetched)
    for index, params in carriers.items():
        proxied = found[index]
        if proxied is not None and proxied.params:  # the proxy URL holds none of them
            found[index] = proxied._replace(params=params)
    return found


def detect(
    message: ParsedMessage,
    rules: DetectionRules,
    recipients: Sequence[str],
    *,
    with_links: bool = True,
    budget: Budget | None = None,
) -> Detection:
    """Every tracker candidate, link and placeholder of one message (Rules 1-7).

    Links are only reported (``relay check``), never acted on; the relay's hot path passes
    ``with_links=False`` and saves about a quarter of the detection time."""
    refs: list[Ref] = []
    links: list[Link] = []
    placeholders: list[Placeholder] = []
    texts: dict[int, str] = {}
    unfinished: list[int] = []
    for part in message.parts:
        text = part.text
        if text is None or part.content_type not in PLACEHOLDER_TYPES:
            continue
        placeholders.extend(_placeholders(part.index, text))
        if part.content_type not in HTML_TYPES:
            continue
        texts[part.index] = text
        if unfinished:  # the budget is spent: the later parts are not read either
            unfinished.append(part.index)
            continue
        try:
            if budget is not None:
                budget.check()
            found, base = _refs(part.index, text, budget)
        except BudgetExceeded:
            unfinished.append(part.index)
            continue
        refs.extend(found)
        if with_links:
            links.extend(_links(part.index, text, rules.click_trackers, base))
    # Decisions for all fetched references in one loop, consumed below in the same order.
    verdicts = iter(_verdicts(rules, refs, recipients, texts))
    candidates: list[Candidate] = []
    amp: dict[int, AmpIndex] = {}
    for ref in refs:
        verdict = next(verdicts) if ref[3] else None  # ref.host: fetched
        # Most images are neither trackers nor labelled: skip _candidate's call for them.
        if verdict is None and ref[1][9] is None:  # ref.found.label
            continue
        text = texts[ref.part_index]
        index = amp.get(ref.part_index)
        if index is None and ref.found.kind is ElementKind.AMP_IMG:
            index = amp[ref.part_index] = AmpIndex(text)
        candidate = make_candidate(len(candidates), ref, verdict, text, index)
        if candidate is not None:
            candidates.append(candidate)
    for part_index in unfinished:
        candidates += fail_closed(len(candidates), part_index, texts[part_index])
    return Detection(tuple(candidates), tuple(links), tuple(placeholders), tuple(unfinished))
