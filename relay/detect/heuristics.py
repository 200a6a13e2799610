"""Heuristics of the trackers stage: trackers that no vendor signature knows.

Stage: detection (pure). Input: ``[[heuristic]]`` entries and the ``[detection]`` table of the
rule files; per image, its URL, declared size, element kind and what the rest of the message
shows about its host. Output: the first heuristic that fires (``HeuristicHit``) or None.

Rule 1: each heuristic is a test built into this module, switched on and tuned by a rule entry
        with the same id; an unknown id or key is a ``RulesError`` naming file, line and key.
Rule 2: ``display:none`` is never a reason on its own (responsive emails hide real logos that
        way), and neither is ``max-height:0`` alone: a size test needs both sides.
Rule 3: a 1-px side next to a large one (a 600x1 divider) is visible, not a pixel.
Rule 4: evaluation follows the file order; the first test that fires names the tracker.
Rule 5: an image declared visible is content for every test but recipient-in-url: both sides
        declared over ``max_declared_area``, or one side declared (the other left to the
        image, as MJML writes ``width="600"``) of at least ``content_min_side`` px.
Rule 6: identifiers are told from words by ``tokens`` (thresholds in ``[detection]``): a static
        file name (``spacer.gif``, a hidden mobile logo) is layout or content only while its URL
        holds no identifier.
Rule 7: ``kit-path`` shapes are RE2 regular expressions (linear time whatever the input),
        compiled into one and searched in the lower-case host followed by the path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from relay.detect.cssurls import BoxSize
from relay.detect.image_facts import (
    ImageFacts,
    declared_area,
    described,
    shown,
    spacer,
    tiny,
    visible_size,
)
from relay.detect.signatures import compile_entry, compile_re2, enum_value
from relay.detect.tokens import (
    TokenRules,
    digit_count,
    has_identifier,
    host_identifier,
    tracking_word,
)
from relay.errors import RulesError
from relay.model import Action, ElementKind, Purpose
from relay.rulefiles import RuleEntry, RuleSet

_VML = ElementKind.VML


@dataclass(frozen=True, slots=True)
class Heuristic:
    id: str
    purpose: Purpose
    no_consent: Action | None
    params: dict[str, Any]


class HeuristicHit(NamedTuple):
    rule: str
    purpose: Purpose
    no_consent: Action | None
    identifying_params: tuple[str, ...]
    invisible: bool


# id -> {key: (type, default)}; the test of each id is in _TESTS below.
# The thresholds of "declared visible" (Rule 5), shared by the tests that read a URL.
_VISIBLE: dict[str, tuple[type, Any]] = {
    "max_declared_area": (int, 100),
    "content_min_side": (int, 20),
}
_KNOWN: dict[str, dict[str, tuple[type, Any]]] = {
    "recipient-in-url": {"min_address_length": (int, 6)},
    "address-in-url": _VISIBLE,
    "tiny-size": {"max_area": (int, 25), "max_single": (int, 0), "spacer_names": (list, [])},
    "max-size": {"max_px": (int, 1)},
    "tracking-path": {"words": (list, []), "min_digits": (int, 6), **_VISIBLE},
    "opaque-token": _VISIBLE,
    "lone-dynamic-image": _VISIBLE,
    "kit-path": {"patterns": (list, []), "sources": (list, []), **_VISIBLE},
    "outlook-only-image": {},
}
# [detection] keys: (type, default); the token thresholds go to tokens.TokenRules.
_DETECTION_KEYS: dict[str, tuple[type, Any]] = {
    "repeated_image_count": (int, 3),
    "identifier_min_length": (int, 16),
    "identifier_min_entropy": (float, 3.0),
    "word_max_length": (int, 20),
    "word_max_consonant_run": (int, 4),
    "word_min_vowel_share": (float, 0.2),
}
_COMMON = ("purpose", "no_consent")
# List keys kept as written (regular expressions, citations); other lists are lower-cased.
_VERBATIM = frozenset({"patterns", "sources"})


def _kit_patterns(entry: RuleEntry, patterns: list[str]) -> Any:
    """The ``kit-path`` shapes as one RE2 regex searched in host + path (linear time, Rule 7)."""
    for source in patterns:
        compile_entry(entry, "patterns", source)
    return compile_re2("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def _load_one(entry: RuleEntry) -> Heuristic:
    known = _KNOWN.get(entry.id)
    if known is None:
        raise entry.error(None, f"unknown heuristic id (known: {', '.join(_KNOWN)})")
    entry.check([*known, *_COMMON])
    params: dict[str, Any] = {}
    for key, (kind, default) in known.items():
        value = entry.data.get(key, default)
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise entry.error(key, "must be a whole number >= 0")
        if kind is list and not (
            isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        ):
            raise entry.error(key, "must be a list of non-empty strings")
        lower = kind is list and key not in _VERBATIM
        params[key] = [v.lower() for v in value] if lower else value
    if entry.id == "kit-path":
        params["_pattern"] = _kit_patterns(entry, params["patterns"])
    return Heuristic(
        id=entry.id,
        purpose=enum_value(entry, "purpose", Purpose) or Purpose.CAMPAIGN_PERFORMANCE,
        no_consent=enum_value(entry, "no_consent", Action),
        params=params,
    )


def _detection_table(rules: RuleSet, table: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in table:
        if key not in _DETECTION_KEYS:
            where = rules.where(f"detection.{key}")
            allowed = ", ".join(_DETECTION_KEYS)
            raise RulesError(f"{where}: [detection] key {key!r}: unknown key (allowed: {allowed})")
    for key, (kind, default) in _DETECTION_KEYS.items():
        value = table.get(key, default)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or value < 0 or (kind is int and not isinstance(value, int)):
            where = rules.where(f"detection.{key}")
            what = "a whole number >= 0" if kind is int else "a number >= 0"
            raise RulesError(f"{where}: [detection] key {key!r}: must be {what}")
        values[key] = value
    return values


_DEFAULT_TOKENS = TokenRules()
# Heuristics that read the URL of an image without a declared size on a shared host.
_BY_PATH = frozenset({"tracking-path", "lone-dynamic-image", "kit-path", "address-in-url"})


@dataclass(frozen=True)
class HeuristicRules:
    heuristics: tuple[Heuristic, ...]
    tests: tuple[tuple[Heuristic, Test], ...]  # each heuristic with its test, in file order
    repeated_image_count: int
    min_address_length: int
    tiny_max_area: int  # -1 when tiny-size is off
    tokens: TokenRules = _DEFAULT_TOKENS
    content_min_side: int = 0  # a single declared side this large is content (Rule 5)
    by_path: bool = False  # a heuristic of _BY_PATH is on: undeclared sizes fire on shared hosts

    def cannot_fire(self, size: BoxSize, host_alone: bool, has_needles: bool) -> bool:
        """True when no heuristic can fire: the common content image (shared host, declared
        visible size, no recipient trace) skips ``evaluate`` entirely. Each clause mirrors a
        test below: keep them in step."""
        if has_needles or host_alone:  # recipient-in-url, opaque-token, outlook-only-image
            return False
        if size.max_width is not None and size.max_height is not None:  # max-size
            return False
        if size.width is None and size.height is None:  # tiny-size needs a declared side
            return not self.by_path  # tracking-path reads the path of an undeclared image
        area = declared_area(size)
        if area is None:  # one side declared: content from content_min_side on (Rule 5)
            side = size.width if size.width is not None else size.height
            return side is not None and side >= self.content_min_side > 0
        return area > self.tiny_max_area

    @classmethod
    def load(cls, rules: RuleSet) -> HeuristicRules:
        heuristics = tuple(_load_one(entry) for entry in rules.of("heuristic"))
        table = rules.tables.get("detection", {})
        values = _detection_table(rules, table)
        if values["repeated_image_count"] < 2:
            where = rules.where("detection.repeated_image_count")
            raise RulesError(
                f"{where}: [detection] key 'repeated_image_count': must be a whole number >= 2"
            )
        min_length = next(
            (h.params["min_address_length"] for h in heuristics if h.id == "recipient-in-url"), 6
        )
        tokens = TokenRules(
            values["identifier_min_length"],
            values["identifier_min_entropy"],
            values["word_max_length"],
            values["word_max_consonant_run"],
            values["word_min_vowel_share"],
        )
        for h in heuristics:
            h.params["_tokens"] = tokens
            if "words" in h.params:
                h.params["words"] = frozenset(h.params["words"])
        tests = tuple((h, _TESTS[h.id]) for h in heuristics)
        tiny = next((h.params["max_area"] for h in heuristics if h.id == "tiny-size"), -1)
        sides = [h.params["content_min_side"] for h in heuristics if "content_min_side" in h.params]
        return cls(
            heuristics,
            tests,
            values["repeated_image_count"],
            min_length,
            tiny,
            tokens,
            min(sides) if sides else 0,
            any(h.id in _BY_PATH for h in heuristics),
        )

    @property
    def wants_recipients(self) -> bool:
        return any(h.id == "recipient-in-url" for h in self.heuristics)

    def identifier(self, host: str, path: str) -> bool:
        return has_identifier(path, self.tokens) or host_identifier(host, self.tokens)


def _recipient_param(url: str, needle: str) -> tuple[str, ...]:
    query = url.split("?", 1)[1] if "?" in url else ""
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if needle in value or needle in value.lower():
            return (name,)
    return ()


def _recipient(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    if not facts.needles:
        return False, ()
    lower = facts.url.lower()
    for needle in facts.needles:
        if needle in facts.url or needle in lower:
            return True, _recipient_param(facts.url, needle)
    return False, ()


# An email address in a URL: a dotted domain whose last label is letters, not a file name's
# extension ("logo@2x.png" is a retina image, not an address).
_ADDRESS = re.compile(
    r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.([A-Za-z]{2,24})(?![A-Za-z0-9-])"
)
_FILE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "webp", "svg", "bmp", "ico", "avif"})


def _address(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    """Someone's address in the URL, whoever's: the request names a person to the server
    (the subscriber's address as the sender knows it may not be the envelope recipient's: an
    alias, a forward, a +tag). Not on an image declared visible (Rule 5)."""
    path = facts.path
    if ("@" not in path and "%40" not in path) or shown(facts.size, p):
        return False, ()
    for m in _ADDRESS.finditer(path):
        if m.group(1).lower() not in _FILE_EXTENSIONS:
            return True, ()
    return False, ()


def _tiny_size(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    size = facts.size
    if size.width is None and size.height is None:
        return False, ()
    if not tiny(size, p) or spacer(facts, p["spacer_names"]):
        return False, ()
    # A hidden mobile logo: display:none with a size, a static URL on a host that serves the
    # message's other images (Rule 6); a hidden pixel with an id, or alone on its host, fires.
    if facts.hidden and not facts.identifier and not facts.host_alone and "?" not in facts.path:
        return False, ()
    return True, ()


def _max_size(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    mw, mh = facts.size.max_width, facts.size.max_height
    return (mw is not None and mh is not None and max(mw, mh) <= p["max_px"]), ()


def _tracking_path(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    """A path segment that is a tracking word (``/track/``, ``/open/``, ``/op/``, ``pixel``)
    with an identifier or a long number in the URL, on an image not declared visible."""
    if shown(facts.size, p) or tracking_word(facts.host, facts.path, p["words"]) is None:
        return False, ()
    return (facts.identifier or digit_count(facts.path) >= p["min_digits"]), ()


def _opaque_token(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    if not facts.host_alone or shown(facts.size, p) or described(facts.alt):
        return False, ()
    return facts.identifier, ()


def _lone_dynamic(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    """The one address of its host that is not an image file (a script or an extensionless
    path), with an identifier, among the host's image files: a kit's open pixel beside the
    logos it serves (``/e895fe29e06bca1.png`` and ``/dzEzT2lCMVNEQTdYYk12...``)."""
    if not facts.lone_dynamic or shown(facts.size, p) or described(facts.alt):
        return False, ()
    return facts.identifier, ()


def _kit_path(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    """A URL of a mail kit's open-pixel shape (``kit-path`` patterns), searched in host and
    path; not on an image declared visible (Rule 5)."""
    pattern = p["_pattern"]
    if pattern is None or shown(facts.size, p):
        return False, ()
    return pattern.search(facts.host + facts.path) is not None, ()


def _outlook_only(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    return (facts.kind is _VML and facts.host_alone and not described(facts.alt)), ()


Test = Callable[[dict[str, Any], ImageFacts], tuple[bool, tuple[str, ...]]]
_TESTS: dict[str, Test] = {
    "recipient-in-url": _recipient,
    "address-in-url": _address,
    "tiny-size": _tiny_size,
    "max-size": _max_size,
    "tracking-path": _tracking_path,
    "opaque-token": _opaque_token,
    "lone-dynamic-image": _lone_dynamic,
    "kit-path": _kit_path,
    "outlook-only-image": _outlook_only,
}


def evaluate(rules: HeuristicRules, facts: ImageFacts) -> HeuristicHit | None:
    for h, test in rules.tests:
        fired, params = test(h.params, facts)
        if fired:
            invisible = h.id != "recipient-in-url" or not visible_size(facts.size)
            return HeuristicHit(h.id, h.purpose, h.no_consent, params, invisible)
    return None
