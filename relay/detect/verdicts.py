"""Verdicts of the trackers stage: which image references are trackers, and by which rule.

Stage: detection (pure). Input: the ``DetectionRules``, the message's fetchable image
references (``Ref``) and its recipients. Output: one ``Verdict`` or None per reference, in order.
This module never reads HTML and never builds a candidate: ``trackers`` does both.

Rule 1: a vendor signature wins over any heuristic; a reference on a content CDN, or repeated
        at least ``repeated_image_count`` times in the message, is never a tracker by heuristic.
Rule 2: what depends only on the host (content CDN, whether it serves one URL only) is worked
        out once per distinct host; recipient needles are searched in all URLs in one pass.
Rule 3: a host whose images are all static image files (``.png``, ``.jpg`` ...) but one, a
        script or an extensionless path, marks that one (``lone-dynamic-image``): the shape of
        the kits that serve their open pixel from the host of their logos. Paths, not URLs,
        are compared: ``//host/x`` and ``https://host/x`` are one address.
"""

from __future__ import annotations

import operator
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from relay.detect.cssurls import BoxSize
from relay.detect.heuristics import HeuristicRules, evaluate
from relay.detect.hostlists import HostList
from relay.detect.htmlattrs import Found
from relay.detect.image_facts import ImageFacts, element_facts, visible_size
from relay.detect.needles import recipient_needles
from relay.detect.signatures import Signature, SignatureSet
from relay.model import Action, Purpose

# How a candidate was found (Candidate.detected_by, ``relay check --json``).
BY_SIGNATURE = "signature"
BY_HEURISTIC = "heuristic"
BY_LABEL = "label"
BY_FAIL_CLOSED = "fail-closed"


@dataclass(frozen=True)
class DetectionRules:
    trackers: SignatureSet
    click_trackers: SignatureSet
    content_hosts: HostList
    heuristics: HeuristicRules
    digest: str


class Ref(NamedTuple):
    """One fetchable image reference of the message, before classification."""

    part_index: int
    found: Found
    url: str
    host: str
    path: str


class Verdict(NamedTuple):
    rule: str
    vendor: str
    purpose: Purpose
    no_consent: Action | None
    params: tuple[str, ...]
    invisible: bool
    detected_by: str


class _HostFacts(NamedTuple):
    content: bool  # on the content CDN list
    alone: bool  # serves no other image URL in the message


# The last path segment names a static image file (Rule 3).
_IMAGE_FILE = re.compile(
    r"[^?]*\.(?:png|jpe?g|gif|webp|svg|bmp|ico|avif|tiff?)(?:\?|\Z)", re.IGNORECASE
)


def _lone_dynamic(paths: set[str]) -> str | None:
    """Rule 3: the only path of a host that is not an image file, if the host has others."""
    if len(paths) < 2:
        return None
    dynamic = [p for p in paths if _IMAGE_FILE.match(p) is None]
    return dynamic[0] if len(dynamic) == 1 else None


_URL_OF = operator.itemgetter(2)  # Ref.url
_HOST_PATH = operator.itemgetter(3, 4)  # (Ref.host, Ref.path)
_HOST_URL = operator.itemgetter(3, 2)  # (Ref.host, Ref.url)
_FIRST = operator.itemgetter(0)


class Classifier:
    """Message-wide facts (hosts, repeats, recipient needles) and the per-image decision.

    What depends only on the host (whether it is a content CDN, whether it serves a single URL)
    is worked out once per distinct host, not once per image: a newsletter has a hundred images
    on two or three hosts."""

    def __init__(
        self,
        rules: DetectionRules,
        refs: list[Ref],
        recipients: Sequence[str],
        texts: Mapping[int, str] | None = None,
    ):
        self.rules = rules
        self.texts = texts or {}
        # Counted with itemgetter and Counter, which run in C.
        self.url_count = Counter(map(_URL_OF, refs))
        # Distinct URLs per host: "host_alone" is a count of 1.
        host_urls = Counter(map(_FIRST, set(map(_HOST_URL, refs))))
        content = rules.content_hosts
        self.hosts = {
            host: _HostFacts(host in content, count == 1) for host, count in host_urls.items()
        }
        self.refs = refs
        self.lone: dict[str, str | None] = {}  # host -> its lone dynamic path (Rule 3), lazily
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

    def lone_dynamic(self, host: str) -> str | None:
        """Rule 3, worked out for a host the first time a heuristic asks (most never do)."""
        if not self.lone:
            paths: defaultdict[str, set[str]] = defaultdict(set)
            for ref in self.refs:
                paths[ref[3]].add(ref[4])
            self.lone = {h: _lone_dynamic(seen) for h, seen in paths.items()}
        return self.lone.get(host)

    def signature(self, sig: Signature, size: BoxSize) -> Verdict:
        invisible = not visible_size(size)
        return Verdict(
            sig.id,
            sig.vendor,
            sig.purpose,
            sig.no_consent,
            sig.identifying_params,
            invisible,
            BY_SIGNATURE,
        )

    def verdicts(self, refs: list[Ref]) -> list[Verdict | None]:
        """The decision for each fetched image, in order (Rule 2). One loop with the message
        facts in local names: this runs for every image of every message."""
        found_verdicts: list[Verdict | None] = []
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

    def heuristic(self, ref: Ref, alone: bool) -> Verdict | None:
        _, found, url, host, path = ref
        size = found.size
        heuristics = self.heuristics
        if heuristics.cannot_fire(size, alone, bool(self.needles)):
            return None
        text = self.texts.get(ref.part_index, "")
        tag = text[found.elem_start : found.elem_end]
        hidden, alt = element_facts(tag) if tag else (False, "")
        identifier = heuristics.identifier(host, path)
        needles = self.needles
        lone = not alone and self.lone_dynamic(host) == path
        image = ImageFacts(
            url, path, found.kind, size, alone, needles, identifier, hidden, alt, lone, host
        )
        hit = evaluate(heuristics, image)
        if hit is None:
            return None
        return Verdict(
            hit.rule,
            "",
            hit.purpose,
            hit.no_consent,
            hit.identifying_params,
            hit.invisible,
            BY_HEURISTIC,
        )
