"""8-bit -> 7-bit for an upstream without 8BITMIME: what a reader sees never changes.

Shapes from real mail (mail-client suites parse all of them): a French newsletter sent as
``8bit`` UTF-8 text and HTML, a part with no Content-Transfer-Encoding at all (common from
PHP mailers), a quoted-printable part whose writer left raw UTF-8 bytes in it, a forwarded
``message/rfc822`` with an 8-bit body inside, long unbroken 8-bit lines, a signed part.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import dkim  # type: ignore[import-untyped]
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.dkim_sign import DkimKey
from relay.core.downgrade import downgrade, to_seven_bit
from relay.errors import DowngradeRefused
from tests.core.test_dkim import DOMAIN, DnsFunc, _signatures, _verify, dns, keys  # noqa: F401

NEWSLETTER = (
    "From: Boutique <news@travel.example.org>\r\n"
    "To: a@example.org\r\n"
    "Subject: =?utf-8?q?Les_soldes_d=27=C3=A9t=C3=A9?=\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="=_b1"\r\n'
    "\r\n"
    "This is a multi-part message in MIME format.\r\n"
    "--=_b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Crème brûlée = 5 € \r\n"
    ".Une ligne qui commence par un point\r\n"
    "--=_b1\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    "<p>Été " + "très long " * 20 + "</p>\r\n"
    "--=_b1--\r\n"
).encode()


def leaves(data: bytes) -> list[bytes]:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    out = []
    for part in parsed.walk():
        if not part.is_multipart() and part.get_content_type() != "message/rfc822":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(payload)
    return out


def test_8bit_parts_become_quoted_printable_and_read_the_same() -> None:
    out = to_seven_bit(NEWSLETTER)
    assert out.isascii()
    assert leaves(out) == leaves(NEWSLETTER)
    assert out.count(b"Content-Transfer-Encoding: quoted-printable\r\n") == 2
    assert b"Content-Transfer-Encoding: 8bit" not in out
    assert max(len(line) for line in out.split(b"\r\n")) <= 76
    # Everything outside the two parts is byte for byte what it was.
    head = NEWSLETTER[: NEWSLETTER.index(b"--=_b1\r\n")]
    assert out.startswith(head) and out.endswith(b"\r\n--=_b1--\r\n")


def test_a_7bit_message_is_returned_as_is() -> None:
    data = b"From: a@b.example\r\nSubject: x\r\n\r\nplain ascii\r\n"
    assert to_seven_bit(data) is data


def test_raw_8bit_inside_quoted_printable_is_escaped() -> None:
    data = (
        "From: a@b.example\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nd=C3=A9j=C3=A0 vu, déjà\r\n"
    ).encode()
    out = to_seven_bit(data)
    assert out.isascii() and leaves(out) == ["déjà vu, déjà\r\n".encode()]


def test_a_forwarded_message_with_an_8bit_body_is_converted_inside() -> None:
    inner = "From: b@c.example\r\nSubject: fwd\r\n\r\nRéponse\r\n"
    data = (
        'From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n'
        "\r\n--m\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--m\r\n"
        "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{inner}--m--\r\n"
    ).encode()
    out = to_seven_bit(data)
    assert out.isascii()
    assert b"R=C3=A9ponse" in out


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("From: a@b.example\r\nSubject: été\r\n\r\nbody é\r\n", "header"),
        (
            'From: a@b.example\r\nContent-Type: multipart/signed; boundary="s"; '
            'protocol="application/pgp-signature"\r\n\r\n--s\r\nContent-Type: text/plain\r\n'
            "\r\nsigné\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\nsig\r\n--s--\r\n",
            "signed",
        ),
        (
            "From: a@b.example\r\nContent-Type: application/zip\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nUEsDB\xff\r\n",
            "base64",
        ),
    ],
)
def test_what_cannot_be_converted_faithfully_is_refused(data: str, why: str) -> None:
    with pytest.raises(DowngradeRefused, match=why):
        to_seven_bit(data.encode("utf-8", "surrogateescape"))


TEXT = st.text(st.characters(min_codepoint=9, max_codepoint=0x2FFF, exclude_categories=["Cs"]))


@given(st.lists(TEXT.map(lambda t: t.replace("\r", "").replace("\n", "")), max_size=6))
def test_any_8bit_text_reads_the_same_after(lines: list[str]) -> None:
    body = "".join(line + "\r\n" for line in lines).encode()
    data = (
        b"From: a@b.example\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body
    )
    out = to_seven_bit(data)
    assert out.isascii()
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_payload(decode=True) == body


def _signed(data: bytes, key: DkimKey) -> bytes:
    signature = dkim.sign(
        data, key.selector.encode(), key.domain.encode(), key.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
    )  # fmt: skip
    assert isinstance(signature, bytes)
    return signature + data


def test_dkim_is_re_signed_removed_or_left_as_configured(
    keys: dict[str, tuple[DkimKey, bytes]],  # noqa: F811
    dns: DnsFunc,  # noqa: F811
) -> None:
    app, _ = keys["app"]
    relay, _ = keys["relay"]
    signed = _signed(NEWSLETTER, app)
    assert _verify(signed, dns)
    resigned = downgrade(signed, dkim_mode="resign", keys={DOMAIN: relay}, replace_all=False)
    assert resigned.isascii() and _verify(resigned, dns)
    assert len(_signatures(resigned)) == 1
    assert b"s=relay2026;" in resigned[: resigned.index(b"\r\n\r\n")]
    removed = downgrade(signed, dkim_mode="upstream", keys={}, replace_all=False)
    assert _signatures(removed) == [] and removed.isascii()
    left = downgrade(signed, dkim_mode="off", keys={}, replace_all=False)
    assert len(_signatures(left)) == 1 and not _verify(left, dns)
