"""The one view of a message's bytes (relay/smtp/canonical.py), as pure properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.smtp.canonical import NUL, SMUGGLING, canonical


def test_crlf_only_is_returned_as_it_is() -> None:
    data = b"Subject: a\r\n\r\nbody\r\n"
    assert canonical(data) is data


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Subject: x\rBcc: v@evil.example\r\n", b"Subject: x\r\nBcc: v@evil.example\r\n"),
        (b"a\nb\r\n", b"a\r\nb\r\n"),
        (b"a\r\r\nb\r\n", b"a\r\n\r\nb\r\n"),  # read as aiosmtplib and universal newlines read it
        (b"a\n\rb", b"a\r\n\r\nb"),
        # smtplib given LF-only bytes stuffs the line after each LF; Postfix unstuffs it.
        (b"<style>\n..hero {}\n</style>\n..\n", b"<style>\r\n.hero {}\r\n</style>\r\n.\r\n"),
        (b"a\r.b\n", b"a\r\n.b\r\n"),  # no client stuffs after a lone CR: the dot stays
    ],
)  # fmt: skip
def test_every_lone_cr_and_lf_is_a_line_break(raw: bytes, expected: bytes) -> None:
    assert canonical(raw) == expected


@pytest.mark.parametrize(
    "raw", [b"a\n.\nb", b"a\r\n.\nb", b"a\n.\r\nb", b"a\r.\rb", b"a\r\n.\rb", b"a\r.\r\nb"]
)
def test_a_dot_line_with_a_lone_cr_or_lf_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match=re.escape(SMUGGLING)):
        canonical(raw)


def test_a_nul_is_refused() -> None:
    with pytest.raises(ValueError, match=NUL):
        canonical(b"a\r\n\0.\r\nMAIL FROM:<x@y>\r\n")


@given(st.binary(max_size=300))
def test_the_result_has_only_crlf_line_breaks_and_is_stable(data: bytes) -> None:
    try:
        out = canonical(data)
    except ValueError:
        return
    assert out.count(b"\r") == out.count(b"\n") == out.count(b"\r\n")
    assert canonical(out) == out
    # Nothing but line breaks changed, and the dot stuffed after a lone LF (Rule 1).
    assert re.split(rb"\r\n|\r|(?<!\r)\n\.?", data) == out.split(b"\r\n")
