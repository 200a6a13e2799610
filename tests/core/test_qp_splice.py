"""Quoted-printable splicing keeps every encoded byte outside the edit (issue 14 item 6).

Real mailings encode line feeds inside HTML as "=0A" (Mailchimp's and Salesforce's template
engines write whole HTML documents that way) and may escape characters that need no escape;
an edit must not turn those into real line breaks or re-escape them.
"""

from __future__ import annotations

import binascii
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core.parse import parse_message
from relay.core.qp_splice import Splice, splice, token_starts
from relay.core.rewrite import render
from relay.core.transfer import QPLines
from relay.model import Edit, Span

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def apply(data: bytes, edits: list[Splice]) -> bytes:
    out, pos = [], 0
    for start, end, rep in edits:
        out += [data[pos:start], rep]
        pos = end
    return b"".join([*out, data[pos:]])


def engine_encode(data: bytes) -> bytes:
    """Quoted-printable the way such template engines write it: every line feed escaped as
    "=0A" (the document is one hard line), dots escaped as "=2E", soft breaks at 76."""
    tokens = [
        b"=0A" if b == 0x0A else b"=2E" if b == 0x2E else b"=3D" if b == 0x3D else bytes([b])
        for b in data
    ]
    lines, line = [], b""
    for token in tokens:
        if len(line) + len(token) > 75:
            lines.append(line + b"=")
            line = b""
        line += token
    return b"\r\n".join([*lines, line])


PIXEL_URL = "https://u1.ct.sendgrid.net/wf/open?upn=abc"
ENGINE_BODY = engine_encode(
    b"<!DOCTYPE html>\n<html>\n<head>\n<title>Spring sale.</title>\n</head>\n<body>\n"
    b"<p>Hello,</p>\n"
    + f'<img src="{PIXEL_URL}" width="1" height="1">'.encode()
    + b"\n<p>See you soon.</p>\n</body>\n</html>"
)


def test_a_line_feed_escaped_as_0a_stays_escaped() -> None:
    raw = (
        b"From: news@shop.example\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + ENGINE_BODY + b"\r\n"
    )
    message = parse_message(raw)
    text = message.parts[0].text or ""
    url = PIXEL_URL
    start = text.index(url)
    gif = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="
    out = render(message, [Edit(0, Span(start, start + len(url)), gif)])
    # Decoded: exactly the edit. Encoded: every byte before and after the URL as sent, with
    # soft breaks around the new text; no bare LF, no new hard line break.
    assert parse_message(out).parts[0].text == text.replace(url, gif)
    assert out.count(b"=0A") == raw.count(b"=0A") == 10
    assert out.count(b"=2E") == raw.count(b"=2E") - url.count(".")  # the URL's dots went
    assert out.replace(b"\r\n", b"").count(b"\n") == 0
    # Everything before the first changed line and after the URL is the sender's bytes.
    head = raw[: raw.rfind(b"\r\n", 0, raw.index(b"https:")) + 2]
    url_end = raw.index(b"abc", raw.index(b"open?upn")) + 3
    assert out.startswith(head) and out.endswith(raw[url_end:])
    body = out[out.index(b"\r\n\r\n") + 4 :]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    # Still one hard line: every line but the last ends with a soft break.
    lines = body.rstrip(b"\r\n").split(b"\r\n")
    assert all(line.endswith(b"=") for line in lines[:-1]) and not lines[-1].endswith(b"=")


def test_token_starts_agree_with_binascii() -> None:
    for line in (b"a=3Db", b"==", b"=G1", b"x=", b"a=\r\nb", b"=\rjunk\nz", b"=4", b"=0a=0A"):
        assert len(token_starts(line)) == len(binascii.a2b_qp(line)), line


@SETTINGS
@given(st.binary(max_size=200))
def test_token_starts_agree_with_binascii_on_any_bytes(data: bytes) -> None:
    for line in data.split(b"\n"):
        assert len(token_starts(line + b"\n")) == len(binascii.a2b_qp(line + b"\n"))
        assert len(token_starts(line)) == len(binascii.a2b_qp(line))


PIECES = st.sampled_from(
    [
        b"<p>",
        b"text ",
        b"=0A",
        b"=0D=0A",
        b"=3D",
        b"=2E",
        b"\r\n",
        b"=\r\n",
        b" ",
        b"\xc3\xa9",
        b"=4",
    ]
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Encoded bodies mixing escaped line feeds, hard and soft breaks, lines up to 76."""
    body = b"".join(draw(st.lists(PIECES, max_size=40)))
    body = body.replace(b"\xc3\xa9", b"=C3=A9")
    lines = []
    for hard_line in body.split(b"\r\n"):
        line = hard_line
        while len(line) > 76:  # keep the input conformant: wrap with soft breaks
            cut = 75
            while line[cut - 2 : cut - 1] == b"=" or line[cut - 1 : cut] == b"=":
                cut -= 1
            lines.append(line[:cut] + b"=")
            line = line[cut:]
        lines.append(line)
    return b"\r\n".join(lines)


@st.composite
def cases(draw: st.DrawFn) -> tuple[bytes, list[Splice]]:
    body = draw(bodies())
    size = len(binascii.a2b_qp(body))
    points = sorted(draw(st.lists(st.integers(0, size), min_size=2, max_size=6)))
    reps = st.sampled_from(
        [b"", b"x", b"1", b"https://relay.example/g/" + b"t" * 90, b"a \r\nb ", b" "]
    )
    edits = [(points[i], points[i + 1], draw(reps)) for i in range(0, len(points) - 1, 2)]
    return body, edits


@SETTINGS
@given(cases())
def test_splices_decode_to_the_edit_and_keep_every_other_byte(
    case: tuple[bytes, list[Splice]],
) -> None:
    body, edits = case
    spliced = splice(QPLines(body), edits, b"\r\n")
    assert spliced is not None
    out = apply(body, spliced)
    assert binascii.a2b_qp(out) == apply(binascii.a2b_qp(body), edits)
    assert all(len(line) <= 76 for line in re.split(rb"\r?\n", out))
    # What a splice keeps of the sender's bytes is the text between the splices, unchanged;
    # and a splice's own bytes, soft breaks removed, hold no escaped line break of the input.
    kept = apply(body, [(s, e, b"") for s, e, _ in spliced])
    assert kept.count(b"=0A") <= out.count(b"=0A")
    for _s, _e, new in spliced:
        assert b"\n" not in new.replace(b"=\r\n", b"").replace(b"\r\n", b"")


def test_a_lone_equals_before_the_edit_is_written_as_an_escape() -> None:
    # "=" followed by "4" is kept literally by decoders; new text "1" after it would make "=41".
    body = b"price =4 EUR"
    spliced = splice(QPLines(body), [(7, 8, b"1")], b"\r\n")
    assert spliced == [(6, 8, b"=3D1")]
    assert binascii.a2b_qp(apply(body, spliced)) == b"price =1 EUR"


def test_new_text_at_the_end_of_a_full_line_moves_its_last_token() -> None:
    body = b"a" * 73 + b"=3D\r\nnext"  # a hard line of 76 characters, then another
    spliced = splice(QPLines(body), [(74, 74, b"XY")], b"\r\n")
    assert spliced is not None
    out = apply(body, spliced)
    assert binascii.a2b_qp(out) == b"a" * 73 + b"=XY\r\nnext"
    assert out == b"a" * 73 + b"=\r\n=3DXY\r\nnext"  # "=3D" moved whole, byte for byte
