"""Fuzzing the parser and the renderer with malformed MIME and random bytes.

parse_message either returns or raises MalformedMessage, never anything else and never hangs
(the per-test timeout catches a hang); what it returns renders back to the input, and any
editable part accepts an edit.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core.parse import parse_message
from relay.core.rewrite import render
from relay.errors import MalformedMessage
from relay.model import Edit, ParsedMessage, Span

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEMPLATE = (
    b"From: a@example.org\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b'Content-Type: multipart/alternative; boundary="b2"\r\n'
    b"\r\n"
    b"--b2\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 =\r\nsoft\r\n"
    b"--b2\r\n"
    b"Content-Type: text/html; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"PGltZyBzcmM9Imh0dHBzOi8vdC5leGFtcGxlLm5ldC9vLmdpZiI+\r\n"
    b"--b2--\r\n"
    b"--b1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>inner</p>\r\n"
    b"--b1\r\n"
    b'Content-Type: multipart/signed; boundary="s"\r\n'
    b"\r\n"
    b"--s\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>signed</p>\r\n"
    b"--s--\r\n"
    b"--b1--\r\n"
)
NOISE = (
    b"--b1",
    b"--b2--",
    b"--",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"=",
    b"=\r\n",
    b"=G",
    b":",
    b" ",
    b"Content-Type: multipart/mixed; boundary=",
    b"Content-Type: text/html; charset=utf-16\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b'boundary="',
    b"\xff\xfe",
    b"\x00",
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(TEMPLATE)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "truncate", "bytes"]))
        if op == "insert":
            data[at:at] = draw(st.sampled_from(NOISE))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 200))]
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(max_size=20))
    return bytes(data)


def check(raw: bytes) -> ParsedMessage | None:
    try:
        message = parse_message(raw)
    except MalformedMessage as exc:
        assert str(exc)
        return None
    assert render(message, []) == raw
    for d in message.defects:
        assert isinstance(d, str) and d
    edits: list[Edit] = []
    for part in message.parts:
        assert part.header_start <= part.body_start <= part.body_end <= len(raw)
        if part.text is None or part.locked:
            continue
        # A deletion and an insertion in every editable part must render and parse again.
        edits.append(Edit(part.index, Span(0, min(1, len(part.text))), "<x>"))
        edits.append(Edit(part.index, Span(len(part.text), len(part.text)), "\u00e9\r\n"))
    if edits:
        out = render(message, edits)
        first = min(message.parts[e.part_index].body_start for e in edits)
        assert out[:first] == raw[:first]
        parse_message(out)
    return message


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(mutated())
def test_mutated_mime(raw: bytes) -> None:
    check(raw)


def test_template_is_sound() -> None:
    message = check(TEMPLATE)
    assert message is not None and message.defects == ()
    assert [(p.content_type, p.locked) for p in message.parts] == [
        ("text/plain", False),
        ("text/html", False),
        ("text/html", False),
        ("text/html", True),
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n" * 100_000,
        b"X: y\r\n" * 100_000 + b"\r\nbody",
        (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n") * 5_000,
        b"Content-Type: message/rfc822\r\n\r\n" * 5_000,
        b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + b"=" * 200_000,
        b"\r\n" * 100_000,
    ],
)
def test_pathological_inputs_finish_quickly(raw: bytes) -> None:
    started = time.perf_counter()
    check(raw)
    assert time.perf_counter() - started < 5
