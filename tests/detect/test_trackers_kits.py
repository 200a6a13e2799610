"""The shapes of real bulk-mail kits that no vendor signature names (issue 12, unsized pixels).

Each case is a URL shape read in github.com/rf-peixoto/phishing_pot (commit 8e207b5f), written
here with our own hosts and tokens: the pixel that must be found beside the content images of
its email that must not be, so each heuristic is shown to fire and to hold back.
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from relay.core.rewrite import strip_url
from relay.detect.trackers import detect, load_detection
from relay.model import ParsedMessage, Part
from relay.rulefiles import load_rules

RULES = load_detection(load_rules())
B64 = "dzEzT2lCMVNEQTdYYk12SFY4V0RJeFlwbmt2MTBxOHdZQmN1NklTTUlNWWFIdGxyTzRWbFlObm1Pbk8rTHNRTVB6UGlC"


def _rules(html: str) -> dict[str, str]:
    """URL -> rule of every candidate of ``html`` (no recipients: URL shapes alone)."""
    part = Part(0, "text/html", "utf-8", "8bit", 0, 0, 0, f"<html><body>{html}</body></html>")
    found = detect(ParsedMessage(b"", (), 0, (part,)), RULES, []).candidates
    return {c.url: c.rule for c in found}


def _img(url: str, size: str = "") -> str:
    return f'<img src="{url}"{size} alt="">'


LOGOS = _img("https://kit.example/e895fe29e06bca1.png", ' width="600"') + _img(
    "https://kit.example/6d133775f65bcf8.jpg", ' width="200" height="80"'
)


def test_a_pixel_on_the_host_of_its_logos_is_the_odd_one_out() -> None:
    pixel = f"https://kit.example/{B64}__"
    assert _rules(LOGOS + _img(pixel)) == {pixel: "lone-dynamic-image"}


def test_a_gallery_of_extensionless_images_is_content() -> None:
    """A photo service serving every picture from an extensionless path: more than one such
    path on the host, so none is the odd one out."""
    gallery = "".join(
        _img(f"https://photos.example/v/{token}")
        for token in ("5TCw6bABF0412xQ9z", "rNCqfdABF0460kT3w", "EbhG06ABF0489mZ1p")
    )
    assert _rules(gallery + _img("https://photos.example/logo.png")) == {}


def test_a_static_file_among_files_is_not_the_odd_one_out() -> None:
    logo = "https://kit.example/header-banner.png"
    assert _rules(LOGOS + _img(logo)) == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://news.example/cl/531_md/31/2/82/23/2459859",
        "http://news.exampleop/272_md/31/2/58/23/2459859",  # "op" glued to the host
        "http://cars.example/CtokNrX7GVVPXC/UX/qWl4nv0LF6AqHd/Y5M7r5Bck/j7nsvlRX1R5gx/v5/Ux",
        "http://shop.example/7eEdCx7012edXy63xcjyfvwxdb58YZOGOTCCBWTDOPJ127587SKVV5368Y1",
        "http://ahv3ctpms4e.files.example/2/8d737180-1dfe-4324-a7c0-ba3dccab16b0.png",
    ],
)
def test_kit_paths_whose_host_changes_every_campaign(url: str) -> None:
    shared = _img(url.rsplit("/", 1)[0] + "/logo.png", ' width="300"')  # the kit's host serves more
    assert _rules(shared + _img(url)) == {url: "kit-path"}


def test_kit_paths_declared_visible_are_content() -> None:
    url = "http://203.0.113.8/op/474_md/2010/4/771/33/343611"
    assert _rules(_img("http://203.0.113.8/a.png", ' width="9"') + _img(url, ' width="600"')) == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://news.example/[open]",  # a merge tag the kit left unfilled
        "http://news.example/t?email=&templateType=notice&user=p",  # a slot for the address
        "http://news.example/o/%7B%7Bsubscriber_id%7D%7D",
        "http://news.example/o/*|UNIQID|*",
        "https://T0V8kweX1aIxviB-p.tracker34.example/?o=1793&a=101&k=6044",  # per-recipient host
    ],
)
def test_slots_for_an_identifier_are_identifiers(url: str) -> None:
    content = _img("https://cdn.example/banner.png", ' width="600"')
    assert _rules(content + _img(url)) == {url: "opaque-token"}


def test_a_size_in_a_file_name_is_not_an_identifier() -> None:
    """Wikimedia's thumbnails: ``1280px-Logo.svg.png`` is a size and words."""
    url = "https://images.example.org/thumb/8/8e/Rossmann_Logo.svg/1280px-Rossmann_Logo.svg.png"
    assert _rules(_img(url)) == {}


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("https://is.gd/JOFG4V", "shortener-image"),
        ("https://t.co/HqQbomyQ21", "shortener-image"),
        ("https://news.example/email/645ec6473ae98072210173.gif", "mautic-open"),
        ("https://aff.example/i.ashx?a=7395&oc=25338&c=65964&m=3&s1=SUB_ID", "cake-impression"),
    ],
)
def test_counters_behind_an_image(url: str, rule: str) -> None:
    content = _img("https://cdn.example/banner.png", ' width="600"')
    assert _rules(content + _img(url)) == {url: rule}


@pytest.mark.parametrize(
    "proxied",
    [
        # Gmail's proxy keeps the original after "#" (a message forwarded from Gmail).
        "https://ci5.googleusercontent.com/proxy/S3N7ufKbN-G_wvJiU0fPBGsZ7FkkE3AaGiMyaQB=s0-d-e1-ft"
        "#https://email-clicks.news.example/wf/open?upn=k8m9WgLoBOFrQgAUa4dBcrbaY8",
        # Outlook's proxy carries it percent-encoded in u=.
        "https://imgproxy-prod.services.web.outlook.com/proxy/?u=https%3A%2F%2Fu1.ct.sendgrid.net"
        "%2Fwf%2Fopen%3Fupn%3Dk8m9WgLoBOFrQgAUa4dBcrbaY8&t=eyJhbGciOiJSUzI1NiJ9&r=p&s=c",
    ],
)
def test_a_tracker_behind_a_webmail_image_proxy_is_the_tracker(proxied: str) -> None:
    """The proxy fetches the original when the image is shown: the vendor learns of the open;
    the rule is the one the original URL has."""
    content = _img("https://cdn.example/banner.png", ' width="600"')
    original = proxied.partition("#")[2] or unquote(proxied.partition("u=")[2].partition("&")[0])
    assert _rules(_img(original))[original].endswith("open")
    assert _rules(content + _img(proxied)) == {proxied: _rules(_img(original))[original]}


def test_a_picture_behind_a_webmail_proxy_stays() -> None:
    proxied = (
        "https://ci3.googleusercontent.com/proxy/qn2YWy8Jg-7xMNqfnniqUuj=s0-d-e1-ft"
        "#https://cdn.example/images/summer-sale.png"
    )
    assert _rules(_img(proxied, ' width="600" height="300"')) == {}


def test_extra_slashes_after_the_scheme_still_name_the_host() -> None:
    """``http:///198.51.100.7/track/...``: Chromium fetches it from 198.51.100.7."""
    url = "http:///198.51.100.7/track/3WcfQu542fPya136wgljdtwotl37ZHYYBCUFZPYZXBT1115047IWDQ19336F4"
    assert _rules(_img(url)) == {url: "tracking-path"}


@pytest.mark.parametrize(
    "url",
    [
        "https://acmeassets2024prod.blob.core.windows.net/news/header",  # a storage account
        "https://d15k2d11r6t6rl.cloudfront.net/public/banner",  # a CloudFront distribution
    ],
)
def test_a_storage_host_name_is_not_a_per_recipient_host(url: str) -> None:
    content = _img("https://cdn.example/banner.png", ' width="600"')
    assert _rules(content + _img(url)) == {}


def test_anyones_address_in_an_image_url_names_a_person() -> None:
    """The sender's idea of the subscriber's address need not be the envelope recipient's."""
    logo = _img("https://shop.example/logo.png", ' width="200"')
    for url in (
        "http://shop.example/jane.doe@example.org",
        "http://shop.example/v?u=ana%40mail.example",
    ):
        assert _rules(logo + _img(url)) == {url: "address-in-url"}


def test_a_retina_file_name_is_not_an_address() -> None:
    logo = _img("https://shop.example/logo.png", ' width="200"')
    assert _rules(logo + _img("https://shop.example/img/badge@2x.png")) == {}


@pytest.mark.parametrize(
    ("proxied", "carrier"),
    [
        (
            "https://ci3.googleusercontent.com/proxy/qn2YWy8Jg-7xMNqfnniqUuj=s0-d-e1-ft"
            "#https://acme.us5.list-manage.com/track/open.php?u=1a2b&id=3c4d&e=5e6f",
            ("path:2",),
        ),
        (
            "https://imgproxy-prod.services.web.outlook.com/proxy/?u=https%3A%2F%2Facme.us5."
            "list-manage.com%2Ftrack%2Fopen.php%3Fu%3D1a2b%26id%3D3c4d%26e%3D5e6f&t=eyJhbGci",
            ("u",),
        ),
    ],
)
def test_a_proxied_trackers_identifier_cannot_slip_through_a_strip(
    proxied: str, carrier: tuple[str, ...]
) -> None:
    """Mailchimp's e= is inside the proxy's signature or u=: stripping it from the proxy URL
    would change nothing, so what carries the original is what a strip drops, and the proxy
    is left nothing to fetch."""
    part = Part(0, "text/html", "utf-8", "8bit", 0, 0, 0, _img(proxied))
    (found,) = detect(ParsedMessage(b"", (), 0, (part,)), RULES, []).candidates
    assert (found.rule, found.identifying_params) == ("mailchimp-open", carrier)
    stripped = strip_url(found.url, found.identifying_params)
    assert "qn2YWy8Jg" not in stripped.partition("#")[0] and "u=https" not in stripped
