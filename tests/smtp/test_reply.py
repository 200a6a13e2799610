"""Reply parsing: any split of the bytes, multi-line replies, bounds, text safe to repeat."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.smtp.reply import MAX_LINE, ReplyError, ReplyParser, ServerReply, parse_ehlo

# The shape of Gmail's multi-line refusal: the enhanced code repeated on every line.
GMAIL_550 = (
    b"550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
    b"550-5.1.1 double-checking the recipient's email address for typos or\r\n"
    b"550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser\r\n"
)
POSTFIX_EHLO = (
    b"250-postfix.test\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-VRFY\r\n250-ETRN\r\n"
    b"250-STARTTLS\r\n250-AUTH=LOGIN PLAIN\r\n250-AUTH PLAIN LOGIN CRAM-MD5\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
)


def test_multi_line_reply_keeps_the_enhanced_code_once() -> None:
    (reply,) = ReplyParser().feed(GMAIL_550)
    assert reply.code == 550 and reply.enhanced == "5.1.1"
    assert reply.message.startswith("5.1.1 The email account")
    assert reply.message.count("5.1.1") == 1
    assert "\n" not in reply.text and "\r" not in reply.text


@given(st.lists(st.integers(min_value=0, max_value=len(GMAIL_550 + POSTFIX_EHLO)), max_size=8))
def test_any_split_gives_the_same_replies(cuts: list[int]) -> None:
    data = b"250 2.1.0 Ok\r\n" + GMAIL_550 + POSTFIX_EHLO + b"354 End data\r\n"
    parser = ReplyParser()
    got: list[ServerReply] = []
    prev = 0
    for cut in [*sorted(cuts), len(data)]:
        got += parser.feed(data[prev:cut])
        prev = cut
    assert [r.code for r in got] == [250, 550, 250, 354]
    assert got == ReplyParser().feed(data)
    assert not parser.pending


def test_ehlo_keywords_including_the_old_auth_form() -> None:
    (reply,) = ReplyParser().feed(POSTFIX_EHLO)
    ext = parse_ehlo(reply)
    assert ext.has("pipelining") and ext.has("DSN") and ext.has("8BITMIME")
    assert ext.size_limit == 52428800
    assert ext.auth_mechanisms == {"LOGIN", "PLAIN", "CRAM-MD5"}


def test_a_reply_without_text_is_valid() -> None:
    (reply,) = ReplyParser().feed(b"250\r\n")
    assert reply.code == 250 and reply.text == "250"


@pytest.mark.parametrize(
    "bad",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"250-one\r\n251 two\r\n",  # the code changes inside one reply
        b"25O ok\r\n",
        b"650 no such class\r\n",
        b"250+ok\r\n",
    ],
)
def test_what_is_not_a_reply_is_an_error(bad: bytes) -> None:
    with pytest.raises(ReplyError):
        ReplyParser().feed(bad)


def test_memory_is_bounded_for_an_endless_line_or_reply() -> None:
    parser = ReplyParser()
    with pytest.raises(ReplyError):
        for _ in range(10):
            parser.feed(b"2" * (MAX_LINE // 4))
    with pytest.raises(ReplyError):
        ReplyParser().feed(b"250-x\r\n" * 300)


def test_control_characters_never_survive_into_the_text() -> None:
    """The text goes into the relay's own replies, logs and notices: a CR, NUL or an ESC
    sequence in it could forge a reply line or a log line."""
    (reply,) = ReplyParser().feed(b"550 5.7.1 no\x00 \x1b[31mred\x0bvt \xff\xfe bad\r\n")
    assert reply.code == 550
    assert all(ch == "\t" or ord(ch) >= 32 for ch in reply.message)
    assert "\x1b" not in reply.text and "\x00" not in reply.text
