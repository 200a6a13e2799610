"""Detection unit tests: every hiding place, the spans the rewrite stage relies on, the
heuristics and what is never a tracker."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.detect.trackers import DetectionRules, attribute_url, detect
from relay.model import Action, ElementKind, Purpose
from tests.support.trackers import at, detection_rules, message, only, part, run

PIXEL = "https://u1.ct.sendgrid.net/wf/open?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq"
UNKNOWN = "https://mx.northwind-mail.example/px/Rx2PaPSqbA0OhwQoM4OCFmqOTiDgZo.gif"


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> DetectionRules:
    return detection_rules(tmp_path_factory.mktemp("rules"))


# ---------------------------------------------------------------------------------------------
# img src: quoting, case, layout of attributes


@pytest.mark.parametrize(
    "tag",
    [
        f'<img src="{PIXEL}" width="1" height="1" alt="">',
        f"<img src='{PIXEL}' alt=''>",
        f"<img src={PIXEL} alt=x>",
        f'<IMG SRC="{PIXEL}" ALT="">',
        f'<img\n  alt=""\n  src = "{PIXEL}"\n  width="1"\n/>',
        f'<img alt="a > b" src="{PIXEL}">',
    ],
)
def test_img_src_any_quoting_case_and_layout(rules: DetectionRules, tag: str) -> None:
    html = f"<p>Hello</p>{tag}<p>Bye</p>"
    candidate = only(run(rules, html))
    assert candidate.url == PIXEL
    assert candidate.rule == "sendgrid-open"
    assert candidate.element is ElementKind.IMG
    assert at(html, candidate.url_span.start, candidate.url_span.end) == PIXEL
    assert at(html, candidate.removal_span.start, candidate.removal_span.end) == tag
    assert candidate.element_text == tag


def test_entities_in_url_are_decoded_but_the_span_is_as_written(rules: DetectionRules) -> None:
    written = "https://acme.us5.list-manage.com/track/open.php?u=1a2b&amp;id=3c4d&#x26;e=5e6f"
    html = f'<img src="{written}" width="1" height="1">'
    candidate = only(run(rules, html))
    assert candidate.url == "https://acme.us5.list-manage.com/track/open.php?u=1a2b&id=3c4d&e=5e6f"
    assert at(html, candidate.url_span.start, candidate.url_span.end) == written
    assert candidate.identifying_params == ("e",)


def test_legacy_entity_without_semicolon_is_not_decoded(rules: DetectionRules) -> None:
    html = f'<img src="{PIXEL}&copy=1" width="1" height="1">'
    assert only(run(rules, html)).url == PIXEL + "&copy=1"


# ---------------------------------------------------------------------------------------------
# srcset and <picture>


def test_srcset_candidate_removal_keeps_the_list_valid(rules: DetectionRules) -> None:
    srcset = f"{PIXEL} 1x, https://cdn.shop.example/logo@2x.png 2x"
    html = (
        f'<img src="https://cdn.shop.example/logo.png" srcset="{srcset}" width="140" height="40">'
    )
    candidate = only(run(rules, html))
    assert candidate.element is ElementKind.IMG_SRCSET
    assert candidate.url == PIXEL
    removed = at(html, candidate.removal_span.start, candidate.removal_span.end)
    assert removed == f"{PIXEL} 1x, "
    after = html[: candidate.removal_span.start] + html[candidate.removal_span.end :]
    assert 'srcset="https://cdn.shop.example/logo@2x.png 2x"' in after


def test_last_srcset_candidate_takes_its_leading_comma(rules: DetectionRules) -> None:
    source = f'<source srcset="https://cdn.shop.example/a.webp 1x,{PIXEL} 2x" type="image/webp">'
    img = '<img src="https://cdn.shop.example/a.png" width="300" height="200">'
    html = f"<picture>{source}{img}</picture>"
    candidate = only(run(rules, html))
    assert candidate.element is ElementKind.SOURCE_SRCSET
    after = html[: candidate.removal_span.start] + html[candidate.removal_span.end :]
    assert 'srcset="https://cdn.shop.example/a.webp 1x"' in after


# ---------------------------------------------------------------------------------------------
# background attribute, inline style, <style> blocks


def test_background_attribute_removal_takes_leading_space(rules: DetectionRules) -> None:
    html = f'<table><tr><td width="600" background="{PIXEL}" bgcolor="#fff">x</td></tr></table>'
    candidate = only(run(rules, html))
    assert candidate.element is ElementKind.BACKGROUND_ATTR
    assert at(html, candidate.removal_span.start, candidate.removal_span.end) == (
        f' background="{PIXEL}"'
    )


def test_inline_style_url_removal_is_one_declaration(rules: DetectionRules) -> None:
    html = f"<td style=\"color:red; background-image:url('{PIXEL}');width:1px;height:1px\">x</td>"
    candidate = only(run(rules, html))
    assert candidate.element is ElementKind.STYLE_ATTR
    assert at(html, candidate.removal_span.start, candidate.removal_span.end) == (
        f"background-image:url('{PIXEL}');"
    )
    assert (candidate.width, candidate.height) == (1, 1)


def test_inline_style_url_with_entity_quotes(rules: DetectionRules) -> None:
    html = f'<div style="background:url(&quot;{PIXEL}&quot;)">x</div>'
    candidate = only(run(rules, html))
    assert at(html, candidate.url_span.start, candidate.url_span.end) == PIXEL
    assert at(html, candidate.removal_span.start, candidate.removal_span.end) == (
        f"background:url(&quot;{PIXEL}&quot;)"
    )


def test_style_block_print_and_forward_rules(rules: DetectionRules) -> None:
    printed = "https://a1b2c3.emltrk.com/a1b2c3?p&d=reader"
    forwarded = "https://a1b2c3.emltrk.com/a1b2c3?f&d=reader"
    html = (
        "<style>body{margin:0}\n"
        f"@media print {{ #_t {{ background-image: url('{printed}'); }} }}\n"
        f"div.OutlookMessageHeader, blockquote #_t {{ background:url({forwarded}) }}\n"
        "/* background:url(https://a1b2c3.emltrk.com/commented) */</style>"
        '<div id="_t"></div>'
    )
    found = run(rules, html).candidates
    assert [c.url for c in found] == [printed, forwarded]
    assert all(c.element is ElementKind.STYLE_BLOCK and c.rule == "litmus-open" for c in found)
    assert at(html, found[0].removal_span.start, found[0].removal_span.end) == (
        f"background-image: url('{printed}');"
    )
    assert at(html, found[1].removal_span.start, found[1].removal_span.end) == (
        f"background:url({forwarded})"
    )


def test_style_block_import(rules: DetectionRules) -> None:
    sheet = "https://a1b2c3.emltrk.com/sheet.css"
    html = f'<style>@import "{sheet}"; p{{color:red}}</style>'
    candidate = only(run(rules, html))
    assert at(html, candidate.removal_span.start, candidate.removal_span.end) == (
        f'@import "{sheet}";'
    )


# ---------------------------------------------------------------------------------------------
# Outlook conditional comments, ordinary comments, AMP


def test_vml_inside_conditional_comment_is_found(rules: DetectionRules) -> None:
    image = '<v:image xmlns:v="urn:schemas-microsoft-com:vml" style="width:1px;height:1px;" ' + (
        f'src="{UNKNOWN}" />'
    )
    fill = '<v:fill type="tile" src="https://t.example.net/o/abc123.gif"></v:fill>'
    html = f"<!--[if gte mso 9]>{image}<v:rect>{fill}</v:rect><![endif]--><p>x</p>"
    found = run(rules, html).candidates
    assert [c.element for c in found] == [ElementKind.VML, ElementKind.VML]
    assert at(html, found[0].removal_span.start, found[0].removal_span.end) == image
    assert at(html, found[1].removal_span.start, found[1].removal_span.end) == fill
    assert [c.rule for c in found] == ["tiny-size", "outlook-only-image"]


def test_ordinary_comments_are_ignored(rules: DetectionRules) -> None:
    html = f'<!-- old pixel: <img src="{PIXEL}" width="1" height="1"> --><p>x</p>'
    assert run(rules, html).candidates == ()


def test_downlevel_revealed_comment_content_is_scanned(rules: DetectionRules) -> None:
    html = f'<!--[if !mso]><!--><img src="{PIXEL}" alt=""><!--<![endif]-->'
    assert only(run(rules, html)).url == PIXEL


def test_amp_part_amp_img_removal_includes_closing_tag(rules: DetectionRules) -> None:
    pixel = f'<amp-img src="{PIXEL}" width="1" height="1" layout="fixed"></amp-img>'
    content = '<amp-img src="https://cdn.shop.example/a.png" width="300" height="200"></amp-img>'
    amp = pixel + content
    html = "<p>html</p>"
    detection = detect(
        message(part(0, html), part(1, amp, "text/x-amp-html")), rules, ["ana@example.org"]
    )
    candidate = only(detection)
    assert candidate.part_index == 1
    assert candidate.element is ElementKind.AMP_IMG
    assert at(amp, candidate.removal_span.start, candidate.removal_span.end) == pixel


def test_input_type_image(rules: DetectionRules) -> None:
    html = f'<form><input type="image" src="{PIXEL}" width="1" height="1"></form>'
    assert only(run(rules, html)).element is ElementKind.INPUT_IMAGE


def test_candidate_ids_run_over_parts(rules: DetectionRules) -> None:
    first = f'<img src="{PIXEL}" alt="">'
    second = f'<amp-img src="{PIXEL}" width="1" height="1"></amp-img>'
    detection = detect(
        message(part(0, first), part(1, "text"), part(2, second, "text/x-amp-html")),
        rules,
        ["ana@example.org"],
    )
    assert [(c.id, c.part_index) for c in detection.candidates] == [(0, 0), (1, 2)]


# ---------------------------------------------------------------------------------------------
# Never a tracker


@pytest.mark.parametrize(
    "tag",
    [
        '<img src="cid:logo@inline" width="1" height="1">',
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" width="1" height="1">',
        '<img src="https://cdn.shop.example/img/divider.png" width="600" height="1">',
        '<img src="https://cdn.shop.example/img/rule.png" height="1">',
        '<img src="https://cdn.shop.example/img/logo-mobile.png" width="100" height="30" '
        'style="display:none;max-height:0;overflow:hidden;mso-hide:all;">',
        '<img src="https://cdn.shop.example/img/spacer.gif" width="1" height="1">',
        '<img src="https://mcusercontent.com/f073ff80b9465aef7ac86d66c/images/7a644fb1-2853-ef86'
        '-dcfa-ea21818b904c.png" alt="">',
        '<img src="https://image.s4.exct.net/lib/fe9e6087413e3b2/m/1/66f850f1-578b-5c72-dc4e-'
        'e60caea63367.jpg" alt="">',
        '<img src="/relative/open.gif?id=4c2f1b7a9d0e3f5a8b7c6d5e" width="1" height="1">',
        f'<a href="{PIXEL}">a link to a pixel URL is a link</a>',
    ],
)
def test_never_a_tracker(rules: DetectionRules, tag: str) -> None:
    html = f'<img src="https://cdn.shop.example/img/logo.png" width="140" height="42">{tag}'
    assert run(rules, html).candidates == ()


def test_repeated_tiny_image_is_layout(rules: DetectionRules) -> None:
    bullet = '<img src="https://cdn.shop.example/img/dot.gif" width="4" height="4">'
    assert run(rules, bullet * 3).candidates == ()
    assert len(run(rules, bullet).candidates) == 1


def test_click_tracking_links_are_reported_with_their_rule(rules: DetectionRules) -> None:
    click = "https://gxfcz.us5.list-manage.com/track/click?u=a9f30b&amp;id=ec16c0&amp;e=ad3e21"
    html = f'<a href="{click}">Offer</a> <a href="https://shop.example/">Shop</a>'
    detection = run(rules, html)
    assert detection.candidates == ()
    assert [(link.url, link.rule) for link in detection.links] == [
        (
            "https://gxfcz.us5.list-manage.com/track/click?u=a9f30b&id=ec16c0&e=ad3e21",
            "mailchimp-click",
        ),
        ("https://shop.example/", None),
    ]


# ---------------------------------------------------------------------------------------------
# Heuristics


@pytest.mark.parametrize(
    ("tag", "rule"),
    [
        (f'<img src="{UNKNOWN}" width="1" height="1">', "tiny-size"),
        (f'<img src="{UNKNOWN}" width="0" height="0">', "tiny-size"),
        (f'<img src="{UNKNOWN}" width="0">', "tiny-size"),
        (
            f'<img src="{UNKNOWN}" style="width:1px !important; height: 1px !important">',
            "tiny-size",
        ),
        (
            f'<img src="{UNKNOWN}" width="300" height="200" style="width:1px;height:1px">',
            "tiny-size",
        ),
        (f'<img src="{UNKNOWN}" width="5" height="5">', "tiny-size"),
        (f'<img src="{UNKNOWN}" style="max-width:1px;max-height:1px">', "max-size"),
        (f'<img src="{UNKNOWN}" alt="">', "opaque-token"),
    ],
)
def test_size_and_token_heuristics(rules: DetectionRules, tag: str, rule: str) -> None:
    html = f'<img src="https://cdn.shop.example/img/logo.png" width="140" height="42">{tag}'
    candidate = only(run(rules, html))
    assert candidate.rule == rule
    assert candidate.vendor == ""
    assert candidate.purpose is Purpose.CAMPAIGN_PERFORMANCE
    assert candidate.no_consent_action is Action.NEUTRALISE


def test_token_on_a_host_serving_other_images_is_content(rules: DetectionRules) -> None:
    html = (
        '<img src="https://img.shop.example/p/8f2c1d9e4b3a1a2b3c4d5e6f7a8b9c0d.jpg" alt="">'
        '<img src="https://img.shop.example/p/logo.png" width="140" height="42">'
    )
    assert run(rules, html).candidates == ()


def test_six_by_six_is_not_tiny(rules: DetectionRules) -> None:
    html = '<img src="https://cdn.shop.example/icon.png" width="6" height="6">'
    assert run(rules, html).candidates == ()


def test_recipient_address_in_url(rules: DetectionRules) -> None:
    address = "Ana.Lopez@Example.org"
    lower = address.lower().encode()
    forms = [
        "https://img.shop.example/banner.png?who=ana.lopez@example.org",
        "https://img.shop.example/banner.png?who=ana.lopez%40example.org",
        "https://img.shop.example/banner.png?who=" + base64.b64encode(lower).decode(),
        "https://img.shop.example/banner.png?t=" + base64.urlsafe_b64encode(b"xy" + lower).decode(),
        "https://img.shop.example/banner.png?h=" + hashlib.sha256(lower).hexdigest(),
    ]
    for url in forms:
        html = f'<img src="{url}" width="600" height="300">'
        candidate = only(run(rules, html, (address,)))
        assert candidate.rule == "recipient-in-url", url
        # A visible image: its identifying parameter is dropped rather than the image.
        assert candidate.identifying_params in (("who",), ("t",), ("h",))
        assert candidate.no_consent_action is Action.STRIP_PARAMS
    other = run(rules, f'<img src="{forms[0]}" width="600" height="300">', ("bob@example.org",))
    assert other.candidates == ()


# ---------------------------------------------------------------------------------------------
# App labels, default actions, placeholders


def test_app_label_on_a_content_image(rules: DetectionRules) -> None:
    attr = ' data-relay-purpose="deliverability"'
    html = f'<img src="https://cdn.shop.example/p.png" width="300" height="200"{attr} alt="">'
    candidate = only(run(rules, html))
    assert candidate.rule == "app-label"
    assert candidate.labelled
    assert candidate.purpose is Purpose.DELIVERABILITY
    assert candidate.purpose_attr_span is not None
    span = candidate.purpose_attr_span
    assert at(html, span.start, span.end) == attr
    assert candidate.no_consent_action is Action.REMOVE


def test_app_label_overrides_the_signature_purpose(rules: DetectionRules) -> None:
    html = f"<img src='{PIXEL}' data-relay-purpose='fraud_detection' width=1 height=1>"
    candidate = only(run(rules, html))
    assert (candidate.rule, candidate.purpose) == ("sendgrid-open", Purpose.FRAUD_DETECTION)
    assert candidate.purpose_attr_span is not None
    span = candidate.purpose_attr_span
    assert at(html, span.start, span.end) == " data-relay-purpose='fraud_detection'"


def test_unknown_label_is_the_strictest_purpose(rules: DetectionRules) -> None:
    html = '<img src="https://cdn.shop.example/p.png" data-relay-purpose="whatever">'
    assert only(run(rules, html)).purpose is Purpose.CAMPAIGN_PERFORMANCE


def test_default_actions(rules: DetectionRules) -> None:
    ad = "https://sli.komando.com/imp?s=810140&amp;e=ana@example.org&amp;p=1647437190982"
    visible = only(run(rules, f'<img src="{ad}" width="300" height="250">'))
    assert visible.rule == "liveintent-impression"
    assert visible.purpose is Purpose.CROSS_CONTEXT_PROFILING
    assert visible.no_consent_action is Action.STRIP_PARAMS
    pixel = only(run(rules, f'<img src="{PIXEL}" alt="">'))
    assert pixel.no_consent_action is Action.NEUTRALISE


def test_placeholders_in_html_and_text(rules: DetectionRules) -> None:
    html = '<a href="{{relay:withdraw_url}}">Stop tracking</a> {{relay:unknown}}'
    text = "Preferences: {{relay:preferences_url}}\nConsent: {{ relay:consent_url }}\n"
    detection = detect(message(part(0, html), part(1, text, "text/plain")), rules, [])
    assert [(p.part_index, p.name) for p in detection.placeholders] == [
        (0, "withdraw_url"),
        (1, "preferences_url"),
        (1, "consent_url"),
    ]
    first = detection.placeholders[0]
    assert at(html, first.span.start, first.span.end) == "{{relay:withdraw_url}}"
    assert detection.links == ()  # the placeholder is not an http(s) link


# ---------------------------------------------------------------------------------------------
# Malformed input


@pytest.mark.parametrize(
    "html",
    [
        "<img src='https://x.example/a.gif",
        "<<<<img<img<img",
        "<style>td{background:url(",
        "<!-- never closed <img src=x>",
        '<img src="" srcset=",,, ,">',
        "<td style=\"background:url()\" background=''>",
        '<v:fill src="https://t.example.net/o/1.gif"',
        "<amp-img src='https://t.example.net/o/1.gif'>" * 3,
        "\u0130" * 10 + f'<IMG SRC="{PIXEL}">',
    ],
)
def test_malformed_html_never_raises(rules: DetectionRules, html: str) -> None:
    detection = run(rules, html)
    for candidate in detection.candidates:
        assert 0 <= candidate.url_span.start <= candidate.url_span.end <= len(html)
        assert candidate.removal_span.start <= candidate.url_span.start


def test_uppercase_characters_that_grow_when_lowered_keep_offsets(
    rules: DetectionRules, tmp_path: Path
) -> None:
    html = "\u0130\u0130" + f'<IMG SRC="{PIXEL}" WIDTH=1 HEIGHT=1>'
    candidate = only(run(rules, html))
    assert at(html, candidate.url_span.start, candidate.url_span.end) == PIXEL


# ---------------------------------------------------------------------------------------------
# Properties over generated HTML

FRAGMENTS = [
    "<p>", "</p>", "<td>", "<!--", "-->", "<!--[if mso]>", "<![endif]-->", "<style>", "</style>",
    '"', "'", ">", "<", "&amp;", " ", "\n", "url(", ")", ";", "{", "}", ",",
    f'<img src="{PIXEL}" width="1" height="1">',
    f"<img src='{UNKNOWN}' style='width:1px;height:1px'>",
    '<img src="https://cdn.shop.example/a.png" width="300" height="200">',
    f'<img srcset="{PIXEL} 1x, https://cdn.shop.example/a.png 2x">',
    f'<td background="{PIXEL}">',
    f"<div style=\"background:url('{PIXEL}')\">",
    f"b{{background:url({PIXEL})}}",
    f'<v:fill src="{UNKNOWN}"/>',
    f'<amp-img src="{PIXEL}" width=1 height=1></amp-img>',
    ' data-relay-purpose="deliverability"',
    f'<a href="{PIXEL}">',
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40))
def test_spans_hold_on_generated_html(rules: DetectionRules, pieces: list[str]) -> None:
    html = "".join(pieces)
    detection = run(rules, html)
    for n, candidate in enumerate(detection.candidates):
        assert candidate.id == n
        url, removal = candidate.url_span, candidate.removal_span
        assert 0 <= removal.start <= url.start < url.end <= removal.end <= len(html)
        assert attribute_url(html[url.start : url.end]) == candidate.url or (
            candidate.element is ElementKind.STYLE_BLOCK
        )
        if candidate.purpose_attr_span is not None:
            span = candidate.purpose_attr_span
            assert "data-relay-purpose" in html[span.start : span.end]


def test_background_on_a_link_and_on_an_img_style(rules: DetectionRules) -> None:
    html = (
        f'<a href="https://shop.example/" style="display:block;background:url({PIXEL})">x</a>'
        f'<img src="https://cdn.shop.example/a.png" width="300" height="200" '
        "style=\"background-image:url('https://a1b2.emltrk.com/a1b2?d=x')\">"
    )
    found = run(rules, html).candidates
    assert [(c.element, c.rule) for c in found] == [
        (ElementKind.STYLE_ATTR, "sendgrid-open"),
        (ElementKind.STYLE_ATTR, "litmus-open"),
    ]
    # An unknown URL as the background of a declared 300x200 image is content, not a pixel.
    unknown = html.replace("https://a1b2.emltrk.com/a1b2?d=x", UNKNOWN)
    assert [c.rule for c in run(rules, unknown).candidates] == ["sendgrid-open"]
