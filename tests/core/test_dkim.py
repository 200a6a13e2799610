"""DKIM re-signing, checked with dkimpy's own verifier.

Keys are generated per test session with ``cryptography``; dkimpy looks the public key up
through its ``dnsfunc`` parameter, which here answers from the test's own key table instead
of DNS (dkimpy's supported hook for this, not a stand-in for relay code).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.core.dkim_sign import (
    DEFAULT_SIGNED_HEADERS,
    DkimError,
    DkimKey,
    from_domain,
    key_for,
    needs_resign,
    parse_key_table,
    resign,
)
from relay.errors import SettingsError

DOMAIN = "travel.example.org"

DnsFunc = Callable[..., bytes | None]


def _new_key(domain: str, selector: str) -> tuple[DkimKey, bytes]:
    """A fresh RSA key: the relay's DkimKey and the TXT record to publish for it."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(spki)
    return DkimKey(domain, selector, pem), txt


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[DkimKey, bytes]]:
    return {
        "relay": _new_key(DOMAIN, "relay2026"),
        "app": _new_key(DOMAIN, "app1"),
        "other": _new_key("esp.example.net", "s1"),
    }


@pytest.fixture(scope="module")
def dns(keys: dict[str, tuple[DkimKey, bytes]]) -> DnsFunc:
    records = {
        f"{key.selector}._domainkey.{key.domain}.".encode(): txt for key, txt in keys.values()
    }

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name)

    return dnsfunc


@pytest.fixture(scope="module")
def message(corpus_dir: Path) -> bytes:
    return (corpus_dir / "msg000.eml").read_bytes()


def _app_signed(message: bytes, key: DkimKey, **options: object) -> bytes:
    """The message as an application that signs its own mail would submit it."""
    signature = dkim.sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        key.private_key,
        canonicalize=(b"relaxed", b"simple"),
        **options,
    )
    assert isinstance(signature, bytes)
    return signature + message


def _relay_changed(message: bytes) -> bytes:
    """What the relay does to msg000: drop X-Relay-Category and edit the text part's body."""
    start = message.index(b"X-Relay-Category:")
    end = message.index(b"\r\n", start) + 2
    changed = message[:start] + message[end:]
    assert b"Bonjour,\r\n" in changed
    return changed.replace(b"Bonjour,\r\n", b"Bonjour,\r\n\r\nSuivi : {{relay:withdraw_url}}\r\n")


def _signatures(data: bytes) -> list[bytes]:
    head = data[: data.index(b"\r\n\r\n") + 2]
    return [line for line in head.split(b"\r\n") if line.lower().startswith(b"dkim-signature:")]


def _verify(data: bytes, dns: DnsFunc, idx: int = 0) -> bool:
    """dkimpy's verification of signature ``idx`` (0 is the topmost), as dkim.verify does it."""
    try:
        return bool(dkim.DKIM(data).verify(idx=idx, dnsfunc=dns))
    except dkim.DKIMException:
        return False


def _tags(data: bytes, idx: int = 0) -> dict[bytes, bytes]:
    checker = dkim.DKIM(data)
    assert checker.verify_headerprep(idx)
    tags: dict[bytes, bytes] = checker.signature_fields
    return tags


# ---------------------------------------------------------------------------------------------
# Signing a changed corpus message


def test_changed_corpus_message_is_signed_and_verifies(
    message: bytes, keys: dict[str, tuple[DkimKey, bytes]], dns: DnsFunc
) -> None:
    rendered = _relay_changed(message)
    key = keys["relay"][0]

    signed = resign(rendered, key)

    assert _verify(signed, dns)
    # Only a field was prepended: every byte of the rendered message follows unchanged.
    assert signed.endswith(rendered)
    prepended = signed[: len(signed) - len(rendered)]
    assert prepended.startswith(b"DKIM-Signature: ") and prepended.endswith(b"\r\n")
    assert b"\n" not in prepended.replace(b"\r\n", b"")  # CRLF only, like the message
    tags = _tags(signed)
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"a"] == b"rsa-sha256"
    assert (tags[b"d"], tags[b"s"]) == (DOMAIN.encode(), b"relay2026")


def test_every_corpus_message_signs_and_verifies(
    corpus_dir: Path, keys: dict[str, tuple[DkimKey, bytes]], dns: DnsFunc
) -> None:
    key = keys["relay"][0]
    for path in sorted(corpus_dir.glob("*.eml")):
        data = path.read_bytes()
        signed = resign(data, key)
        assert signed.endswith(data), path.name
        assert _verify(signed, dns), path.name
        # Signing again supersedes the relay's own signature instead of stacking a second one.
        again = resign(signed, key)
        assert len(_signatures(again)) == 1 and _verify(again, dns), path.name


def test_signed_fields_cover_one_click_unsubscribe_and_oversign_from(
    message: bytes, keys: dict[str, tuple[DkimKey, bytes]], dns: DnsFunc
) -> None:
    rendered = b"X-SMTPAPI: {}\r\n" + _relay_changed(message)
    signed = resign(rendered, keys["relay"][0])

    signed_names = [n.strip() for n in _tags(signed)[b"h"].split(b":")]
    # RFC 8058 section 4: both one-click unsubscribe fields must be covered.
    assert b"list-unsubscribe" in signed_names and b"list-unsubscribe-post" in signed_names
    assert signed_names.count(b"from") == 2  # present once, signed twice
    assert b"x-smtpapi" not in signed_names  # an ESP removes it: signing it would break
    assert b"x-relay-category" not in signed_names
    assert set(signed_names) <= set(DEFAULT_SIGNED_HEADERS)

    # The extra "from" is what makes a second From field break the signature.
    second_from = signed.replace(b"\r\nTo:", b"\r\nFrom: evil@example.com\r\nTo:", 1)
    assert second_from != signed
    assert _verify(signed, dns) and not _verify(second_from, dns)


def test_a_body_change_after_signing_fails_verification(
    message: bytes, keys: dict[str, tuple[DkimKey, bytes]], dns: DnsFunc
) -> None:
    signed = resign(_relay_changed(message), keys["relay"][0])
    assert not _verify(signed.replace(b"Bonjour,", b"Bonjour ,"), dns)


def test_lf_only_message_keeps_lf(keys: dict[str, tuple[DkimKey, bytes]], dns: DnsFunc) -> None:
    rendered = (
        b"From: News <news@travel.example.org>\nTo: a@example.com\nSubject: Hi\n"
        b"Date: Tue, 24 Nov 2026 10:00:00 +0100\n\nHello\n"
    )
    signed = resign(rendered, keys["relay"][0])
    assert signed.endswith(rendered)
    assert b"\r" not in signed
    assert _verify(signed, dns)


# ---------------------------------------------------------------------------------------------
# Messages the application signed


def test_app_signature_broken_by_the_relay_is_replaced(
    message: bytes, keys: dict[str, tuple[DkimKey, bytes]], dns: DnsFunc
) -> None:
    original = _app_signed(message, keys["app"][0])
    assert _verify(original, dns)
    rendered = _relay_changed(original)
    assert not _verify(rendered, dns)  # the relay's edit broke the application's signature
    assert needs_resign(original, rendered)

    signed = resign(rendered, keys["relay"][0], original=original)

    assert len(_signatures(signed)) == 1
    assert _tags(signed)[b"s"] == b"relay2026"
    assert _verify(signed, dns)
    # The rest of the message is the rendered message without the old signature field.
    body_of_signed = signed[signed.index(b"\r\nFrom: ") + 2 :]
    assert body_of_signed == rendered[rendered.index(b"\r\nFrom: ") + 2 :]


def test_unchanged_message_needs_no_resign_and_keeps_its_signature(
    message: bytes, keys: dict[str, tuple[DkimKey, bytes]], dns: DnsFunc
) -> None:
    original = _app_signed(message, keys["app"][0])
    assert not needs_resign(original, original)
    # Removing a field the application did not sign (X-Relay-Category) breaks nothing.
    start = original.index(b"X-Relay-Category:")
    rendered = original[:start] + original[original.index(b"\r\n", start) + 2 :]
    assert _verify(rendered, dns)
    assert not needs_resign(original, rendered)
    # Even if called, the upstream-signs mode leaves an intact signature as it is.
    assert resign(rendered, None, original=original) == rendered


def test_a_message_without_signature_needs_no_resign(message: bytes) -> None:
    assert not needs_resign(message, _relay_changed(message))


def test_a_signed_relay_field_counts_as_a_change(
    message: bytes, keys: dict[str, tuple[DkimKey, bytes]], dns: DnsFunc
) -> None:
    # An application that signs every field signs X-Relay-Category, which the relay removes.
    fields = [b"from", b"subject", b"x-relay-category"]
    original = _app_signed(message, keys["app"][0], include_headers=fields)
    start = original.index(b"X-Relay-Category:")
    rendered = original[:start] + original[original.index(b"\r\n", start) + 2 :]
    assert not _verify(rendered, dns)
    assert needs_resign(original, rendered)
    # Without the submitted bytes only the body hash can be checked, and it still matches.
    assert resign(rendered, None) == rendered
    assert _signatures(resign(rendered, None, original=original)) == []


def test_upstream_signs_mode_removes_broken_signature_and_adds_none(
    message: bytes, keys: dict[str, tuple[DkimKey, bytes]]
) -> None:
    original = _app_signed(message, keys["app"][0])
    rendered = _relay_changed(original)
    stripped = resign(rendered, None)  # body hash no longer matches: removed
    assert _signatures(stripped) == []
    assert stripped == rendered[rendered.index(b"From: ") :]


def test_intact_third_party_signature_is_kept_beside_the_new_one(
    message: bytes, keys: dict[str, tuple[DkimKey, bytes]], dns: DnsFunc
) -> None:
    third_party = keys["other"][0]
    # The relay changes a field outside the third party's h= list only.
    original = _app_signed(message, third_party, include_headers=[b"from", b"subject"])
    rendered = original.replace(b"X-Relay-Category: marketing\r\n", b"")
    signed = resign(rendered, keys["relay"][0], original=original)
    assert len(_signatures(signed)) == 2
    assert _verify(signed, dns, 0) and _verify(signed, dns, 1)
    assert _tags(signed, 1)[b"d"] == b"esp.example.net"
    # replace_all removes it as well.
    only_ours = resign(rendered, keys["relay"][0], original=original, replace_all=True)
    assert len(_signatures(only_ours)) == 1 and _verify(only_ours, dns)


def test_same_domain_signature_is_superseded_even_when_intact(
    message: bytes, keys: dict[str, tuple[DkimKey, bytes]], dns: DnsFunc
) -> None:
    original = _app_signed(message, keys["app"][0])
    signed = resign(original, keys["relay"][0], original=original)
    assert [t[b"s"] for t in [_tags(signed)]] == [b"relay2026"]
    assert len(_signatures(signed)) == 1 and _verify(signed, dns)


def test_refuses_to_sign_fields_an_esp_removes(
    message: bytes, keys: dict[str, tuple[DkimKey, bytes]]
) -> None:
    with pytest.raises(ValueError, match="x-smtpapi"):
        resign(message, keys["relay"][0], headers_to_sign=[b"from", b"X-SMTPAPI"])


def test_message_without_from_cannot_be_signed(keys: dict[str, tuple[DkimKey, bytes]]) -> None:
    with pytest.raises(DkimError, match="From"):
        resign(b"Subject: x\r\n\r\nbody\r\n", keys["relay"][0])


def test_malformed_header_block(keys: dict[str, tuple[DkimKey, bytes]]) -> None:
    data = b"From: a@travel.example.org\r\nno colon here\r\n\r\nx\r\n"
    with pytest.raises(DkimError, match=r"signing for travel\.example\.org failed"):
        resign(data, keys["relay"][0])
    # Without a key nothing needs dkimpy: the bytes pass as they are.
    assert resign(data, None) == data
    assert not needs_resign(data, data)


# ---------------------------------------------------------------------------------------------
# Choosing the key and reading the key table


def test_key_for_from_domain_and_parent(keys: dict[str, tuple[DkimKey, bytes]]) -> None:
    key = keys["relay"][0]
    table = {DOMAIN: key}
    exact = b'From: "Travel, news" <newsletter@Travel.Example.org>\r\n\r\n'
    sub = b"From: a@mail.travel.example.org\r\n\r\n"
    other = b"From: a@example.com\r\n\r\n"
    assert from_domain(exact) == DOMAIN
    assert key_for(exact, table) is key
    assert key_for(sub, table) is key
    assert key_for(other, table) is None
    assert key_for(b"Subject: none\r\n\r\n", table) is None
    # A key for a bare top-level domain is never chosen.
    assert key_for(b"From: a@example.org\r\n\r\n", {"org": key}) is None


def test_parse_key_table_reads_files_through_the_given_reader(
    keys: dict[str, tuple[DkimKey, bytes]], tmp_path: Path
) -> None:
    pem = keys["relay"][0].private_key
    path = tmp_path / "travel.pem"
    path.write_bytes(pem.replace(b"\n", b"\r\n"))  # a key saved with CRLF still works
    table = parse_key_table(
        {"Travel.Example.org.": {"selector": "relay2026", "key_file": str(path)}},
        read_key=lambda p: Path(p).read_bytes(),
    )
    assert list(table) == [DOMAIN]
    assert table[DOMAIN].selector == "relay2026"
    assert table[DOMAIN].private_key == pem
    assert "PRIVATE" not in repr(table[DOMAIN])
    inline = parse_key_table({DOMAIN: {"selector": "s1", "private_key": pem.decode()}})
    assert inline[DOMAIN].private_key == pem


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"selector": "bad selector", "private_key": "x"}, r"\.selector: not a DKIM selector"),
        ({"selector": "s1"}, r"\.key_file: missing"),
        ({"selector": "s1", "key_file": "/nonexistent/key.pem"}, r"\.key_file: cannot read"),
        ({"selector": "s1", "private_key": "garbage"}, "not a PEM RSA private key"),
        ({"selector": "s1", "keyfile": "/k.pem"}, "unknown keys keyfile"),
    ],
)
def test_parse_key_table_errors_name_the_setting(entry: dict[str, str], error: str) -> None:
    with pytest.raises(SettingsError, match=rf"dkim\.keys\.{DOMAIN}.*{error}"):
        parse_key_table({DOMAIN: entry}, read_key=lambda p: Path(p).read_bytes())


def test_parse_key_table_rejects_a_bad_domain_and_a_missing_reader() -> None:
    with pytest.raises(SettingsError, match="not a domain name"):
        parse_key_table({"localhost": {"selector": "s1", "private_key": "x"}})
    with pytest.raises(SettingsError, match="no reader"):
        parse_key_table({DOMAIN: {"selector": "s1", "key_file": "/k.pem"}})
