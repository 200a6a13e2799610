"""What a browser fetches beyond images: style sheets and hints, media, objects, SVG images,
``<base href>``, CSS escapes and image-set(), HTML5 character references without ";".

Shapes from public sources (facts, our own markup):
- Tutanota's mail sanitizer tests (tutao/tutanota, test/tests/misc/HtmlSanitizerTest.ts, commit
  09586de6df520d81532b1e054a133f8dffa58404) block ``<video poster>`` sized 1x1, ``<audio src>``,
  ``image-set()`` / ``-webkit-image-set()`` candidates and url() quoted with ``&#39;``; their
  URLs are emailprivacytester.com's ``/cb/<hex>/<vector>`` probes.
- ``<base href>`` in real mail: maildev/maildev#97 (``<base href="http://example.com"/>`` then
  ``<img src="/email/...">``), nylas/nylas-mail#3532 (an eclipse.org forum notification with
  ``<base href="https://www.eclipse.org/forums/">`` and a relative ``<link rel="stylesheet">``).
- Litmus Email Analytics (``relay/rules/trackers.toml`` ``litmus-open``) loads its tracker from
  a ``<style>`` block with ``@import`` and ``background-image`` as well as an ``<img>``.
- CSS escapes: CSS Syntax Level 3, 4.3.7; character references: WHATWG HTML 13.2.5.72.
"""

from __future__ import annotations

import pytest

from relay.core.rewrite import TRANSPARENT_GIF
from relay.detect.trackers import DetectionRules
from relay.model import ElementKind
from tests.support.trackers import at, detection_rules, only, run

LITMUS = "https://a1b2c3d4.emltrk.com/a1b2c3d4?d=ana@example.org"
PROBE = "https://emailprivacytester.com/cb/04e69deda1be1c37"
SFMC = "https://pixel.inbox.exacttarget.com/pixel.gif?r=3f5e2b9c1d&c=8271&j=55201"


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> DetectionRules:
    return detection_rules(tmp_path_factory.mktemp("rules"))


# ---------------------------------------------------------------------------------------------
# <link>: whatever a client may fetch or contact


@pytest.mark.parametrize(
    "rel", ["stylesheet", "StyleSheet", "alternate stylesheet", "preload", "prefetch", "icon",
            "shortcut icon", "dns-prefetch", "preconnect", "modulepreload", "x-unknown"],
)  # fmt: skip
def test_a_link_that_fetches_a_tracker_is_found_and_removed_whole(
    rules: DetectionRules, rel: str
) -> None:
    tag = f'<link rel="{rel}" href="{LITMUS}" as="image">'
    html = f"<head>{tag}</head><p>Hi</p>"
    candidate = only(run(rules, html))
    assert candidate.rule == "litmus-open"
    assert candidate.element is ElementKind.OTHER
    assert at(html, candidate.url_span.start, candidate.url_span.end) == LITMUS
    assert at(html, candidate.removal_span.start, candidate.removal_span.end) == tag


def test_a_navigational_link_and_a_font_style_sheet_are_left_alone(rules: DetectionRules) -> None:
    html = (
        f'<link rel="canonical" href="{LITMUS}"><link rel="alternate" href="{LITMUS}">'
        f'<link href="{LITMUS}">'  # no rel: nothing is fetched
        # MJML's default font, as its output writes it: content
        '<link href="https://fonts.googleapis.com/css?family=Ubuntu:300,400,500,700" '
        'rel="stylesheet" type="text/css">'
    )
    assert run(rules, html).candidates == ()


# ---------------------------------------------------------------------------------------------
# media, objects, frames, SVG


@pytest.mark.parametrize(
    ("html", "url"),
    [
        (f'<video poster="{PROBE}/video_poster" height="1" width="1"></video>',
         f"{PROBE}/video_poster"),
        (f'<video width="1" height="1" src="{PROBE}/video"></video>', f"{PROBE}/video"),
        (f'<audio controls autoplay preload src="{PROBE}/audio" type="audio/mpeg"></audio>',
         f"{PROBE}/audio"),
        (f'<video width=1 height=1><source src="{PROBE}/source" type="video/mp4"></video>',
         f"{PROBE}/source"),
        (f'<object data="{PROBE}/object" width="1" height="1"></object>', f"{PROBE}/object"),
        (f'<embed src="{PROBE}/embed" width="1" height="1">', f"{PROBE}/embed"),
        (f'<iframe src="{PROBE}/iframe" width="1" height="1"></iframe>', f"{PROBE}/iframe"),
        (f'<svg><image href="{PROBE}/svg_image" width="1" height="1"/></svg>',
         f"{PROBE}/svg_image"),
        (f'<svg><image xlink:href="{PROBE}/svg_xlink" width="1" height="1"/></svg>',
         f"{PROBE}/svg_xlink"),
        (f'<svg><filter><feImage href="{PROBE}/feimage" width=1 height=1 /></filter></svg>',
         f"{PROBE}/feimage"),
    ],
)  # fmt: skip
def test_media_objects_frames_and_svg_images_are_fetches(
    rules: DetectionRules, html: str, url: str
) -> None:
    candidate = only(run(rules, html))
    assert candidate.url == url
    removed = at(html, candidate.removal_span.start, candidate.removal_span.end)
    assert removed.strip().startswith(("src=", "poster=", "data=", "href=", "xlink:href="))


def test_a_video_keeps_its_content_source_when_its_poster_tracks(rules: DetectionRules) -> None:
    html = f'<video src="https://cdn.shop.example/clip.mp4" poster="{LITMUS}"></video>'
    candidate = only(run(rules, html))
    assert candidate.url == LITMUS
    assert at(html, candidate.removal_span.start, candidate.removal_span.end) == (
        f' poster="{LITMUS}"'
    )


# ---------------------------------------------------------------------------------------------
# <base href>


def test_relative_urls_resolve_against_the_base(rules: DetectionRules) -> None:
    html = (
        '<head><base href="https://pixel.inbox.exacttarget.com/"></head>'
        '<img src="pixel.gif?r=3f5e2b9c1d&amp;c=8271&amp;j=55201">'
    )
    candidate = only(run(rules, html))
    assert (candidate.url, candidate.rule) == (SFMC, "sfmc-pixel")
    assert at(html, candidate.url_span.start, candidate.url_span.end).startswith("pixel.gif?")


@pytest.mark.parametrize(
    "reference",
    [
        '<td background="a1b2c3d4?d=ana">',
        '<div style="background-image:url(a1b2c3d4?d=ana)">',
        "<style>#_t{background-image:url('a1b2c3d4?d=ana')}</style>",
        '<link rel="stylesheet" href="/a1b2c3d4?d=ana">',
        '<img srcset="a1b2c3d4?d=ana 2x">',
    ],
)
def test_every_place_resolves_against_the_base(rules: DetectionRules, reference: str) -> None:
    html = f'<base href="//a1b2c3d4.emltrk.com/">{reference}'
    candidate = only(run(rules, html))
    assert candidate.url == "https://a1b2c3d4.emltrk.com/a1b2c3d4?d=ana"
    assert candidate.rule == "litmus-open"


def test_only_the_first_base_with_an_href_counts() -> None:
    from relay.detect.htmlscan import scan_document

    html = (
        '<base target="_blank"><base href="https://www.shop.example/">'
        '<base href="https://a1b2c3d4.emltrk.com/"><img src="a.png">'
    )
    _, base = scan_document(html)
    assert base is not None and html[base[0] : base[1]] == "https://www.shop.example/"


def test_a_base_in_a_comment_or_without_http_changes_nothing(rules: DetectionRules) -> None:
    for base in ('<!-- <base href="https://a1b2c3d4.emltrk.com/"> -->', '<base href="cid:x/">'):
        assert run(rules, f'{base}<img src="a1b2c3d4?d=ana" width=1 height=1>').candidates == ()


# ---------------------------------------------------------------------------------------------
# CSS: escapes, image-set(), @import, comments


@pytest.mark.parametrize(
    "css",
    [
        "background:u\\72l(https://a1b2c3d4.emltrk.com/a1b2c3d4?d=ana)",
        "background:\\75 rl(https://a1b2c3d4.emltrk.com/a1b2c3d4?d=ana)",
        "background:\\55RL('https://a1b2c3d4.emltrk.com/a1b2c3d4?d=ana')",
        "background:\\000075\\72\\6c(https://a1b2c3d4.emltrk.com/a1b2c3d4?d=ana)",
        "background:url(https://a1b2c3d4\\2e emltrk.com/a1b2c3d4?d\\3d ana)",
        "background:url(https://a1b2c3d4.emltrk\\.com/a1b2c3d4?d=ana)",
        "background:/* x */url(https://a1b2c3d4.emltrk.com/a1b2c3d4?d=ana)",
    ],
)
def test_css_escapes_in_url_are_read_as_a_browser_does(rules: DetectionRules, css: str) -> None:
    for html in (f'<div style="{css}">x</div>', f"<style>#_t{{{css}}}</style>"):
        candidate = only(run(rules, html))
        assert candidate.url == "https://a1b2c3d4.emltrk.com/a1b2c3d4?d=ana", html
        assert candidate.rule == "litmus-open"


def test_a_url_the_comment_splits_is_no_fetch(rules: DetectionRules) -> None:
    assert run(rules, "<style>#_t{background:url/**/(//a1b2c3d4.emltrk.com/x?d=a)}</style>") == (
        run(rules, "<style></style>")
    )


@pytest.mark.parametrize("function", ["image-set", "-webkit-image-set", "IMAGE-SET"])
def test_each_image_set_candidate_is_found(rules: DetectionRules, function: str) -> None:
    css = (
        f"background-image:{function}('{LITMUS}&x=1' 1x, url('{LITMUS}&x=2') 2x,"
        f' "{LITMUS}&x=3" type("image/avif"))'
    )
    detection = run(rules, f"<style>#_t{{{css}}}</style>")
    assert [c.url for c in detection.candidates] == [f"{LITMUS}&x={n}" for n in (1, 2, 3)]
    # a string inside a nested function is no URL
    assert run(rules, '<style>a{b:image-set("x.png" type("//a1b2c3d4.emltrk.com/"))}</style>') == (
        run(rules, "<style></style>")
    )


def test_image_set_strings_quoted_with_character_references_are_found(
    rules: DetectionRules,
) -> None:
    """A style attribute is decoded before CSS reads it (Tutanota's sanitizer tests quote with
    &#39;): image-set(&quot;...&quot; 1x) is a string, so a candidate a client fetches."""
    css = (
        f"background-image:-webkit-image-set(&quot;{LITMUS}&amp;x=1&quot; 1x,"
        f" &#39;{LITMUS}&amp;x=2&#39; 2x)"
    )
    detection = run(rules, f'<div style="{css}">x</div>')
    assert [c.url for c in detection.candidates] == [f"{LITMUS}&x={n}" for n in (1, 2)]


@pytest.mark.parametrize(
    "rule",
    ['@import"{u}";', "@import/**/'{u}';", '@import /* a */ /* b */ "{u}" screen;',
     "@\\69mport '{u}';", "@import url({u});", "@import URL( '{u}' );"],
)  # fmt: skip
def test_import_with_and_without_url(rules: DetectionRules, rule: str) -> None:
    html = f"<style>{rule.format(u=LITMUS)}</style>"
    candidate = only(run(rules, html))
    assert candidate.url == LITMUS
    assert candidate.element is ElementKind.STYLE_BLOCK


def test_escaped_size_properties_count(rules: DetectionRules) -> None:
    html = (
        '<img src="https://t.shop.example/o/Rx2PaPSqbA0OhwQoM4OC" '
        'style="w\\69 dth:1px;\\68 eight:1px">'
    )
    candidate = only(run(rules, html))
    assert (candidate.width, candidate.height) == (1, 1)


# ---------------------------------------------------------------------------------------------
# character references in attributes (WHATWG HTML 13.2.5.72)


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq&amp&u=1", "?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq&&u=1"),
        ("?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq&lt", "?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq<"),
        # a legacy name followed by a letter, a digit or "=" stays as written
        ("?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq&ampu=1", "?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq&ampu=1"),
        # an unknown name with ";" stays too, even if a legacy one starts it
        ("?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq&ampx;", "?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq&ampx;"),
    ],
)
def test_references_without_semicolon_as_html5_reads_them(
    rules: DetectionRules, written: str, read: str
) -> None:
    html = f'<img src="https://u1.ct.sendgrid.net/wf/open{written}">'
    assert only(run(rules, html)).url == f"https://u1.ct.sendgrid.net/wf/open{read}"


def test_the_rewrite_neutralises_a_style_sheet_in_place(rules: DetectionRules) -> None:
    html = f'<link rel="stylesheet" href="{LITMUS}">'
    candidate = only(run(rules, html))
    out = html[: candidate.url_span.start] + TRANSPARENT_GIF + html[candidate.url_span.end :]
    assert out == f'<link rel="stylesheet" href="{TRANSPARENT_GIF}">'
