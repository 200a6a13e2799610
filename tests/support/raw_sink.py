"""An upstream that records the exact bytes it is sent: every command line and the DATA wire.

aiosmtpd parses the commands it receives (addresses through ``email._header_value_parser``)
and splits DATA on LF, so it cannot show what a relay really put on the wire. This sink speaks
just enough SMTP by hand: a greeting, an EHLO reply with chosen extensions, 250 to MAIL, RCPT,
RSET and NOOP, 354 to DATA, then it reads up to the first ``<CRLF>.<CRLF>`` exactly as RFC
5321 4.1.1.4 says and keeps both the wire bytes and the dot-unstuffed message.

Rule: it never repairs anything; a test judges what it recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from relay.store.embedded import free_port

DEFAULT_EXTENSIONS = ("PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "SIZE 104857600")


@dataclass
class RawTransaction:
    mail: bytes  # the MAIL command line as sent, without its CRLF
    rcpts: list[bytes] = field(default_factory=list)  # each RCPT line as sent
    wire: bytes = b""  # DATA as sent, up to and without the final <CRLF>.<CRLF>
    data: bytes = b""  # ``wire`` dot-unstuffed, with the CRLF of its last line

    def rcpt_addresses(self) -> list[bytes]:
        """The bytes between the angle brackets of each RCPT line (quotes respected)."""
        return [_path(line) for line in self.rcpts]


def _path(line: bytes) -> bytes:
    start = line.index(b"<") + 1
    quoted = escaped = False
    for index in range(start, len(line)):
        ch = line[index : index + 1]
        if escaped:
            escaped = False
        elif ch == b"\\":
            escaped = True
        elif ch == b'"':
            quoted = not quoted
        elif ch == b">" and not quoted:
            return line[start:index]
    return line[start:]


class RawSink:
    def __init__(
        self, extensions: tuple[str, ...] = DEFAULT_EXTENSIONS, *, keep: bool = True
    ) -> None:
        self.extensions = extensions
        self.keep = keep  # False: record each transaction's size only (benchmarks)
        self.received_bytes = 0
        self.port = free_port()
        self.transactions: list[RawTransaction] = []
        self.lines: list[bytes] = []  # every command line received, in order
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def copies_for(self, rcpt: str) -> list[RawTransaction]:
        return [t for t in self.transactions if rcpt.encode() in t.rcpt_addresses()]

    async def start(self) -> RawSink:
        # The whole DATA is one readuntil: the stream limit must exceed any test message.
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, limit=1 << 28)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self._session(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw-sink.test ESMTP\r\n")
        current: RawTransaction | None = None
        while True:
            line = (await reader.readuntil(b"\r\n"))[:-2]
            self.lines.append(line)
            verb = line[:4].upper()
            if verb == b"EHLO":
                lines = ["raw-sink.test", *self.extensions]
                text = "".join(
                    f"250{'-' if i < len(lines) - 1 else ' '}{x}\r\n" for i, x in enumerate(lines)
                )
                writer.write(text.encode())
            elif verb == b"HELO":
                writer.write(b"250 raw-sink.test\r\n")
            elif verb == b"MAIL":
                current = RawTransaction(mail=line)
                writer.write(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT" and current is not None:
                current.rcpts.append(line)
                writer.write(b"250 2.1.5 ok\r\n")
            elif verb == b"DATA" and current is not None:
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                wire = await reader.readuntil(b"\r\n.\r\n")
                self.received_bytes += len(wire)
                if not self.keep:
                    wire = b"\r\n.\r\n"
                current.wire = wire[:-5]
                body = b"\r\n" + current.wire + b"\r\n"
                current.data = body.replace(b"\r\n.", b"\r\n")[2:]
                self.transactions.append(current)
                current = None
                writer.write(b"250 2.0.0 recorded\r\n")
            elif verb == b"RSET":
                current = None
                writer.write(b"250 2.0.0 ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 2.0.0 ok\r\n")
            await writer.drain()
