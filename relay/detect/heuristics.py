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


class ImageFacts(NamedTuple):
    """What the detector knows about one image reference when heuristics run (a tuple: one is
    built per image, and tuples are several times cheaper to build than frozen dataclasses)."""

    url: str
    path: str  # path and query, as split by signatures.split_url
    kind: ElementKind
    size: BoxSize
    host_alone: bool  # the host serves no other image URL in the message
    needles: tuple[str, ...]  # recipient needles present somewhere in the message's image URLs
    identifier: bool = False  # the path or query holds an identifier (tokens.has_identifier)
    hidden: bool = False  # the element is styled display:none
    alt: str = ""  # the element's alt text, as written
    lone_dynamic: bool = False  # the only non-file URL of a host whose others are image files
    host: str = ""  # lower-case host, as split by signatures.split_url


_HIDDEN = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_ALT = re.compile(r"""[\s"']alt\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]*))""", re.IGNORECASE)
# Alt texts that say nothing to a reader: a tracker's, or a placeholder's.
_EMPTY_ALTS = frozenset({"", "pixel", "tracker", "tracking", "spacer", "image", "img", "open",
                         "beacon", "x", "-", "."})  # fmt: skip


def element_facts(tag: str) -> tuple[bool, str]:
    """(styled display:none, alt text) of an element's tag text."""
    alt = _ALT.search(tag)
    text = next((g for g in alt.groups() if g is not None), "") if alt else ""
    return _HIDDEN.search(tag) is not None, text


def _described(alt: str) -> bool:
    """An alt text a person reads (a name, a caption): the image is shown to humans."""
    words = alt.strip().lower()
    return words not in _EMPTY_ALTS and sum(c.isalpha() for c in words) >= 3


# id -> {key: (type, default)}; the test of each id is in _TESTS below.
_KNOWN: dict[str, dict[str, tuple[type, Any]]] = {
    "recipient-in-url": {"min_address_length": (int, 6)},
    "tiny-size": {"max_area": (int, 25), "max_single": (int, 0), "spacer_names": (list, [])},
    "max-size": {"max_px": (int, 1)},
    "tracking-path": {
        "words": (list, []),
        "min_digits": (int, 6),
        "max_declared_area": (int, 100),
        "content_min_side": (int, 20),
    },
    "opaque-token": {"max_declared_area": (int, 100), "content_min_side": (int, 20)},
    "lone-dynamic-image": {"max_declared_area": (int, 100), "content_min_side": (int, 20)},
    "kit-path": {
        "patterns": (list, []),
        "sources": (list, []),
        "max_declared_area": (int, 100),
        "content_min_side": (int, 20),
    },
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
_BY_PATH = frozenset({"tracking-path", "lone-dynamic-image", "kit-path"})


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
        area = _declared_area(size)
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


def _declared_area(size: BoxSize) -> int | None:
    if size.width is None or size.height is None:
        return None
    return size.width * size.height


def visible_size(size: BoxSize, max_area: int = 25) -> bool:
    """Declared large enough to be seen: both sides declared, over ``max_area`` and no side
    squeezed to a pixel or less."""
    area = _declared_area(size)
    return area is not None and area > max_area and size.width != 0 and size.height != 0


def _tiny(size: BoxSize, params: dict[str, Any]) -> bool:
    area = _declared_area(size)
    if area is not None:
        return bool(area <= params["max_area"])
    side = size.width if size.width is not None else size.height
    return side is not None and side <= params["max_single"]


def _spacer(facts: ImageFacts, names: list[str]) -> bool:
    """A static spacer: a known file name, no query, no identifier (Rule 6)."""
    if "?" in facts.path or facts.identifier:
        return False
    stem = facts.path.rsplit("/", 1)[-1].split(".", 1)[0].lower()
    return any(stem == name or (len(name) >= 5 and name in stem) for name in names)


def _shown(size: BoxSize, p: dict[str, Any]) -> bool:
    """Declared visible (Rule 5)."""
    area = _declared_area(size)
    if area is not None:
        return bool(area > p["max_declared_area"]) and size.width != 0 and size.height != 0
    side = size.width if size.width is not None else size.height
    return side is not None and side >= p["content_min_side"]


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


def _tiny_size(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    size = facts.size
    if size.width is None and size.height is None:
        return False, ()
    if not _tiny(size, p) or _spacer(facts, p["spacer_names"]):
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
    if _shown(facts.size, p) or tracking_word(facts.host, facts.path, p["words"]) is None:
        return False, ()
    return (facts.identifier or digit_count(facts.path) >= p["min_digits"]), ()


def _opaque_token(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    if not facts.host_alone or _shown(facts.size, p) or _described(facts.alt):
        return False, ()
    return facts.identifier, ()


def _lone_dynamic(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    """The one address of its host that is not an image file (a script or an extensionless
    path), with an identifier, among the host's image files: a kit's open pixel beside the
    logos it serves (``/e895fe29e06bca1.png`` and ``/dzEzT2lCMVNEQTdYYk12...``)."""
    if not facts.lone_dynamic or _shown(facts.size, p) or _described(facts.alt):
        return False, ()
    return facts.identifier, ()


def _kit_path(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    """A URL of a mail kit's open-pixel shape (``kit-path`` patterns), searched in host and
    path; not on an image declared visible (Rule 5)."""
    pattern = p["_pattern"]
    if pattern is None or _shown(facts.size, p):
        return False, ()
    return pattern.search(facts.host + facts.path) is not None, ()


def _outlook_only(p: dict[str, Any], facts: ImageFacts) -> tuple[bool, tuple[str, ...]]:
    return (facts.kind is _VML and facts.host_alone and not _described(facts.alt)), ()


Test = Callable[[dict[str, Any], ImageFacts], tuple[bool, tuple[str, ...]]]
_TESTS: dict[str, Test] = {
    "recipient-in-url": _recipient,
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
