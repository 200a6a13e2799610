"""Controllers: which controller a message belongs to, and how the settings name them."""

from __future__ import annotations

import pytest

from relay.core.controllers import IMPLICIT_ID, Controllers, build_controllers, from_domain
from relay.errors import SettingsError
from relay.settings import parse_settings

S = '[controllers.shop]\nname = "x"\ndomains = ["a.example"]\n'
TWO = """
[controllers.shop]
name = "Shop SAS"
domains = ["shop.example"]
privacy_url = "https://shop.example/privacy"
contact = "privacy@shop.example"
third_parties = ["SendGrid"]

[controllers.club]
name = "Running Club"
domains = ["club.example", "news.shop.example"]
"""


def registry(text: str = TWO) -> Controllers:
    return build_controllers(parse_settings(text, "c.toml", env={}).controllers)


def test_none_configured_is_one_implicit_controller_for_all_mail() -> None:
    controllers = registry("")
    assert controllers.implicit and controllers.ids == (IMPLICIT_ID,)
    owner = controllers.for_message(b"From: a@anything.example\r\n\r\nbody", "")
    assert owner is not None and owner.implicit and owner.unscoped and owner.scope == ""
    assert controllers.resolve(None).id == IMPLICIT_ID
    assert controllers.for_token("") is owner


def test_from_domain_and_subdomains_pick_the_most_specific_controller() -> None:
    controllers = registry()
    assert controllers.for_domain("shop.example").id == "shop"  # type: ignore[union-attr]
    assert controllers.for_domain("Mail.Shop.Example.").id == "shop"  # type: ignore[union-attr]
    assert controllers.for_domain("news.shop.example").id == "club"  # type: ignore[union-attr]
    assert controllers.for_domain("x.news.shop.example").id == "club"  # type: ignore[union-attr]
    assert controllers.for_domain("evilshop.example") is None
    assert controllers.for_domain("example") is None


def test_the_from_header_decides_then_the_envelope() -> None:
    controllers = registry()
    folded = (
        b"Subject: hi\r\nFrom: =?utf-8?q?Le_Club?=\r\n <news@club.example>\r\n"
        b"\r\nFrom: x@shop.example"
    )
    assert from_domain(folded) == "club.example"
    assert controllers.for_message(folded, "bounce@shop.example").id == "club"  # type: ignore[union-attr]
    # No From address at all: the envelope sender stands in.
    assert controllers.for_message(b"Subject: x\r\n\r\n", "b@shop.example").id == "shop"  # type: ignore[union-attr]
    # A From the relay covers not: no controller, whatever the envelope says.
    assert controllers.for_message(b"From: a@other.example\r\n\r\n", "b@shop.example") is None
    # Only the header block is read: a "From:" line in the body is not a header.
    assert from_domain(b"Subject: x\r\n\r\nFrom: a@shop.example\r\n") == ""


def test_owner_of_older_consent() -> None:
    one = registry('[controllers.shop]\nname = "Shop"\ndomains = ["shop.example"]\n')
    assert one.resolve(None).unscoped and one.resolve(None).scope == ""  # implied: only one
    two = registry()
    assert two.unscoped() is None and two.for_token("") is None
    assert two.resolve("club").scope == "club"
    flagged = registry(TWO.replace('third_parties = ["SendGrid"]', "existing_consent = true"))
    assert flagged.resolve("shop").scope == "" and flagged.for_token("").id == "shop"  # type: ignore[union-attr]


def test_resolve_names_the_choices() -> None:
    controllers = registry()
    with pytest.raises(ValueError, match=r"2 controllers are configured, name one \(shop, club\)"):
        controllers.resolve(None)
    with pytest.raises(ValueError, match=r"unknown controller 'nope' \(known: shop, club\)"):
        controllers.resolve("nope")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (S.replace("shop", "Shop"), "c.toml:1: controllers.Shop: an id"),
        (S.replace('name = "x"\n', ""), "c.toml:1: controllers.shop: name is required"),
        ('[controllers.shop]\nname = "x"\n', "controllers.shop: domains is required"),
        (S.replace("a.example", "nodot"), "c.toml:3: controllers.shop.domains: not a domain"),
        (TWO.replace('"club.example"', '"Shop.example"'),
         "controllers.club.domains: 'Shop.example' is also shop's"),
        (S + 'privacy_url = "ftp://x"\n', "privacy_url: must start with https://"),
        (S + 'nmae = "y"\n', "c.toml:4: controllers.shop.nmae: unknown key"),
        (S.replace("shop", "a") + "existing_consent = true\n" + S.replace("shop", "b").replace(
            "a.example", "b.example") + "existing_consent = true\n",
         "controllers.b.existing_consent: true for one only"),
        ("[controllers]\nshop = 3\n", "controllers.shop: must be a table"),
    ],
)  # fmt: skip
def test_bad_controller_settings_name_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(text, "c.toml", env={})
    assert expected in str(info.value)


def test_startup_description_names_the_domains() -> None:
    lines = registry().describe()
    assert lines[0] == "controller shop (Shop SAS): mail from shop.example (and subdomains)"
    assert "club.example (and subdomains), news.shop.example (and subdomains)" in lines[1]
    assert lines[-1] == "mail from any other domain gets no consent-based tracker"
    assert "implicit" in registry("").describe()[0]
