"""Classification: the order of the sources, the reason recorded, and content clues that can only
make a category stricter."""

from __future__ import annotations

import shutil

import pytest

from relay import replies
from relay.core.classify import classify, strictness
from relay.core.policy import Policy
from relay.core.policy_rules import load_policy
from relay.errors import MalformedMessage
from relay.model import Category, Envelope, Header, ParsedMessage, Part
from relay.rulefiles import SHIPPED_RULES, load_rules

SHIPPED = load_policy(load_rules())
ENVELOPE = Envelope(mail_from="news@shop.example", rcpt_tos=("a@example.org",))

RULES = """
[[classify]]
id = "billing"
description = "billing sender"
sender = ["billing@*"]
category = "transactional"

[[classify]]
id = "otp-user"
description = "login code service"
auth_user = ["OTP"]
category = "authentication"

[[classify]]
id = "city-hall"
description = "the city hall's mail server"
client = ["192.0.2.0/24", "2001:db8::/32"]
category = "public_service"

[[classify]]
id = "letters"
description = "From header of the newsletter"
header_from = ["letters@*.example"]
category = "newsletter"

[[classify]]
id = "off"
description = "switched off"
enabled = false
sender = ["*"]
category = "authentication"

[[content]]
id = "body-promo"
description = "promotion in the body"
body_words = ["limited offer"]
category = "marketing"
"""


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    root = tmp_path_factory.mktemp("classify")
    shipped, local = root / "shipped", root / "local"
    for name in ("policy/fr-cnil-2026.toml", "policy/strict.toml", "classify.toml"):
        (shipped / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHIPPED_RULES / name, shipped / name)
    local.mkdir()
    (local / "mine.toml").write_text(RULES, encoding="utf-8")
    return load_policy(load_rules(shipped, local))


def msg(*headers: tuple[str, str], html: str | None = None) -> ParsedMessage:
    fields = tuple(Header(name, value, 0, 0) for name, value in headers)
    parts: tuple[Part, ...] = ()
    if html is not None:
        parts = (Part(0, "text/html", "utf-8", "7bit", 0, 0, 0, html),)
    return ParsedMessage(b"", fields, 0, parts)


def env(**kw: str) -> Envelope:
    return Envelope(
        mail_from=kw.get("mail_from", "news@shop.example"),
        rcpt_tos=("a@example.org",),
        client_ip=kw.get("client_ip", "127.0.0.1"),
        auth_user=kw.get("auth_user"),
    )


# ---------------------------------------------------------------------------------------------
# Sources, in order


@pytest.mark.parametrize("value", ["transactional", " Transactional ", "TRANSACTIONAL"])
def test_header_category(value: str) -> None:
    got = classify(msg(("X-Relay-Category", value)), ENVELOPE, SHIPPED)
    assert got == (Category.TRANSACTIONAL, "header:X-Relay-Category")


@pytest.mark.parametrize("value", ["promo", "", "transactional; marketing"])
def test_unknown_header_category_is_refused_with_its_reply(value: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        classify(msg(("X-Relay-Category", value)), ENVELOPE, SHIPPED)
    assert info.value.reply.id == replies.BAD_CATEGORY.id
    assert info.value.reply.code == 554
    assert "marketing" in info.value.reply.message  # says which values are allowed


def test_header_beats_every_other_source(custom: Policy) -> None:
    message = msg(
        ("X-Relay-Category", "newsletter"),
        ("List-Unsubscribe", "<mailto:u@x>"),
        ("X-PM-Message-Stream", "outbound"),
    )
    got = classify(message, env(mail_from="billing@shop.example"), custom)
    assert got == (Category.NEWSLETTER, "header:X-Relay-Category")


def test_sender_rules_each_condition(custom: Policy) -> None:
    plain = msg()
    assert classify(plain, env(mail_from="Billing@shop.example"), custom) == (
        Category.TRANSACTIONAL,
        "rule:billing",
    )
    assert classify(plain, env(auth_user="otp"), custom) == (
        Category.AUTHENTICATION,
        "rule:otp-user",
    )
    assert classify(plain, env(client_ip="192.0.2.7"), custom) == (
        Category.PUBLIC_SERVICE,
        "rule:city-hall",
    )
    assert classify(plain, env(client_ip="2001:db8::1"), custom)[1] == "rule:city-hall"
    assert classify(plain, env(client_ip="not-an-ip"), custom)[1] == "default"
    from_letters = msg(("From", "Letters <letters@news.example>"))
    assert classify(from_letters, env(), custom) == (Category.NEWSLETTER, "rule:letters")
    # The disabled rule would match everything: it must not.
    assert classify(plain, env(), custom) == (Category.MARKETING, "default")


def test_sender_rules_beat_list_and_esp_headers(custom: Policy) -> None:
    message = msg(("List-Id", "<offers.shop.example>"), ("X-PM-Message-Stream", "broadcast"))
    assert classify(message, env(mail_from="billing@x.example"), custom)[1] == "rule:billing"


@pytest.mark.parametrize(
    "header",
    [
        ("List-Id", "Offers <offers.shop.example>"),
        ("List-Unsubscribe", "<https://shop.example/u>"),
        ("Precedence", "bulk"),
        ("Precedence", " List"),
    ],
)
def test_list_headers(header: tuple[str, str]) -> None:
    message = msg(header, ("X-PM-Message-Stream", "outbound"))
    assert classify(message, ENVELOPE, SHIPPED) == (Category.MARKETING, "list-headers")


def test_precedence_other_than_bulk_is_not_list_mail() -> None:
    assert classify(msg(("Precedence", "first-class")), ENVELOPE, SHIPPED)[1] == "default"


@pytest.mark.parametrize(
    ("header", "value", "category"),
    [
        ("X-PM-Message-Stream", "outbound", Category.TRANSACTIONAL),
        ("X-PM-Message-Stream", "broadcast-spring", Category.MARKETING),
        ("X-Mailgun-Tag", "Password-Reset", Category.TRANSACTIONAL),
        ("X-SES-CONFIGURATION-SET", "weekly-newsletter", Category.NEWSLETTER),
        ("X-SMTPAPI", '{"category": ["otp-login"]}', Category.AUTHENTICATION),
        ("X-SMTPAPI", '{"category": "order-receipt"}', Category.TRANSACTIONAL),
        ("X-MC-Tags", "welcome, newsletter", Category.NEWSLETTER),
        ("X-Mailjet-Campaign", "spring-2026", Category.MARKETING),
    ],
)
def test_esp_headers(header: str, value: str, category: Category) -> None:
    got = classify(msg((header, value)), ENVELOPE, SHIPPED)
    assert got == (category, f"esp-header:{header}")


def test_unrecognised_esp_values_fall_to_the_default() -> None:
    for header, value in (
        ("X-SMTPAPI", "{not json"),
        ("X-Mailgun-Tag", "spring"),
        ("X-Other", "x"),
    ):
        assert classify(msg((header, value)), ENVELOPE, SHIPPED) == (Category.MARKETING, "default")


def test_default() -> None:
    assert classify(msg(), ENVELOPE, SHIPPED) == (Category.MARKETING, "default")


# ---------------------------------------------------------------------------------------------
# Content clues: only stricter


def test_strictness_order() -> None:
    order = [
        Category.AUTHENTICATION,
        Category.TRANSACTIONAL,
        Category.MARKETING,
        Category.CONSENT_REQUEST,
    ]
    ranks = [strictness(c, SHIPPED) for c in order]
    assert ranks == sorted(ranks) and len(set(ranks)) == 4
    assert strictness(Category.NEWSLETTER, SHIPPED) == strictness(Category.PUBLIC_SERVICE, SHIPPED)


@pytest.mark.parametrize(
    "subject",
    [
        "Your order - 20% off your next purchase",
        "SOLDES d'hiver",
        "=?utf-8?q?Offre_sp=C3=A9ciale_pour_vous?=",
        "Black Friday starts now",
    ],
)
def test_a_promotional_subject_makes_a_transactional_label_marketing(subject: str) -> None:
    message = msg(("X-Relay-Category", "transactional"), ("Subject", subject))
    assert classify(message, ENVELOPE, SHIPPED) == (
        Category.MARKETING,
        "content:promotional-subject over header:X-Relay-Category",
    )


def test_content_clues_never_relax() -> None:
    # A marketing email with a transactional-looking subject stays marketing, reason untouched.
    message = msg(("Subject", "Your invoice and your password"))
    assert classify(message, ENVELOPE, SHIPPED) == (Category.MARKETING, "default")
    promo = msg(("X-Relay-Category", "consent_request"), ("Subject", "promo"))
    assert classify(promo, ENVELOPE, SHIPPED) == (
        Category.CONSENT_REQUEST,
        "header:X-Relay-Category",
    )


def test_words_match_whole_words_only() -> None:
    message = msg(("X-Relay-Category", "transactional"), ("Subject", "Wholesale promotional order"))
    assert classify(message, ENVELOPE, SHIPPED)[0] is Category.TRANSACTIONAL


def test_body_words(custom: Policy) -> None:
    message = msg(
        ("X-Relay-Category", "authentication"), html="<p>Your code. A limited offer inside!</p>"
    )
    assert classify(message, ENVELOPE, custom) == (
        Category.MARKETING,
        "content:body-promo over header:X-Relay-Category",
    )
    quiet = msg(("X-Relay-Category", "authentication"), html="<p>Your code is 123456</p>")
    assert classify(quiet, ENVELOPE, custom)[0] is Category.AUTHENTICATION
