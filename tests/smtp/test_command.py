"""Command rendering: addresses exactly as given, nothing unsafe on the wire, dots only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.smtp.command import (
    UnsafeCommand,
    auth,
    body_defect,
    data_payload,
    mail_from,
    rcpt_to,
)


def test_addresses_are_written_as_decided() -> None:
    """The shapes an address re-parser rewrote (issue 13.2): what was audited is what goes."""
    assert rcpt_to("(x)injected@evil.example") == b"RCPT TO:<(x)injected@evil.example>\r\n"
    assert rcpt_to('"john..doe"@example.org') == b'RCPT TO:<"john..doe"@example.org>\r\n'
    assert rcpt_to("Jörg@bücher.example") == "RCPT TO:<Jörg@bücher.example>\r\n".encode()
    assert mail_from("") == b"MAIL FROM:<>\r\n"
    assert mail_from("a@b.example", ["BODY=8BITMIME", "ENVID=QQ+2Bid"]) == (
        b"MAIL FROM:<a@b.example> BODY=8BITMIME ENVID=QQ+2Bid\r\n"
    )


@pytest.mark.parametrize(
    "address",
    [
        '"a\rRCPT TO:<injected@evil.example>"@shop.example',
        "a\n@b.example",
        "a\x00b@example.org",
        "a\x0bb@example.org",
        "a\x7fb@example.org",
        "bad\udcff@example.org",  # invalid UTF-8 carried through surrogateescape
    ],
)
def test_control_characters_and_invalid_utf8_never_reach_the_wire(address: str) -> None:
    with pytest.raises(UnsafeCommand):
        rcpt_to(address)
    with pytest.raises(UnsafeCommand):
        mail_from(address)


@pytest.mark.parametrize("param", ["NOTIFY=SUCCESS\r\nRSET", "ORCPT=", "=x", "A B", "X=a=b"])
def test_malformed_parameters_are_refused(param: str) -> None:
    with pytest.raises(UnsafeCommand):
        rcpt_to("a@b.example", [param])


def test_auth_with_an_empty_initial_response() -> None:
    assert auth("PLAIN", b"") == b"AUTH PLAIN =\r\n"
    assert auth("LOGIN") == b"AUTH LOGIN\r\n"


def unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    body = wire[:-3]
    body = body.replace(b"\r\n..", b"\r\n.")
    return body[1:] if body.startswith(b"..") else body


LINE = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(st.lists(st.one_of(LINE, st.sampled_from([b".", b"..", b".\x00", b". x"])), max_size=12))
def test_dot_stuffing_is_the_only_change(lines: list[bytes]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    wire = data_payload(data)
    assert unstuff(wire) == data
    # No line of the payload but the last is a lone dot: the message cannot end early.
    assert b"\r\n.\r\n" not in wire[:-3] and not (data and wire.startswith(b".\r\n"))


def test_defects_that_must_not_be_sent() -> None:
    assert body_defect(b"a\r\nb\r\n") is None
    assert body_defect(b"a\rb\r\n") == "bare CR"
    assert body_defect(b"a\nb\r\n") == "bare LF"
    assert body_defect(b"a\r\r\n") == "bare CR"
    assert body_defect(b"a\r\n\x00.\r\n") == "NUL byte"
