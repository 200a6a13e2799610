"""The C tokenizer (relay/detect/_tagscan.c) and the regex scanner find the same references.

htmlscan Rule 6: when the extension is built, the scan's items come from ``_tagscan.scan``
instead of the one-pass regex. The regex stays the definition (test_htmlscan_reference checks
both against the standard's tokenizer); here the two readers are compared item for item on
generated HTML, on every HTML part the project ships (real newsletters and MIME fixtures), and
on hostile and non-ASCII text, where offsets must stay code points.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given

from relay.detect import htmlscan, imagesizes
from relay.detect.htmlscan import native_matches, regex_matches, scan_document
from tests.detect.test_htmlscan_reference import HIDING_PLACES, SETTINGS, html

ROOT = Path(__file__).resolve().parents[2]

needs_native = pytest.mark.skipif(htmlscan.native_scan is None, reason="_tagscan not built")


def _both(text: str) -> None:
    # Each reader with an empty size table, so that neither reads a size the other computed.
    imagesizes.SIZES.clear()
    native = scan_document(text, matches=native_matches)
    imagesizes.SIZES.clear()
    assert native == scan_document(text, matches=regex_matches), text[:200]


def _html_parts() -> list[tuple[str, str]]:
    parts = []
    paths = sorted((ROOT / "examples").glob("*.eml")) + sorted(
        (ROOT / "tests" / "fixtures").rglob("*.eml")
    )
    for path in paths:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        for number, part in enumerate(message.walk()):
            if part.get_content_type() in ("text/html", "text/x-amp-html"):
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    charset = part.get_content_charset() or "utf-8"
                    try:
                        text = payload.decode(charset, "replace")
                    except LookupError:
                        text = payload.decode("latin-1")
                    parts.append((f"{path.relative_to(ROOT)} part {number}", text))
    for path in sorted((ROOT / "tests" / "fixtures").rglob("*.html")):
        parts.append((str(path.relative_to(ROOT)), path.read_text("utf-8", "replace")))
    return parts


def test_the_extension_is_built() -> None:
    """The relay's speed figures assume it (README, performance): `make install` builds it
    with the C compiler (Debian's gcc); without one the relay runs on the regex alone."""
    assert htmlscan.native_scan is not None, "relay/detect/_tagscan.c was not compiled"
    assert htmlscan.DEFAULT_MATCHES is native_matches


@needs_native
@SETTINGS
@given(html())
def test_same_references_as_the_regex_on_generated_html(text: str) -> None:
    _both(text)


@needs_native
def test_same_references_on_every_shipped_html_part() -> None:
    parts = _html_parts()
    assert len(parts) >= 30  # the newsletters, the MIME fixtures and the examples
    found = 0
    for _where, text in parts:
        _both(text)
        found += len(scan_document(text)[0])
    assert found > 500  # real images were read, not only empty lists


@needs_native
@pytest.mark.parametrize("text", HIDING_PLACES)
def test_same_references_in_each_hiding_place(text: str) -> None:
    _both(text)


HOSTILE = (
    "<",
    "<<<<<<<<",
    "<img",
    "<img src=",
    '<img src="//t.example/p.gif',
    "<img src='//t.example/p.gif",
    "<!--",
    "<!-- <img src=//t.example/p.gif>",
    "<!---->",
    "<!--->x<img src=//t.example/a.gif>",
    "<!-- --!><img src=//t.example/a.gif>",
    "<title>",
    "<title><img src=//t.example/p.gif></title ><img src=//t.example/b.gif>",
    "<TITLE><img src=//t.example/p.gif></TiTlE><IMG SRC=//t.example/b.gif>",
    "<plaintext><img src=//t.example/p.gif>",
    "<style>a{background:url(//t.example/s.gif)}",
    "<style>a{background:url(//t.example/s.gif)}</style",
    "<STYLE>a{background:url(//t.example/s.gif)}</STYLE><img src=//t.example/p.gif>",
    "<style<img src=//t.example/p.gif>",
    "<img<img src=//t.example/p.gif>",
    "<td background=//t.example/b.gif><td BACKGROUND=//t.example/c.gif>",
    '<td style="color:red" background>',
    "<td style=u\\72l(//t.example/e.gif)>",
    "<iframe src=//t.example/f.html><img src=//t.example/p.gif></iframe>",
    "<textarea style=background:url(//t.example/t.gif)><img src=//x.example/n.gif></textarea>",
    "<img src=a src=b srcset='c 1x' width=1 width=2 height=3 data-relay-purpose=x>",
    "<img data-relay-purpose data-relay-purpose=y src=//t.example/p.gif>",
    "<img =src=x src=//t.example/p.gif>",
    '<img a"b=1 src=//t.example/p.gif>',
    "<img src = \n '//t.example/p.gif' >",
    "</td x='>'><img src=//t.example/p.gif>",
    "<?xml x ?><!doctype html><img src=//t.example/p.gif>",
    "<!--[if mso]><v:fill src=//t.example/v.gif /><![endif]-->",
    "<base href=//t.example/><img src=p.gif>",
    # the plain <img src> whose URL the C reader finds itself: every edge of its value
    '<img src="">',
    "<img src='\"'>",
    '<img src=">',
    '<img src="   ">',
    "<img src>",
    '<img src = " //t.example/p.gif " width=1>',
    "<img src=//t.example/p.gif background>",
    "<img src=//t.example/p.gif background=//t.example/b.gif>",
    '<img src=//t.example/p.gif style="width:1px;height:1px">',
    '<img src=//t.example/p.gif style="background:url(//t.example/s.gif)">',
    "<img src=//t.example/p.gif srcset='//t.example/2.gif 2x'>",
    "<IMG SRC='//t.example/p.gif'",
    "<img src=\f//t.example/p.gif\f>",
    # non-ASCII before and inside tags: offsets are code points in every string kind
    "\u00e9\u00e9<img src=//t.example/\u00e9.gif alt=\u00e9>",
    "\u0101<img src=//t.example/\u0101.gif>",
    "\U0001f600<img src=//t.example/\U0001f600.gif style='width:1px'>",
    "\U0001f600<td style='background:url(//t.example/\U0001f600.gif)'>",
    # ASCII case folding only (HTML): a dotted capital I or a Kelvin sign is no letter
    "<\u0130mg src=//t.example/p.gif><img src=//t.example/q.gif>",
    "<im\u212a src=//t.example/p.gif>",
)


@needs_native
@pytest.mark.parametrize("text", HOSTILE)
def test_same_references_on_hostile_and_non_ascii_text(text: str) -> None:
    if text.lower().isascii() or len(text.lower()) == len(text):
        _both(text)
    native = scan_document(text, matches=native_matches)[0]
    for item in native:  # every span indexes the text as given
        assert text[item.url_start : item.url_end] == item.raw


@needs_native
def test_ascii_case_folding_only() -> None:
    """HTML lower-cases ASCII letters only: "<İmg" is no image tag for a browser, and none for
    the C reader (the regex, reading such a text with IGNORECASE, follows Python's folding)."""
    found = scan_document("<\u0130mg src=//t.example/p.gif><IMG SRC=//t.example/q.gif>")[0]
    assert [f.raw for f in found] == ["//t.example/q.gif"]


@needs_native
def test_long_and_repetitive_input_is_read_whole() -> None:
    text = "<td a=1 b='2' c=\"3\">" * 20_000 + "<img src=//t.example/p.gif>" + "<" * 50_000
    (found,) = scan_document(text)[0]
    assert found.raw == "//t.example/p.gif"
    _both(text[:50_000])


@needs_native
def test_refuses_what_is_not_a_str() -> None:
    assert htmlscan.native_scan is not None
    with pytest.raises(TypeError):
        htmlscan.native_scan(b"<img src=x>", htmlscan.LAYOUT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layout"):
        htmlscan.native_scan("<img src=x>", (1, 2))


def test_size_table_gives_what_the_attributes_say_and_stays_bounded() -> None:
    """Sizes are kept across messages by their attributes (imagesizes.SIZES): a second message
    with the same attributes reads the same sizes, a long style is not kept, and the table
    starts again when full."""
    imagesizes.SIZES.clear()
    first = '<img src=//t.example/a.gif width=1 height=1 style="max-width:600px">'
    (a,) = scan_document(first)[0]
    (b,) = scan_document(first.replace("a.gif", "b.gif"))[0]
    assert a.size == b.size == (1, 1, 600, None)
    kept = len(imagesizes.SIZES)
    long_style = "color:red;" * 100 + "width:2px"
    (c,) = scan_document(f'<img src=//t.example/c.gif style="{long_style}">')[0]
    assert c.size.width == 2 and len(imagesizes.SIZES) == kept
    for n in range(imagesizes.SIZES_LIMIT + 10):
        scan_document(f"<img src=//t.example/{n}.gif width={n}>")
    assert len(imagesizes.SIZES) <= imagesizes.SIZES_LIMIT
    (d,) = scan_document("<img src=//t.example/d.gif width=7>")[0]
    assert d.size.width == 7
