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
Speed: a newsletter has a hundred images and a hundred links, so the per-URL work is kept to
one regex call where possible (``_PLAIN_ATTRIBUTE``, plain hrefs split by the scanner), rule
lookups run over all URLs in one loop (``SignatureSet.match_all``) and host facts are computed
once per host. None of this changes a result (tests/test_trackers_speed_equivalence.py).
"""

from __future__ import annotations

import html
import operator
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

from relay.detect.cssurls import BoxSize
from relay.detect.heuristics import (
    HeuristicRules,
    ImageFacts,
    evaluate,
    recipient_needles,
    visible_size,
)
from relay.detect.hrefs import hrefs
from relay.detect.htmlattrs import Found
from relay.detect.htmlscan import removal_end, scan_html
from relay.detect.signatures import (
    HostList,
    Signature,
    SignatureSet,
    check_examples,
    load_signature,
    split_url,
)
from relay.model import (
    Action,
    Candidate,
    ElementKind,
    Link,
    ParsedMessage,
    Placeholder,
    Purpose,
    Span,
)
from relay.rulefiles import RuleSet

HTML_TYPES = frozenset({"text/html", "text/x-amp-html"})
PLACEHOLDER_TYPES = HTML_TYPES | {"text/plain"}
APP_LABEL_RULE = "app-label"
CONTENT_CDN_LIST = "content_cdns"
ELEMENT_TEXT_LIMIT = 300

_PLACEHOLDER = re.compile(r"\{\{\s*relay:(withdraw_url|preferences_url|consent_url)\s*\}\}")
# Character references a browser decodes inside an attribute value: numeric ones, and named
# ones that end with ";" (a legacy name without ";" followed by "=" or a letter stays as is).
_ENTITY = re.compile(r"&(?:#[0-9]{1,7};?|#[xX][0-9a-fA-F]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};)")
_URL_SPACE = re.compile(r"[\t\n\r]")
_BRACE_LIMIT = 16
# An attribute value that attribute_url leaves as it is (no "&", no whitespace at all) and that
# signatures.PLAIN_URL splits (lower-case dotted host, "/" path, no backslash): for it, one
# match gives the URL, host and path that attribute_url and split_url would.
_PLAIN_ATTRIBUTE = re.compile(
    r"(?:[hH][tT][tT][pP][sS]?:)?//([a-z0-9_-]++(?:\.[a-z0-9_-]++)*+)(/[^#\\&\s]*+)(?:#[^&\s]*+)?\Z"
)


@dataclass(frozen=True)
class DetectionRules:
    trackers: SignatureSet
    click_trackers: SignatureSet
    content_hosts: HostList
    heuristics: HeuristicRules
    digest: str


@dataclass(frozen=True)
class Detection:
    candidates: tuple[Candidate, ...]
    links: tuple[Link, ...]
    placeholders: tuple[Placeholder, ...]


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


def attribute_url(raw: str) -> str:
    """The URL a client fetches for an attribute value: references decoded, tabs and line
    breaks dropped (as the URL parser does), surrounding spaces trimmed."""
    url = _ENTITY.sub(lambda m: html.unescape(m.group()), raw) if "&" in raw else raw
    if "\n" in url or "\r" in url or "\t" in url:
        url = _URL_SPACE.sub("", url)
    return url.strip()


def _default_action(explicit: Action | None, invisible: bool, params: tuple[str, ...]) -> Action:
    if explicit is not None:
        return explicit
    if invisible:
        return Action.NEUTRALISE
    return Action.STRIP_PARAMS if params else Action.REMOVE


def _label_purpose(label: str | None) -> Purpose | None:
    if label is None:
        return None
    try:
        return Purpose(label.strip().lower())
    except ValueError:
        # SPEC section 1: a tracker whose purpose is unknown is treated as the strictest case.
        return Purpose.CAMPAIGN_PERFORMANCE


class _Ref(NamedTuple):
    """One fetchable image reference of the message, before classification."""

    part_index: int
    found: Found
    url: str
    host: str
    path: str


class _Verdict(NamedTuple):
    rule: str
    vendor: str
    purpose: Purpose
    no_consent: Action | None
    params: tuple[str, ...]
    invisible: bool


class _HostFacts(NamedTuple):
    content: bool  # on the content CDN list
    alone: bool  # serves no other image URL in the message


_URL_OF = operator.itemgetter(2)  # _Ref.url
_HOST_PATH = operator.itemgetter(3, 4)  # (_Ref.host, _Ref.path)
_HOST_URL = operator.itemgetter(3, 2)  # (_Ref.host, _Ref.url)
_FIRST = operator.itemgetter(0)


class _Classifier:
    """Message-wide facts (hosts, repeats, recipient needles) and the per-image decision.

    What depends only on the host (whether it is a content CDN, whether it serves a single URL)
    is worked out once per distinct host, not once per image: a newsletter has a hundred images
    on two or three hosts."""

    def __init__(self, rules: DetectionRules, refs: list[_Ref], recipients: Sequence[str]):
        self.rules = rules
        # Counted with itemgetter and Counter, which run in C.
        self.url_count = Counter(map(_URL_OF, refs))
        # Distinct URLs per host: "host_alone" is a count of 1.
        host_urls = Counter(map(_FIRST, set(map(_HOST_URL, refs))))
        content = rules.content_hosts
        self.hosts = {
            host: _HostFacts(host in content, count == 1) for host, count in host_urls.items()
        }
        self.needles: tuple[str, ...] = ()
        heuristics = rules.heuristics
        self.heuristics = heuristics
        self.repeated = heuristics.repeated_image_count
        if recipients and heuristics.wants_recipients:
            every = recipient_needles(recipients, heuristics.min_address_length)
            joined = "\n".join(self.url_count)
            lowered = joined.lower()
            # Each needle is searched in every URL: the lower-cased copy only when it differs.
            if lowered == joined:
                self.needles = tuple(n for n in every if n in joined)
            else:
                self.needles = tuple(n for n in every if n in joined or n in lowered)
        # cannot_fire for an image on a shared host, by declared size (sizes repeat).
        self.silent: dict[BoxSize, bool] = {}

    def signature(self, sig: Signature, size: BoxSize) -> _Verdict:
        invisible = not visible_size(size)
        return _Verdict(
            sig.id, sig.vendor, sig.purpose, sig.no_consent, sig.identifying_params, invisible
        )

    def verdicts(self, refs: list[_Ref]) -> list[_Verdict | None]:
        """The decision for each fetched image, in order (Rule 2). One loop with the message
        facts in local names: this runs for every image of every message."""
        found_verdicts: list[_Verdict | None] = []
        append = found_verdicts.append
        sigs = self.rules.trackers.match_all(map(_HOST_PATH, refs))
        hosts, url_count, repeated = self.hosts, self.url_count, self.repeated
        heuristics, silent, shared_quiet = self.heuristics, self.silent, not self.needles
        for ref, sig in zip(refs, sigs, strict=True):
            found = ref[1]
            if sig is not None:
                append(self.signature(sig, found.size))
                continue
            content, alone = hosts[ref[3]]
            if content or url_count[ref[2]] >= repeated:
                append(None)
                continue
            size = found.size
            if shared_quiet and not alone:  # the usual content image: decided by its size
                quiet = silent.get(size)
                if quiet is None:
                    quiet = silent[size] = heuristics.cannot_fire(size, False, False)
                if quiet:
                    append(None)
                    continue
            append(self.heuristic(ref, alone))
        return found_verdicts

    def heuristic(self, ref: _Ref, alone: bool) -> _Verdict | None:
        _, found, url, _, path = ref
        size = found.size
        heuristics = self.heuristics
        if heuristics.cannot_fire(size, alone, bool(self.needles)):
            return None
        image = ImageFacts(url, path, found.kind, size, alone, self.needles)
        hit = evaluate(heuristics, image)
        if hit is None:
            return None
        return _Verdict(
            hit.rule, "", hit.purpose, hit.no_consent, hit.identifying_params, hit.invisible
        )


def _element_text(text: str, found: Found) -> str:
    shown = text[found.elem_start : found.elem_end]
    if len(shown) > ELEMENT_TEXT_LIMIT:
        return shown[: ELEMENT_TEXT_LIMIT - 3] + "..."
    return shown


def _candidate(number: int, ref: _Ref, verdict: _Verdict | None, text: str) -> Candidate | None:
    found = ref.found
    label = _label_purpose(found.label)
    if verdict is None:
        if label is None:
            return None
        verdict = _Verdict(APP_LABEL_RULE, "", label, None, (), not visible_size(found.size))
    purpose = label if label is not None else verdict.purpose
    return Candidate(
        id=number,
        part_index=ref.part_index,
        url=ref.url,
        element=found.kind,
        element_text=_element_text(text, found),
        rule=verdict.rule,
        vendor=verdict.vendor,
        purpose=purpose,
        no_consent_action=_default_action(verdict.no_consent, verdict.invisible, verdict.params),
        identifying_params=verdict.params,
        url_span=Span(found.url_start, found.url_end),
        removal_span=Span(found.removal_start, removal_end(text, found)),
        width=found.size.width,
        height=found.size.height,
        purpose_attr_span=(
            Span(found.label_start, found.label_end) if found.label_start >= 0 else None
        ),
        labelled=label is not None,
    )


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


def _links(part_index: int, text: str, clicks: SignatureSet) -> list[Link]:
    """Every http(s) link of one part with its click-tracking rule (reported, never touched)."""
    urls: list[str] = []
    pairs: list[tuple[str, str]] = []
    for href, host, path in hrefs(text):
        if host:  # a plain URL, already split by the scanner: the href is the URL
            urls.append(href)
            pairs.append((host, path))
            continue
        url = attribute_url(href)
        split = split_url(url)
        if split is not None:
            urls.append(url)
            pairs.append(split)
    ids = [rule.id if rule is not None else None for rule in clicks.match_all(pairs)]
    return list(map(Link, repeat(part_index), urls, ids))


def _refs(part_index: int, text: str) -> list[_Ref]:
    """The image references of one part that a client would fetch (or that the app labelled)."""
    refs: list[_Ref] = []
    append = refs.append
    new = tuple.__new__  # builds the NamedTuple without its Python-level __new__
    plain_attribute = _PLAIN_ATTRIBUTE.match
    style_block = ElementKind.STYLE_BLOCK
    for item in scan_html(text):
        raw = item[1]  # .raw; indexing a NamedTuple is cheaper than its property
        plain = plain_attribute(raw) if item[0] is not style_block else None
        if plain is not None:  # the usual src: the URL as written, split in the same call
            host, path = plain.group(1, 2)
            append(new(_Ref, (part_index, item, raw, host, path)))
            continue
        # Entities are decoded in attributes, not in <style> blocks (raw text in HTML).
        url = raw.strip() if item[0] is style_block else attribute_url(raw)
        split = split_url(url)
        if split is not None:
            append(new(_Ref, (part_index, item, url, split[0], split[1])))
        elif item.label is not None:  # cid:, data:, relative: nothing is fetched, but the
            append(new(_Ref, (part_index, item, url, "", "")))  # label must still come out
    return refs


def detect(
    message: ParsedMessage,
    rules: DetectionRules,
    recipients: Sequence[str],
    *,
    with_links: bool = True,
) -> Detection:
    """Every tracker candidate, link and placeholder of one message (Rules 1-5).

    Links are only reported (``relay check``), never acted on; the relay's hot path passes
    ``with_links=False`` and saves about a quarter of the detection time."""
    refs: list[_Ref] = []
    links: list[Link] = []
    placeholders: list[Placeholder] = []
    texts: dict[int, str] = {}
    for part in message.parts:
        text = part.text
        if text is None or part.content_type not in PLACEHOLDER_TYPES:
            continue
        placeholders.extend(_placeholders(part.index, text))
        if part.content_type in HTML_TYPES:
            texts[part.index] = text
            refs.extend(_refs(part.index, text))
            if with_links:
                links.extend(_links(part.index, text, rules.click_trackers))
    fetched = [r for r in refs if r.host]
    # Decisions for all fetched references in one loop, consumed below in the same order.
    verdicts = iter(_Classifier(rules, fetched, recipients).verdicts(fetched))
    candidates: list[Candidate] = []
    for ref in refs:
        verdict = next(verdicts) if ref[3] else None  # ref.host: fetched
        # Most images are neither trackers nor labelled: skip _candidate's call for them.
        if verdict is None and ref[1][9] is None:  # ref.found.label
            continue
        candidate = _candidate(len(candidates), ref, verdict, texts[ref.part_index])
        if candidate is not None:
            candidates.append(candidate)
    return Detection(tuple(candidates), tuple(links), tuple(placeholders))
