"""The detection shortcuts give what the straightforward code gives.

The trackers stage takes shortcuts for speed (a fast path for the usual ``<img src>``, a one-call
split of plain URLs, host-less rules dispatched by literal path prefixes, memchr searches for
"url(" and "{{"). Each test here runs generated input through the shortcut and through a plain
reference written the obvious way, and requires the same answer.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.detect import hrefs, htmlscan
from relay.detect.htmlattrs import Found
from relay.detect.literals import literal_prefixes
from relay.detect.signatures import (
    Signature,
    SignatureSet,
    host_suffix,
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

_SPLIT_REFERENCE = re.compile(r"(?:[hH][tT][tT][pP][sS]?:)?//([^/?#\\]*)([^#]*)")


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


_HREF_REFERENCE = re.compile(
    r"<a\s" + htmlscan.ATTRS_LAZY + r"""(?<![\w-])href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""",
    re.IGNORECASE,
)


@SETTINGS
@given(html())
def test_hrefs_split_like_decode_then_split(text: str) -> None:
    found = hrefs.hrefs(text)
    assert [href for href, _, _ in found] == [
        a or b or c for a, b, c in _HREF_REFERENCE.findall(text)
    ]
    for href, host, path in found:
        if host:
            assert attribute_url(href) == href
            assert split_reference(href) == (host, path)


# --- signature matching --------------------------------------------------------------------


def match_reference(signatures: SignatureSet, host: str, path: str) -> Signature | None:
    """Rule 2 of signatures.py, literally: host rules in file order, then host-less ones."""
    pool = (*signatures.by_suffix.get(host_suffix(host), ()), *signatures.wildcard)
    for sig in pool:
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


# --- HTML scanning -------------------------------------------------------------------------


def hooks_reference(lower: str) -> list[int]:
    """htmlscan._hooks as first written: each spelling searched with its own regex."""
    if lower.isascii():
        words: tuple[str, ...] = ("url(", "background")
    else:
        words = ("url(", "URL(", "Url(", "background", "BACKGROUND", "Background")
    return sorted(m.start() for word in words for m in re.finditer(re.escape(word), lower))


def scan_reference(text: str) -> list[Found]:
    """htmlscan.scan_html without its <img> fast path: every element read by _image_element."""
    if text.isascii():
        lower, matches = text.lower(), htmlscan._SCAN.finditer(text.lower())
    else:
        lower, matches = text, htmlscan._SCAN_ANYCASE.finditer(text)
    found: list[Found] = []
    skipped = []
    for m in matches:
        name = m.group("name")
        if name is not None:
            found.extend(htmlscan._image_element(text, lower, m, name.lower(), {}))
        else:
            skipped.append(m.span())
            if m.start("css") >= 0:
                found.extend(htmlscan._style_block(text, m.start("css"), m.end("css")))
    found.extend(htmlscan._hooked(text, lower, skipped))
    found.sort(key=lambda f: f.url_start)
    return found


@SETTINGS
@given(html())
def test_scan_fast_path_matches_the_general_reader(text: str) -> None:
    assert htmlscan.scan_html(text) == scan_reference(text)


@SETTINGS
@given(html())
def test_hook_search_matches_one_regex_per_word(text: str) -> None:
    lower = text.lower() if text.isascii() else text
    assert htmlscan._hooks(lower) == hooks_reference(lower)


def _scan_pattern_reference() -> str:
    """The scan regex as first written: every attribute alternative opens with its group, and
    comment and style bodies are read lazily."""
    value = htmlscan._VALUE
    read = {
        "src": "src",
        "srcset": "srcset",
        "width": "width",
        "height": "height",
        "style": "style",
        "label": "data-relay-purpose",
    }
    element = (
        r"(?>(?:\s*(?:"
        + "|".join(
            rf"(?P<at_{group}>{re.escape(name)}\s*=\s*(?P<{group}>{value}))"
            for group, name in read.items()
        )
        + rf"|[^\s\"'>/=]++(?:\s*=\s*{value})?|[^>]))*)"
    )
    return (
        r"<(?:(?P<comment>!--)(?!\[if)(?:>|->|[\s\S]*?(?:-->|\Z))"
        r"|style(?=[\s>])" + htmlscan._ATTRS + r">(?P<css>[\s\S]*?)(?:</style\s*>|\Z)"
        r"|(?P<name>img|source|amp-img|amp-anim|input|v:image|v:fill|v:imagedata)(?=[\s/>])"
        + element
        + r">)"
    )


SCAN_REFERENCE = re.compile(_scan_pattern_reference())
GROUPS = ("css", "name", "src", "srcset", "width", "height", "style", "label")


@SETTINGS
@given(html())
def test_scan_regex_reads_what_the_first_regex_read(text: str) -> None:
    lower = text.lower()
    ours = list(htmlscan._SCAN.finditer(lower))
    theirs = list(SCAN_REFERENCE.finditer(lower))
    assert [m.span() for m in ours] == [m.span() for m in theirs]
    for mine, first in zip(ours, theirs, strict=True):
        assert [mine.span(g) for g in GROUPS] == [first.span(g) for g in GROUPS]
        if first.start("at_label") >= 0:  # our empty group sits after the "d"
            assert mine.start("at_label") - 1 == first.start("at_label")


@SETTINGS
@given(html())
def test_placeholders_match_a_plain_regex_search(text: str) -> None:
    expected = [(m.group(1), m.start(), m.end()) for m in _PLACEHOLDER.finditer(text)]
    got = [(p.name, p.span.start, p.span.end) for p in _placeholders(0, text)]
    assert got == expected
