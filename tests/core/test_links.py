"""Signed link tokens: round trip, forgery, alteration, expiry, key rotation, no address."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.links import (
    CONSENT_TTL,
    LinkMinter,
    LinkSigner,
    gateway_link_id,
    message_ref_id,
)
from relay.core.recipients import recipient_key
from relay.errors import TokenError
from relay.model import Purpose

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ADDRESS = "Alice.Martin@example.org"
ADDRESS_KEY = b"address-key"
RKEY = recipient_key(ADDRESS, ADDRESS_KEY)
ALL = {"w", "p", "c", "g", "m"}


def signer() -> LinkSigner:
    return LinkSigner("k2", b"current-key", {"k1": b"retired-key"})


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_round_trip_keeps_every_claim() -> None:
    token = signer().mint("g", RKEY, ref="link123", extra="campaign_performance", ttl=None, now=NOW)
    claims = signer().verify(token, kinds={"g"}, now=NOW + timedelta(days=3650))
    assert (claims.kind, claims.key_id, claims.rkey) == ("g", "k2", RKEY)
    assert (claims.ref, claims.extra) == ("link123", "campaign_performance")
    assert claims.issued_at == NOW
    assert claims.expires_at is None
    assert len(claims.token_id) == 12


def test_forged_signature_is_refused() -> None:
    token = signer().mint("w", RKEY, ref="r", ttl=None, now=NOW)
    payload, mac = token.split(".")
    other = "A" if mac[0] != "A" else "B"
    with pytest.raises(TokenError, match="forged"):
        signer().verify(f"{payload}.{other}{mac[1:]}", kinds=ALL, now=NOW)
    # A token signed with a key we do not hold, under our key id, is forged too.
    stranger = LinkSigner("k2", b"attacker-key")
    with pytest.raises(TokenError, match="forged"):
        signer().verify(stranger.mint("w", RKEY, ttl=None, now=NOW), kinds=ALL, now=NOW)


def test_altered_payload_is_refused() -> None:
    token = signer().mint("w", RKEY, ref="r", ttl=None, now=NOW)
    payload, mac = token.split(".")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    altered = raw.replace(RKEY, recipient_key("mallory@example.org", ADDRESS_KEY))
    altered_b64 = base64.urlsafe_b64encode(altered.encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="forged"):
        signer().verify(f"{altered_b64}.{mac}", kinds=ALL, now=NOW)


@pytest.mark.parametrize("bad", ["", ".", "abc", "a.b.c", "***.***", "x" * 700, "YWJj.YWJj"])
def test_garbage_is_malformed_not_a_crash(bad: str) -> None:
    with pytest.raises(TokenError):
        signer().verify(bad, kinds=ALL, now=NOW)


def test_expired_consent_link() -> None:
    minter = LinkMinter("https://relay.example/", signer())
    token = token_of(minter.consent_url(RKEY, "<m1@example.org>", NOW))
    assert signer().verify(token, kinds={"c"}, now=NOW + CONSENT_TTL - timedelta(seconds=1))
    with pytest.raises(TokenError, match="expired"):
        signer().verify(token, kinds={"c"}, now=NOW + CONSENT_TTL)
    assert timedelta(days=60) >= CONSENT_TTL


def test_withdrawal_links_live_for_years() -> None:
    minter = LinkMinter("https://relay.example", signer())
    token = token_of(minter.withdraw_url(RKEY, "<m1@example.org>", NOW))
    claims = signer().verify(token, kinds={"w"}, now=NOW + timedelta(days=4 * 365))
    assert claims.expires_at is not None and claims.expires_at >= NOW + timedelta(days=5 * 365)


def test_wrong_kind_is_refused() -> None:
    token = signer().mint("g", RKEY, ttl=None, now=NOW)
    with pytest.raises(TokenError, match="wrong kind"):
        signer().verify(token, kinds={"w"}, now=NOW)


def test_retired_key_still_verifies_and_unknown_key_id_fails() -> None:
    old = LinkSigner("k1", b"retired-key")
    token = old.mint("w", RKEY, ttl=None, now=NOW)
    assert signer().verify(token, kinds={"w"}, now=NOW).key_id == "k1"
    ancient = LinkSigner("k0", b"gone-key")
    with pytest.raises(TokenError, match="unknown key"):
        signer().verify(ancient.mint("w", RKEY, ttl=None, now=NOW), kinds={"w"}, now=NOW)
    # A retired key verifies but never signs.
    assert signer().verify(signer().mint("w", RKEY, ttl=None, now=NOW), kinds={"w"}, now=NOW)
    assert signer().mint("w", RKEY, ttl=None, now=NOW).split(".")[0] != token.split(".")[0]


def test_no_address_in_any_url() -> None:
    minter = LinkMinter("https://relay.example", signer())
    message_ref = f"<{ADDRESS}>"  # an envelope sender used as reference when no Message-ID
    urls = [
        minter.withdraw_url(RKEY, message_ref, NOW),
        minter.preferences_url(RKEY, message_ref, NOW),
        minter.consent_url(RKEY, message_ref, NOW),
        minter.gateway_url(RKEY, gateway_link_id(message_ref, "https://t.example/o?e=" + ADDRESS),
                           Purpose.CAMPAIGN_PERFORMANCE, NOW),
        minter.minimise_url(RKEY, "abc", NOW),
    ]  # fmt: skip
    forms = {ADDRESS, ADDRESS.lower(), "alice.martin", "Alice.Martin"}
    for form in list(forms):
        for shift in range(3):  # base64 of the address at each alignment
            encoded = base64.urlsafe_b64encode(("xx"[:shift] + form).encode()).decode()
            forms.add(encoded[4 if shift else 0 : -4].rstrip("="))
    for url in urls:
        token = token_of(url)
        payload = base64.urlsafe_b64decode(token.split(".")[0] + "==").decode()
        for form in forms:
            assert form not in url
            assert form.lower() not in payload.lower()
        assert "@" not in payload


def test_minting_refuses_an_address() -> None:
    with pytest.raises(ValueError):
        signer().mint("w", ADDRESS, ttl=None, now=NOW)


def test_ids_are_stable_and_distinct() -> None:
    a = gateway_link_id("<m1@x>", "https://t.example/a.gif")
    assert a == gateway_link_id("<m1@x>", "https://t.example/a.gif")
    assert a != gateway_link_id("<m2@x>", "https://t.example/a.gif")
    assert message_ref_id("<m1@x>") != message_ref_id("<m2@x>")
    assert "@" not in a and len(a) == 16


@given(
    kind=st.sampled_from(sorted(ALL)),
    ref=st.text(alphabet="abcdefghij0123456789-_", max_size=20),
    flip=st.integers(min_value=0, max_value=10_000),
)
def test_any_single_character_change_is_refused(kind: str, ref: str, flip: int) -> None:
    token = signer().mint(kind, RKEY, ref=ref, ttl=None, now=NOW)
    i = flip % len(token)
    if token[i] == ".":
        return
    replacement = "A" if token[i] != "A" else "B"
    changed = token[:i] + replacement + token[i + 1 :]
    with pytest.raises(TokenError):
        signer().verify(changed, kinds=ALL, now=NOW)


def test_tokens_carry_controller_and_language_and_old_ones_still_verify() -> None:
    from datetime import UTC, datetime

    from relay.core.links import CONSENT, WITHDRAW, LinkMinter, LinkSigner

    now = datetime(2026, 11, 1, tzinfo=UTC)
    signer = LinkSigner("k1", b"key")
    minter = LinkMinter("https://relay.example", signer)
    url = minter.consent_url("r" * 32, "<m@shop.example>", now, controller="shop", lang="en")
    claims = signer.verify(url.rsplit("/", 1)[1], kinds={CONSENT}, now=now)
    assert (claims.controller, claims.lang, claims.rkey) == ("shop", "en", "r" * 32)
    # A link minted before tokens named a controller: seven fields, same key, still valid.
    old = signer.mint(WITHDRAW, "r" * 32, ref="abc", ttl=None, now=now)
    import base64

    payload = base64.urlsafe_b64decode(old.split(".")[0] + "==").decode()
    assert payload.count("|") == 6
    claims = signer.verify(old, kinds={WITHDRAW}, now=now)
    assert (claims.controller, claims.lang) == ("", "")
    for bad in ("a|b", "x@y"):
        try:
            minter.withdraw_url("r" * 32, "<m>", now, controller=bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted in a token")
