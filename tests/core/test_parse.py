"""parse_message over the corpus and over hand-made messages: offsets, decoding, defects."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import pytest

from relay.core.parse import content_type, parse_message
from relay.errors import MalformedMessage
from relay.model import ParsedMessage


def mime(*lines: str, nl: str = "\r\n") -> bytes:
    return nl.join(lines).encode("utf-8")


def only_text(message: ParsedMessage, ctype: str = "text/html") -> str:
    texts = [p.text for p in message.parts if p.content_type == ctype and p.text is not None]
    assert len(texts) == 1, texts
    return texts[0]


def test_corpus_parses_without_defects(corpus_dir: Path) -> None:
    files = sorted(corpus_dir.glob("*.eml"))
    assert len(files) >= 17
    for path in files:
        raw = path.read_bytes()
        message = parse_message(raw)
        assert message.defects == (), path.name
        assert message.header("Message-ID"), path.name
        html = only_text(message)
        assert "<html" in html.lower(), path.name
        for part in message.parts:
            assert 0 < part.header_start <= part.body_start <= part.body_end <= len(raw)
            # A base64 text part reports the line endings of its decoded text.
            expected = "\n" if part.cte == "base64" and part.text is not None else "\r\n"
            assert part.newline == expected, path.name
            assert not part.locked


def test_corpus_offsets_bracket_each_part(corpus_dir: Path) -> None:
    raw = (corpus_dir / "msg000.eml").read_bytes()
    message = parse_message(raw)
    image = next(p for p in message.parts if p.content_type == "image/png")
    # The body ends before the line ending that belongs to the next delimiter.
    assert raw[image.body_end : image.body_end + 4] == b"\r\n--"
    assert raw[image.header_start :].startswith(b"Content-Type: image/png")
    assert image.text is None and image.cte == "base64"
    html = next(p for p in message.parts if p.content_type == "text/html")
    body = raw[html.body_start : html.body_end]
    assert base64.b64decode(body).decode("utf-8") == html.text
    assert html.codec == "utf-8" and html.charset == "utf-8"


def test_bare_lf_message_keeps_its_line_endings(corpus_dir: Path) -> None:
    crlf = (corpus_dir / "msg002.eml").read_bytes()
    lf = crlf.replace(b"\r\n", b"\n")
    a, b = parse_message(crlf), parse_message(lf)
    assert b.defects == ()
    assert [p.content_type for p in a.parts] == [p.content_type for p in b.parts]
    assert all(p.newline == "\n" for p in b.parts)
    assert only_text(b) == only_text(a).replace("\r\n", "\n")


def test_headers_are_unfolded_and_located() -> None:
    raw = mime("Subject: a long", "\tsubject line", "X-Relay-Category: marketing", "", "body")
    message = parse_message(raw)
    subject, category = message.headers
    assert subject.value == "a long subject line"
    assert raw[subject.start : subject.end] == b"Subject: a long\r\n\tsubject line\r\n"
    assert raw[category.start : category.end] == b"X-Relay-Category: marketing\r\n"
    assert message.header("x-relay-category") == "marketing"
    assert raw[message.header_end :] == b"body"


def test_non_mime_message_is_one_plain_part() -> None:
    raw = mime("From: a@example.org", "", "caf\u00e9 <b>", "")
    message = parse_message(raw)
    (part,) = message.parts
    assert (part.content_type, part.cte, part.charset) == ("text/plain", "7bit", "")
    assert part.text == "caf\u00e9 <b>\r\n" and part.codec == "utf-8"
    assert part.header_start == 0 and part.body_end == len(raw)


def test_unknown_charset_and_bad_utf8_read_as_latin1() -> None:
    for charset in ("x-unheard-of", "utf-8"):
        raw = mime(f"Content-Type: text/html; charset={charset}", "", "") + b"\xff\xfe<img>"
        part = parse_message(raw).parts[0]
        assert part.codec == "latin-1"
        assert part.text == "\xff\xfe<img>"


def test_quoted_printable_text_keeps_hard_breaks() -> None:
    html = "<p>caf\u00e9 = x</p>\r\n" + "y" * 100
    body = binascii.b2a_qp(html.encode("utf-8"))
    raw = (
        mime(
            "Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"
        )
        + b"\r\n\r\n"
        + body
    )
    part = parse_message(raw).parts[0]
    assert part.text == html


def test_missing_final_boundary_is_a_defect_and_parts_are_kept() -> None:
    raw = mime(
        'Content-Type: multipart/alternative; boundary="b1"',
        "",
        "--b1",
        "Content-Type: text/plain",
        "",
        "plain",
        "--b1",
        "Content-Type: text/html",
        "",
        "<p>html</p>",
    )
    message = parse_message(raw)
    assert [p.text for p in message.parts] == ["plain", "<p>html</p>"]
    assert any("closing boundary missing" in d for d in message.defects)


def test_boundary_prefix_of_a_longer_line_is_not_a_delimiter() -> None:
    raw = mime(
        "Content-Type: multipart/mixed; boundary=b1",
        "",
        "--b1",
        "",
        "--b1x is text",
        "--b1--",
        "",
    )
    message = parse_message(raw)
    assert message.defects == ()
    assert [p.text for p in message.parts] == ["--b1x is text"]


def test_quoted_parameters_and_rfc2231_charset() -> None:
    assert content_type('Multipart/Mixed; boundary="a;b \\"c\\""; x=1') == (
        "multipart/mixed",
        {"boundary": 'a;b "c"', "x": "1"},
    )
    assert content_type("text/plain; charset*=utf-8''%e2") == ("text/plain", {"charset": "utf-8"})


@pytest.mark.parametrize(
    ("raw", "defect"),
    [
        (b"Subject: x\r\nno colon here\r\n\r\nbody", "header line 2 has no colon"),
        (b"Subject: x\r\nContent-Type: text/plain\r\n<html>\r\n", "no blank line"),
        (
            b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+x",
            "damaged base64",
        ),
        (b"Content-Type: multipart/mixed\r\n\r\nbody", "without a boundary"),
        (b"Content-Type: multipart/mixed; boundary=zz\r\n\r\nbody", "boundary 'zz' not found"),
        (b"Content-Transfer-Encoding: x-uue\r\n\r\nbody", "'x-uue' cannot be read"),
    ],
)
def test_malformed_input_is_a_named_defect(raw: bytes, defect: str) -> None:
    message = parse_message(raw)
    assert any(defect in d for d in message.defects), message.defects


def nested(depth: int) -> bytes:
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    )
    tail = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth)))
    return b"Subject: deep\r\n" + head + b"Content-Type: text/plain\r\n\r\nleaf" + tail


def test_nesting_limit_is_a_defect() -> None:
    assert parse_message(nested(5)).parts[0].text == "leaf"
    message = parse_message(nested(30), max_depth=20)
    assert message.parts == ()
    assert any("deeper than 20" in d for d in message.defects)


def test_part_count_limit_is_a_defect() -> None:
    body = b"".join(b"--b\r\n\r\npart %d\r\n" % i for i in range(20)) + b"--b--\r\n"
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body
    message = parse_message(raw, max_parts=10)
    assert len(message.parts) == 9
    assert any("more than 10 MIME parts" in d for d in message.defects)


def test_signed_and_encrypted_parts_are_locked() -> None:
    raw = mime(
        'Content-Type: multipart/mixed; boundary="o"',
        "",
        "--o",
        'Content-Type: multipart/signed; boundary="s"; protocol="application/pgp-signature"',
        "",
        "--s",
        "Content-Type: text/html",
        "",
        "<img src=x>",
        "--s",
        "Content-Type: application/pgp-signature",
        "",
        "sig",
        "--s--",
        "--o",
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data",
        "",
        "MIIB",
        "--o",
        "Content-Type: text/plain",
        "",
        "free",
        "--o--",
    )
    message = parse_message(raw)
    assert message.defects == ()
    assert [(p.content_type, p.locked) for p in message.parts] == [
        ("text/html", True),
        ("application/pgp-signature", True),
        ("application/pkcs7-mime", True),
        ("text/plain", False),
    ]


def test_attached_message_parts_are_found() -> None:
    raw = mime(
        "Content-Type: multipart/mixed; boundary=o",
        "",
        "--o",
        "Content-Type: message/rfc822",
        "",
        "Subject: inner",
        "Content-Type: text/html",
        "",
        "<p>inner</p>",
        "--o--",
    )
    message = parse_message(raw)
    assert message.defects == ()
    (part,) = message.parts
    assert part.text == "<p>inner</p>"
    assert raw[part.header_start :].startswith(b"Subject: inner")


@pytest.mark.parametrize("raw", [b"", b" \r\n\r\n "])
def test_empty_message_raises(raw: bytes) -> None:
    with pytest.raises(MalformedMessage, match="empty message"):
        parse_message(raw)


def test_not_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="wants bytes"):
        parse_message("Subject: x\r\n\r\n")  # type: ignore[arg-type]


# --- valid MIME that is no defect (issue 14, item 5) -----------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        # RFC 5322: a message may have no body at all.
        b"Subject: x\r\nContent-Type: text/plain\r\n",
        # RFC 2046 5.1.1: a part of header lines only; the line ending before the delimiter is
        # the delimiter's (shape of mime4j's multipartemptypart and notmuch's broken/empty-part).
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain'
        b"\r\n\r\nx\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n--b--\r\n",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\n--b--\r\n',
        # RFC 2045 6.1: an x-token transfer encoding on an attachment the relay never decodes.
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain'
        b"\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/zip\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a.zip\r\nend\r\n--b--\r\n",
        # RFC 2045 5.2: a Content-Type without subtype is read as text/plain (MimeKit's
        # missing-subtype.txt shape).
        b'Content-Type: application-x-gzip; name="document.xml.gz"\r\n\r\nblah blah blah\r\n',
    ],
)
def test_valid_mime_has_no_defect(raw: bytes) -> None:
    assert parse_message(raw).defects == ()


def test_an_empty_part_has_an_empty_body() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/html'
        b"\r\n\r\n--b--\r\n"
    )
    message = parse_message(raw)
    (part,) = message.parts
    assert (part.content_type, part.text, part.body_start, part.body_end) == (
        "text/html",
        "",
        part.body_end,
        part.body_end,
    )


def test_a_content_type_naming_html_without_subtype_is_read_as_html() -> None:
    """Nothing a lenient client might render as HTML goes unread."""
    message = parse_message(b"Content-Type: html\r\n\r\n<img src=x>\r\n")
    assert message.parts[0].content_type == "text/html"
    assert message.defects == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("text / html", "text/html"), ("text/html charset=utf-8", "text/html")],
)
def test_content_type_spacing_and_a_forgotten_semicolon(value: str, expected: str) -> None:
    assert content_type(value)[0] == expected


def test_what_is_past_a_limit_is_named_unread() -> None:
    deep = parse_message(nested(25) + b"<img src=x>\r\n")
    assert deep.unread and "not read" in deep.unread[0]
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(600))
    wide = parse_message(
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    )
    assert wide.unread == ("more than 500 MIME parts: the rest is not read",)
    assert parse_message(b"Subject: x\r\n\r\nbody").unread == ()
