"""The detection shortcuts give what the straightforward code gives.

The trackers stage takes shortcuts for speed (a one-call split of plain URLs, host-less rules
dispatched by literal path prefixes, a memchr search for "{{", answers kept from one message to
the next). Each test here runs generated input through the shortcut and through a plain
reference written the obvious way, and requires the same answer. The HTML scan itself is
checked against a plain tokenizer in test_htmlscan_reference.py.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.detect import hrefs, trackers
from relay.detect.literals import literal_prefixes
from relay.detect.signatures import (
    ANSWER_KEY_LIMIT,
    CACHE_LIMIT,
    Signature,
    SignatureSet,
    split_url,
)
from relay.detect.trackers import (
    _PLACEHOLDER,
    _PLAIN_ATTRIBUTE,
    DetectionRules,
    _placeholders,
    attribute_url,
    load_detection,
)
from relay.rulefiles import load_rules

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RULES: DetectionRules = load_detection(load_rules())

SCHEMES = ("https://", "http://", "//", "HTTPS://", "Http://", "ftp://", "cid:", "data:x", "")
HOSTS = (
    "cdn.example.com",
    "CDN.Example.com",
    "u1.ct.sendgrid.net",
    "x.mcusercontent.com",
    "h.example:8080",
    "user@h.example",
    "host.example.",
    "a..b",
    "",
    "\u212aelvin.example",
    "xn--caf-dma.example",
)
PATHS = (
    "/img/p.jpg",
    "/wf/open?upn=abc",
    "/o/eJ" + "x" * 20,
    "/CI0/0123456789abcdef-01234567-0123-0123-0123-0123456789ab-000000/",
    "/e3t/o/",
    "/imp?s=1234567",
    "/a\\b",
    "/p?a=1&amp;b=2",
    "/p?a=1&b=2",
    "/ls/click?upn=x",
    "/x?mkt_tok=1",
    "/a b",
    "/#frag",
    "/q#a&b",
    "?x=1",
    "",
    "/\u00e9",
)
EDGES = ("", " ", "\t", "\n", "\xa0", "&#x2F;", "&amp;")


@st.composite
def urls(draw: st.DrawFn) -> str:
    url = draw(st.sampled_from(SCHEMES)) + draw(st.sampled_from(HOSTS))
    url += draw(st.sampled_from(PATHS)) + draw(st.text(alphabet="/?#&=a1.\\ ", max_size=6))
    if draw(st.booleans()):
        url = draw(st.sampled_from(EDGES)) + url + draw(st.sampled_from(EDGES))
    return url


def _value(draw: st.DrawFn, value: str) -> str:
    quote = draw(st.sampled_from(['"', "'", ""]))
    if not quote:
        value = re.sub(r"[\s\"'>]", "", value) or "x"
    return quote + value.replace(quote, "") + quote if quote else value


@st.composite
def tags(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(["img", "IMG", "amp-img", "source", "v:image", "input", "td", "a"]))
    attrs = []
    for _ in range(draw(st.integers(0, 5))):
        attr = draw(
            st.sampled_from(
                [
                    *("src", "SRC", "srcset", "width", "height", "style", "background", "alt"),
                    *("data-relay-purpose", "href", "type", "src "),
                ]
            )
        )
        if attr.strip().lower() in ("src", "background", "href"):
            value = draw(urls())
        elif attr == "srcset":
            value = draw(urls()) + " 1x, " + draw(urls()) + " 2x"
        elif attr == "style":
            value = draw(
                st.sampled_from(
                    [
                        *("display:block", "width:1px;height:1px", "WIDTH:1PX !important"),
                        *("max-width:1px;max-height:1px", "background:url(x.gif)"),
                    ]
                )
            )
        elif attr == "type":
            value = "image"
        else:
            value = draw(st.sampled_from(["1", "0", "600", "1px", " 2 ", "auto", "analytics"]))
        space = draw(st.sampled_from([" ", "\n", "\t "]))
        attrs.append(space + attr + draw(st.sampled_from(["=", " = "])) + _value(draw, value))
    end = draw(st.sampled_from([">", " />", "></img>"]))
    return "<" + name + "".join(attrs) + end


TOKENS = (
    "<style>.a{background:url(https://t.example/o.gif)}</style>",
    "<style media=print>p{color:red}",
    "<!-- <img src=https://hidden.example/x.gif> -->",
    "<!--[if mso]><v:fill src=https://vml.example/f.png /><![endif]-->",
    "<!-->",
    "<!--->",
    "-->",
    "--->",
    "{{relay:withdraw_url}}",
    "{{ relay:consent_url }}",
    "{x}",
    "{",
    "(",
    "url(",
    "URL(",
    "Background",
    "bAckground",
    "<",
    "&amp;",
    "caf\u00e9 ",
    "\u0130",
    "text ",
)


@st.composite
def html(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.one_of(tags(), st.sampled_from(TOKENS)), max_size=25))
    return "".join(pieces)


# --- URL splitting -------------------------------------------------------------------------

# Any run of slashes or backslashes opens the host, as in a browser (WHATWG URL, "special
# authority ignore slashes state").
_SPLIT_REFERENCE = re.compile(r"(?:[hH][tT][tT][pP][sS]?:)?[/\\]{2,}([^/?#\\]*)([^#]*)")


def split_reference(url: str) -> tuple[str, str] | None:
    """signatures.split_url as first written: one general regex, then the fix-ups."""
    m = _SPLIT_REFERENCE.match(url)
    if m is None:
        return None
    host, path = m.groups()
    if "@" in host or ":" in host:
        host = host.rsplit("@", 1)[-1].split(":", 1)[0]
    host = host.lower()
    if host.endswith("."):
        host = host.rstrip(".")
    if "\\" in path:
        path = path.replace("\\", "/")
    if not path.startswith("/"):
        path = "/" + path
    return (host, path) if host else None


@pytest.mark.parametrize(
    ("url", "split"),
    [
        # A phishing kit's pixel as written (github.com/rf-peixoto/phishing_pot): Chromium
        # fetches it from 159.198.37.51.
        ("http:///159.198.37.51/track/3WcfQu542f", ("159.198.37.51", "/track/3WcfQu542f")),
        ("///cdn.example/p.gif", ("cdn.example", "/p.gif")),
        ("https:\\\\cdn.example\\p.gif", ("cdn.example", "/p.gif")),
        ("https:/cdn.example/p.gif", None),
    ],
)
def test_split_url_reads_extra_slashes_as_a_browser(url: str, split: object) -> None:
    assert split_url(url) == split


@SETTINGS
@given(urls())
def test_split_url_matches_the_general_code(url: str) -> None:
    assert split_url(url) == split_reference(url)


@SETTINGS
@given(urls())
def test_plain_attribute_shortcut_matches_decode_then_split(raw: str) -> None:
    plain = _PLAIN_ATTRIBUTE.match(raw)
    if plain is not None:
        url = attribute_url(raw)
        assert url == raw
        assert split_reference(url) == plain.group(1, 2)


@SETTINGS
@given(html())
def test_hrefs_split_like_decode_then_split(text: str) -> None:
    for href, host, path in hrefs.hrefs(text):
        if host:
            assert attribute_url(href) == href
            assert split_reference(href) == (host, path)


# --- signature matching --------------------------------------------------------------------


def match_reference(signatures: SignatureSet, host: str, path: str) -> Signature | None:
    """Rule 2 of signatures.py, literally: host rules in file order, then host-less ones."""
    for sig in signatures.host_rules:
        host_ok = sig.hosts is not None and sig.hosts.match(host)
        if host_ok and (sig.path is None or sig.path.match(path)):
            return sig
    for sig in signatures.hostless:
        if sig.path is not None and sig.path.match(path):
            return sig
    return None


def _example_paths() -> list[tuple[str, str]]:
    pairs = []
    for entry in (*load_rules().of("tracker"), *load_rules().of("click_tracker")):
        for example in entry.data.get("examples", []):
            split = split_url(example)
            if split is not None:
                pairs.append(split)
    return pairs


EXAMPLES = _example_paths()


@SETTINGS
@given(
    st.sampled_from(EXAMPLES),
    st.sampled_from(["", "cdn.example.com", "click.example.com"]),
    st.integers(0, 30),
    st.text(alphabet="/?=&~._-aeoCILO0123456789", max_size=8),
)
def test_match_is_the_plain_rule_order(
    example: tuple[str, str], other_host: str, cut: int, tail: str
) -> None:
    host, path = example
    host = other_host or host
    for candidate in (path, path[:cut] + tail, tail, "/" + tail):
        for table in (RULES.trackers, RULES.click_trackers):
            assert table.match(host, candidate) == match_reference(table, host, candidate)


def test_every_rule_example_starts_with_one_of_its_literal_prefixes() -> None:
    for table in (RULES.trackers, RULES.click_trackers):
        for sig in table.hostless:
            assert sig.path is not None
            prefixes = literal_prefixes(sig.path.pattern)
            for _, path in EXAMPLES:
                if sig.path.match(path):
                    assert path.startswith(prefixes), (sig.id, path, prefixes)


PATTERN_PIECES = ("a", "b", "/", r"\.", r"\?", "?", "*", "+", "(?:", "(", ")", "|", "[ab]", "{2}")


@SETTINGS
@given(st.lists(st.sampled_from(PATTERN_PIECES), max_size=8), st.text(alphabet="ab/.?", max_size=8))
def test_literal_prefixes_never_rule_out_a_match(pieces: list[str], path: str) -> None:
    pattern = "".join(pieces)
    try:
        compiled = re.compile(pattern)
    except re.error:
        return
    if compiled.match(path):
        assert path.startswith(literal_prefixes(pattern)), (pattern, path)


# --- answers kept across messages --------------------------------------------------------


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from([h.lower() for h in HOSTS] + [h for h, _ in EXAMPLES[:40]]),
            st.one_of(st.sampled_from(PATHS), st.sampled_from([p for _, p in EXAMPLES])),
        ),
        max_size=30,
    )
)
def test_kept_signature_answers_are_the_plain_rule_order(pairs: list[tuple[str, str]]) -> None:
    """signatures Rule 6: the first call works an answer out and keeps it, the second reads it."""
    for table in (RULES.trackers, RULES.click_trackers):
        expected = [match_reference(table, host, path) for host, path in pairs]
        assert table.match_all(pairs) == expected
        assert table.match_all(pairs) == expected


@SETTINGS
@given(urls())
def test_kept_plain_splits_are_the_regex_answer(raw: str) -> None:
    found = _PLAIN_ATTRIBUTE.match(raw)
    expected = None if found is None else found.group(1, 2)
    assert trackers._plain_split(raw) == expected
    kept = trackers._PLAIN_SPLITS.get(raw, trackers._NOT_SPLIT)
    assert kept == expected or (len(raw) > ANSWER_KEY_LIMIT and kept is trackers._NOT_SPLIT)


def test_the_kept_answers_stay_bounded() -> None:
    table = SignatureSet.build(RULES.trackers.host_rules + RULES.trackers.hostless)
    for n in range(CACHE_LIMIT + 50):
        trackers._plain_split(f"https://px{n}.example/o.gif?u={n}")
        table.match_all([(f"px{n}.example", f"/o.gif?u={n}")])
        assert len(trackers._PLAIN_SPLITS) <= trackers.PLAIN_SPLITS_LIMIT
        assert len(table._answers) <= CACHE_LIMIT
    path = "/" + "a" * ANSWER_KEY_LIMIT
    assert trackers._plain_split("https://cdn.example" + path) == ("cdn.example", path)
    assert "https://cdn.example" + path not in trackers._PLAIN_SPLITS  # too long to keep
    assert table.match_all([("cdn.example", path)]) == [None]
    assert ("cdn.example", path) not in table._answers


# --- placeholders ------------------------------------------------------------------------


@SETTINGS
@given(html())
def test_placeholders_match_a_plain_regex_search(text: str) -> None:
    expected = [(m.group(1), m.start(), m.end()) for m in _PLACEHOLDER.finditer(text)]
    got = [(p.name, p.span.start, p.span.end) for p in _placeholders(0, text)]
    assert got == expected
