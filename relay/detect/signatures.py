"""Vendor signatures of the trackers stage: ``[[tracker]]`` and ``[[click_tracker]]`` rules.

Stage: detection (pure). Input: the merged ``RuleSet``. Output: a ``SignatureSet`` that tells
which rule, if any, a URL's host and path match (the plain-text host lists are ``hostlists``).
Loading validates every entry and raises ``RulesError`` naming file, line and key; matching
never raises.

Rule 1: a rule names ``hosts`` (globs: a leading ``*.`` = any subdomains, ``*`` alone = one
        label, ``**`` = one or more labels, ``*`` inside a label = any characters), a ``path``
        (a regular expression matched from the start of the path, query included), or both.
        A rule without hosts applies to every host, which is how branded tracking domains
        (SES, SendGrid, Mailgun custom domains) are recognised.
Rule 2: host-specific rules are tried before host-less ones, each group in file order; the
        first match wins. Hosts compare in lower case; paths are case-sensitive.
Rule 3: each rule may list ``examples``: URLs it must match. They are checked at load time, so
        a rule that stops matching its own examples stops the relay from (re)loading.
Rule 4: purpose defaults to ``campaign_performance`` (SPEC section 1: the strictest common
        case); ``no_consent`` is optional (the detector picks the default from the element).
Rule 5: patterns run on RE2 (``google-re2``), whose time is linear in the input whatever the
        pattern: a rule cannot make matching slow. RE2 has no look-around and no back-reference;
        a rule using them is refused at load with the reason.
Rule 6: the cost of a match does not grow with the number of rules: every host pattern is in
        one RE2 set, matched once per distinct host (then cached); host-less rules are
        dispatched on the path's first characters by their literal prefixes
        (``literal_prefixes``), and the few that may match a path are tried as one RE2 set.
        Leaving a rule out this way changes no result (tests/detect/
        test_trackers_speed_equivalence.py compares with the plain order). The answer for a
        (host, path) is kept too: a campaign's copies repeat every image URL but the open
        pixel's, and a URL seen before then costs one lookup (bounded: ``CACHE_LIMIT``
        answers, URLs up to ``ANSWER_KEY_LIMIT`` characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import re2

from relay.detect.literals import literal_prefixes
from relay.model import Action, Purpose
from relay.rulefiles import RuleEntry

HOST_GLOB = re.compile(r"^[a-z0-9*](?:[a-z0-9*.-]*[a-z0-9*])?$")
CACHE_LIMIT = 4096
ANSWER_KEY_LIMIT = 300  # characters of host and path: a longer URL's answer is not kept (Rule 6)
# RE2's own memory for a set's automaton: plenty for thousands of rules.
_SET_MEMORY = 64 << 20
E = TypeVar("E", Purpose, Action)


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a bad rule is reported as a RulesError, not on stderr
    options.max_mem = _SET_MEMORY
    return options


_RE2 = _options()


@dataclass(frozen=True, slots=True)
class Signature:
    id: str
    vendor: str
    purpose: Purpose
    no_consent: Action | None
    identifying_params: tuple[str, ...]
    hosts: Any  # RE2 regex of the host globs (full match), or None
    path: Any  # RE2 regex of the path (matched at its start), or None
    host_source: str = ""  # the host regex source, for the set


def host_pattern(glob: str) -> str:
    """Regex source for one host glob (Rule 1)."""
    labels = glob.lower().split(".")
    out: list[str] = []
    for n, label in enumerate(labels):
        last = n == len(labels) - 1
        if label == "**":  # one or more whole labels
            out.append(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*" + ("" if last else r"\."))
        elif label == "*" and n == 0:  # any subdomains
            out.append(r"(?:[a-z0-9_-]+\.)+")
        elif label == "*":  # exactly one label
            out.append(r"[a-z0-9_-]+" + ("" if last else r"\."))
        else:  # a label, "*" inside it standing for any characters of a label
            out.append(re.escape(label).replace(r"\*", "[a-z0-9_-]*") + ("" if last else r"\."))
    return "".join(out)


def _strings(entry: RuleEntry, key: str) -> tuple[str, ...]:
    value = entry.data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise entry.error(key, "must be a list of non-empty strings")
    return tuple(value)


def _string(entry: RuleEntry, key: str, default: str = "") -> str:
    value = entry.data.get(key, default)
    if not isinstance(value, str):
        raise entry.error(key, "must be a string")
    return value


def enum_value(entry: RuleEntry, key: str, kind: type[E]) -> E | None:
    value = entry.data.get(key)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(v.value for v in kind)
        raise entry.error(key, f"{value!r} is not one of: {allowed}") from None


# Any run of slashes or backslashes opens the host, as in a browser (WHATWG URL: "http:///h/x").
_SPLIT = re.compile(r"(?:[hH][tT][tT][pP][sS]?:)?[/\\]{2,}([^/?#\\]*)([^#]*)")
# The usual URL in one step (callers in a hot loop may use it, then split_url on a miss): a
# lower-case host of dotted labels (no user info, port or trailing dot), a path that starts
# with "/" and holds no backslash up to the fragment. For it the general code below changes
# nothing; any other URL does not match here and takes the general code.
PLAIN_URL = re.compile(
    r"(?:[hH][tT][tT][pP][sS]?:)?//([a-z0-9_-]++(?:\.[a-z0-9_-]++)*+)(/[^#\\]*+)(?!\\)"
)


def split_url(url: str) -> tuple[str, str] | None:
    """(lower-case host, path with query) of an http(s) or scheme-relative URL, else None."""
    plain = PLAIN_URL.match(url)
    if plain is not None:
        return plain.group(1), plain.group(2)
    m = _SPLIT.match(url)
    if m is None:
        return None
    host, path = m.groups()
    if "@" in host or ":" in host:  # user info and port are not part of the host
        host = host.rsplit("@", 1)[-1].split(":", 1)[0]
    host = host.lower()
    if host.endswith("."):
        host = host.rstrip(".")
    if "\\" in path:  # browsers read a backslash as a slash in http(s) URLs
        path = path.replace("\\", "/")
    if not path.startswith("/"):
        path = "/" + path
    return (host, path) if host else None


def compile_re2(source: str) -> Any:
    """An RE2 regex, or ``re2.error`` (Rule 5)."""
    return re2.compile(source, options=_RE2)


def compile_entry(entry: RuleEntry, key: str, source: str) -> Any:
    """``source`` compiled by RE2, or a ``RulesError`` naming the entry's file, line and key."""
    try:
        return compile_re2(source)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise entry.error(
            key,
            f"not a valid regular expression for RE2 (no look-around, no back-reference): {reason}",
        ) from None


def load_signature(entry: RuleEntry, *, with_purpose: bool) -> Signature:
    allowed = ["vendor", "hosts", "path", "examples", "notes", "sources"]
    if with_purpose:
        allowed += ["purpose", "identifying_params", "no_consent"]
    entry.check(allowed, required=["vendor"])
    globs = _strings(entry, "hosts")
    _strings(entry, "sources")
    for glob in globs:
        if not HOST_GLOB.match(glob.lower()):
            raise entry.error("hosts", f"{glob!r} is not a host name or a glob like *.example.com")
    path_source = _string(entry, "path")
    if not globs and not path_source:
        raise entry.error(None, "needs 'hosts', 'path' or both")
    hosts = None
    host_source = ""
    if globs:
        host_source = "(?:" + "|".join(host_pattern(g) for g in globs) + ")"
        hosts = compile_entry(entry, "hosts", host_source + "$")
    path = compile_entry(entry, "path", path_source) if path_source else None
    return Signature(
        id=entry.id,
        vendor=_string(entry, "vendor"),
        purpose=enum_value(entry, "purpose", Purpose) or Purpose.CAMPAIGN_PERFORMANCE,
        no_consent=enum_value(entry, "no_consent", Action),
        identifying_params=_strings(entry, "identifying_params"),
        hosts=hosts,
        path=path,
        host_source=host_source,
    )


class _RuleSet2(NamedTuple):
    """Several rules' patterns as one RE2 set: ``first`` gives the first rule (in the order
    given) that matches, in one pass over the text whatever the number of rules (Rule 6)."""

    compiled: Any
    rules: tuple[Signature, ...]
    sources: tuple[str, ...]
    anchor: str

    @classmethod
    def of(cls, rules: Sequence[Signature], sources: Sequence[str], anchor: str) -> _RuleSet2:
        made = re2.Set.FullMatchSet(_RE2) if anchor == "full" else re2.Set.MatchSet(_RE2)
        for source in sources:
            made.Add(source)
        made.Compile()
        return cls(made, tuple(rules), tuple(sources), anchor)

    def __reduce__(self) -> tuple[Any, ...]:
        # An RE2 set cannot be pickled: a worker process compiles it again from its sources
        # (the relay hands its validated context to its filter workers).
        return (_RuleSet2.of, (self.rules, self.sources, self.anchor))

    def all(self, text: str) -> list[int]:
        return sorted(self.compiled.Match(text) or ())

    def first(self, text: str) -> Signature | None:
        found = self.compiled.Match(text)
        return self.rules[min(found)] if found else None


# Host-less rules are grouped by the first characters of the path: most rules start with
# literals ("/wf/open?upn="), so a content image's path ("/img/...") is tried only against the
# rules whose literal starts agree with its own, and often against none (one startswith call).
_DISPATCH = 3


def _may_match(prefix: str, key: str) -> bool:
    """Whether a path whose first characters are ``key`` may start with ``prefix``."""
    return key.startswith(prefix) if len(prefix) <= len(key) else prefix.startswith(key)


class _Hostless(NamedTuple):
    """The host-less rules that may match paths starting with one dispatch key."""

    starts: tuple[str, ...]  # a path must start with one of these for any of them to match
    rules: _RuleSet2 | None


_UNSEEN = _Hostless((), None)  # a sentinel: this path start has no entry yet
_NOT_KEPT = Signature("", "", Purpose.CAMPAIGN_PERFORMANCE, None, (), None, None)  # no answer yet


@dataclass(frozen=True)
class SignatureSet:
    """Rules of one table: host rules in one RE2 set, host-less ones dispatched (Rule 6)."""

    host_rules: tuple[Signature, ...]
    hostless: tuple[Signature, ...]
    _hosts: _RuleSet2 | None = None
    _cache: dict[str, tuple[Signature, ...]] = field(default_factory=dict, compare=False)
    _prefixes: tuple[tuple[str, ...], ...] = ()  # literal_prefixes of each host-less rule
    # the first _DISPATCH characters of a path -> the host-less rules that may match it
    _dispatch: dict[str, _Hostless] = field(default_factory=dict, compare=False)
    # the rule numbers of a dispatch entry -> its RE2 set (few distinct sets exist, so odd
    # paths cannot make the relay compile a set per message)
    _sets: dict[tuple[int, ...], _RuleSet2 | None] = field(default_factory=dict, compare=False)
    # (host, path) -> the first rule matching it, kept across messages (Rule 6)
    _answers: dict[tuple[str, str], Signature | None] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, signatures: Iterable[Signature]) -> SignatureSet:
        host_rules: list[Signature] = []
        hostless: list[Signature] = []
        for sig in signatures:
            (hostless if sig.hosts is None else host_rules).append(sig)
        hosts = (
            _RuleSet2.of(host_rules, [s.host_source for s in host_rules], "full")
            if host_rules
            else None
        )
        return cls(
            tuple(host_rules),
            tuple(hostless),
            hosts,
            _prefixes=tuple(
                literal_prefixes(s.path.pattern) if s.path else ("",) for s in hostless
            ),
        )

    def _for_host(self, host: str) -> tuple[Signature, ...]:
        found: tuple[Signature, ...] = ()
        if self._hosts is not None:
            found = tuple(self.host_rules[n] for n in self._hosts.all(host))
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[host] = found
        return found

    def _for_path(self, key: str) -> _Hostless:
        """The host-less rules that may match a path starting with ``key``, in file order (a
        rule left out cannot match: none of its literal starts agrees with the path's)."""
        numbers: list[int] = []
        starts: list[str] = []
        for n, prefixes in enumerate(self._prefixes):
            agreeing = [p for p in prefixes if _may_match(p, key)]
            if agreeing:
                numbers.append(n)
                starts += agreeing
        chosen = tuple(numbers)
        if chosen not in self._sets:
            rules = [self.hostless[n] for n in chosen if self.hostless[n].path is not None]
            self._sets[chosen] = (
                _RuleSet2.of(rules, [r.path.pattern for r in rules], "start") if rules else None
            )
        entry = _Hostless(tuple(dict.fromkeys(starts)), self._sets[chosen])
        if len(self._dispatch) >= CACHE_LIMIT:
            self._dispatch.clear()
        self._dispatch[key] = entry
        return entry

    def for_host(self, host: str) -> tuple[Signature, ...]:
        """The rules naming ``host``, in file order (their paths still to be matched)."""
        sigs = self._cache.get(host)
        return sigs if sigs is not None else self._for_host(host)

    def match(self, host: str, path: str) -> Signature | None:
        """The first rule matching: host-specific ones, then host-less ones (Rule 2)."""
        return self.match_all([(host, path)])[0]

    def match_hostless(self, path: str) -> Signature | None:
        """The first host-less rule matching ``path`` (the second half of ``match``)."""
        return self.match_all([("", path)], hostless_only=True)[0]

    def match_all(
        self, pairs: Iterable[tuple[str, str]], *, hostless_only: bool = False
    ) -> list[Signature | None]:
        """``match`` for many (host, path) pairs, in one loop: a newsletter has a hundred images
        and a hundred links, and a call per URL costs as much as the lookups themselves."""
        found: list[Signature | None] = []
        append = found.append
        hosts, dispatch, answers = self._cache, self._dispatch, self._answers
        for pair in pairs:
            if not hostless_only:
                sig = answers.get(pair, _NOT_KEPT)
                if sig is not _NOT_KEPT:  # a URL seen before (Rule 6)
                    append(sig)
                    continue
            host, path = pair
            sig = None
            if not hostless_only:
                sigs = hosts.get(host)
                for rule in sigs if sigs is not None else self._for_host(host):
                    if rule.path is None or rule.path.match(path):
                        sig = rule
                        break
            if sig is None:
                entry = dispatch.get(path[:_DISPATCH], _UNSEEN)
                if entry is _UNSEEN:
                    entry = self._for_path(path[:_DISPATCH])
                starts, rules = entry
                # One C call rules out most content paths: no host-less rule starts like them.
                if rules is not None and path.startswith(starts):
                    sig = rules.first(path)
            append(sig)
            if not hostless_only and len(host) + len(path) <= ANSWER_KEY_LIMIT:
                if len(answers) >= CACHE_LIMIT:
                    answers.clear()
                answers[pair] = sig
        return found

    def __len__(self) -> int:
        return len(self.host_rules) + len(self.hostless)


def check_examples(entries: Sequence[RuleEntry], signatures: SignatureSet) -> None:
    """Every example URL must be matched by its own rule (Rule 3)."""
    for entry in entries:
        for example in _strings(entry, "examples"):
            parts = split_url(example)
            if parts is None:
                raise entry.error("examples", f"{example!r} is not an http(s) URL")
            got = signatures.match(*parts)
            if got is None or got.id != entry.id:
                which = "no rule" if got is None else f"rule {got.id!r} first"
                raise entry.error("examples", f"{example!r} is matched by {which}")
