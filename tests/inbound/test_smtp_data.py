"""The bulk DATA reader against asyncio's real StreamReader, fed as a socket would feed it."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.inbound.data import read_data
from relay.smtp.octets import unstuff


def _reader(*chunks: bytes, eof: bool = False) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1001)  # what aiosmtpd gives its reader
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b".\r\n", b""),
        (b"hello\r\n.\r\n", b"hello\r\n"),
        (b"end of sentence.\r\nnext\r\n.\r\n", b"end of sentence.\r\nnext\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),  # a line holding one dot, stuffed
        (b"..leading dot\r\n..\r\nx.\r\n.\r\n", b".leading dot\r\n.\r\nx.\r\n"),
        (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n"),  # LF.LF never ends DATA (no smuggling)
    ],
)
async def test_message_ends_only_at_crlf_dot_crlf(wire: bytes, content: bytes) -> None:
    reader = _reader(wire + b"QUIT\r\n")
    result = await read_data(reader, 10_000)
    assert result.content == content
    assert await reader.readline() == b"QUIT\r\n"  # pipelined commands stay in the stream


async def test_end_split_across_segments() -> None:
    reader = _reader(b"line one\r\n")

    async def feed() -> None:
        for piece in (b"line two\r", b"\n.", b"\r", b"\nMAIL FROM:<a@b>\r\n"):
            await asyncio.sleep(0.01)
            reader.feed_data(piece)

    task = asyncio.create_task(feed())
    result = await read_data(reader, 10_000)
    await task
    assert result.content == b"line one\r\nline two\r\n"
    assert await reader.readline() == b"MAIL FROM:<a@b>\r\n"


async def test_oversized_message_is_read_to_its_end_and_refused() -> None:
    body = b"x" * 80 + b"\r\n"
    reader = _reader(body * 100, b".\r\n", b"RSET\r\n")
    result = await read_data(reader, 1000)
    assert result.content is None and result.too_big
    assert await reader.readline() == b"RSET\r\n"


async def test_line_over_1000_octets_is_refused() -> None:
    result = await read_data(_reader(b"y" * 1001 + b"\r\n.\r\n"), 100_000)
    assert result.content is None and result.line_too_long
    ok = await read_data(_reader(b"y" * 998 + b"\r\n.\r\n"), 100_000)
    assert ok.content == b"y" * 998 + b"\r\n"


async def test_client_gone_mid_message_raises() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await read_data(_reader(b"half a message\r\n", eof=True), 10_000)


lines = st.lists(st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b))


@given(lines)
def test_stuffing_then_unstuffing_gives_the_lines_back(content: list[bytes]) -> None:
    message = b"".join(line + b"\r\n" for line in content)
    stuffed = b"".join(
        (b"." + line if line.startswith(b".") else line) + b"\r\n" for line in content
    )
    assert unstuff(stuffed) == message

    async def run() -> bytes | None:
        return (await read_data(_reader(stuffed + b".\r\n"), None)).content

    assert asyncio.run(run()) == message
