"""An upstream that records the exact bytes it is sent: every command line and the DATA wire.

aiosmtpd parses the commands it receives (addresses through ``email._header_value_parser``),
upper-cases parameters and splits DATA on LF, so it cannot show what a relay really put on the
wire. This sink speaks SMTP by hand and interprets nothing it records: every command line is
kept as received, the message both as it came over the wire (dot-stuffed) and unstuffed, read
up to the first ``<CRLF>.<CRLF>`` exactly as RFC 5321 4.1.1.4 says, so that a test can assert
"bytes upstream == bytes filtered". It never repairs anything; a test judges what it recorded.

Scripting: ``replies[VERB]`` is a queue consumed one per occurrence of the verb (``EHLO``,
``MAIL``, ``RCPT``, ``DATA``, ``END`` for the end of the message, ``BODY`` for the first
bytes of a message, ``XFORWARD``, ``RSET``, ``GREETING``); an entry is a reply (bytes, CRLF
added), ``CLOSE`` (drop the connection instead) or ``HANG`` (never answer). ``rcpt_replies``
answers chosen recipients (key: the address between the brackets, lower-cased) every time.
``idle_close`` makes the server say ``421`` and close a connection idle that many seconds
(Postfix's smtpd_timeout). Pipelining is observed: a transaction is ``batched`` when its MAIL,
RCPT and DATA lines arrived in one read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from relay.store.embedded import free_port

CLOSE = b"<close>"
HANG = b"<hang>"
DEFAULT_EXTENSIONS = (
    "PIPELINING",
    "8BITMIME",
    "SMTPUTF8",
    "DSN",
    "SIZE 104857600",
    "ENHANCEDSTATUSCODES",
)


@dataclass
class RawTransaction:
    mail: bytes  # the MAIL command line as sent, without its CRLF
    rcpts: list[bytes] = field(default_factory=list)  # each accepted RCPT line as sent
    wire: bytes = b""  # DATA as sent, dot-stuffed, up to and without the final <CRLF>.<CRLF>
    data: bytes = b""  # ``wire`` dot-unstuffed, with the CRLF of its last line
    batched: bool = False  # MAIL, every RCPT and DATA arrived in one read (pipelined)

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


@dataclass
class RawSession:
    lines: list[bytes] = field(default_factory=list)
    reads: list[bytes] = field(default_factory=list)
    transactions: list[RawTransaction] = field(default_factory=list)
    tls: bool = False
    auth_user: str | None = None


class _Closed(Exception):
    pass


class RawSink:
    def __init__(
        self,
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        *,
        keep: bool = True,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
    ) -> None:
        self.keep = keep  # False: count the message bytes only (benchmarks)
        self.received_bytes = 0
        self.port = free_port()
        self.extensions = list(extensions)
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.users = users or {}
        self.replies: dict[str, list[bytes]] = {}
        self.rcpt_replies: dict[str, bytes] = {}
        self.idle_close: float | None = None
        self.broken_tls = False  # answer 220 to STARTTLS, then plaintext garbage, not TLS
        self.sessions: list[RawSession] = []
        self.transactions: list[RawTransaction] = []  # of every session, in order
        self.lines: list[bytes] = []  # every command line of every session, in order
        self.open = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._queue = 0

    @property
    def url(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}://127.0.0.1:{self.port}"

    def copies_for(self, rcpt: str) -> list[RawTransaction]:
        return [t for t in self.transactions if rcpt.encode() in t.rcpt_addresses()]

    def script(self, verb: str, *answers: bytes) -> None:
        self.replies.setdefault(verb, []).extend(answers)

    async def start(self) -> RawSink:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.tls if self.implicit_tls else None
        )
        return self

    def drop_all(self) -> None:
        """Close every connection without a word (an upstream restart)."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_all()
            await self._server.wait_closed()
            self._server = None

    # --- one session ------------------------------------------------------------------------

    def _scripted(self, verb: str) -> bytes | None:
        queue = self.replies.get(verb)
        return queue.pop(0) if queue else None

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        reply: bytes,
        reader: asyncio.StreamReader | None = None,
    ) -> None:
        if reply == CLOSE:
            writer.transport.abort()
            raise _Closed
        if reply == HANG:
            # Never answer; read (and drop) whatever comes until the client goes away.
            while reader is not None and await reader.read(1 << 16):
                pass
            raise _Closed
        writer.write(reply + b"\r\n")
        await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = RawSession(tls=self.implicit_tls)
        self.sessions.append(session)
        self._writers.add(writer)
        self.open += 1
        try:
            await self._send(writer, self._scripted("GREETING") or b"220 raw.sink ESMTP", reader)
            await _Dialogue(self, session, reader, writer).run()
        except (_Closed, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.transport.abort()


class _Dialogue:
    def __init__(
        self,
        sink: RawSink,
        session: RawSession,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.sink = sink
        self.session = session
        self.reader = reader
        self.writer = writer
        self.buffer = b""
        self.chunk = 0  # index of the read that completed the current line
        self.mail: tuple[bytes, int] | None = None
        self.rcpts: list[bytes] = []

    async def _more(self) -> None:
        timeout = self.sink.idle_close if not self.buffer else None
        try:
            async with asyncio.timeout(timeout):
                chunk = await self.reader.read(1 << 16)
        except TimeoutError:
            await self._send(b"421 4.4.2 raw.sink Error: timeout exceeded")
            raise _Closed from None
        if not chunk:
            raise _Closed
        self.session.reads.append(chunk)
        self.chunk = len(self.session.reads)
        self.buffer += chunk

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            await self._more()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        self.session.lines.append(line)
        self.sink.lines.append(line)
        return line

    async def _send(self, reply: bytes) -> None:
        await self.sink._send(self.writer, reply, self.reader)

    async def reply(self, verb: str, default: bytes) -> None:
        await self._send(self.sink._scripted(verb) or default)

    async def run(self) -> None:
        while True:
            line = await self.line()
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().decode("ascii", "replace")
            handler = getattr(self, f"do_{verb}", None)
            if handler is None:
                await self.reply(verb, b"502 5.5.2 command not recognised")
            elif await handler(line) is False:
                return

    async def do_EHLO(self, line: bytes) -> None:
        exts = [e for e in self.sink.extensions if e != "STARTTLS" or not self.session.tls]
        if self.sink.tls is not None and not self.session.tls and not self.sink.implicit_tls:
            exts.append("STARTTLS")
        if self.sink.users:
            exts.append("AUTH PLAIN LOGIN")
        text = [b"raw.sink", *(e.encode() for e in exts)]
        scripted = self.sink._scripted("EHLO")
        if scripted is not None:
            return await self._send(scripted)
        body = b"".join(b"250-" + t + b"\r\n" for t in text[:-1]) + b"250 " + text[-1]
        await self._send(body)

    async def do_HELO(self, line: bytes) -> None:
        await self.reply("HELO", b"250 raw.sink")

    async def do_STARTTLS(self, line: bytes) -> None:
        assert self.sink.tls is not None
        await self.reply("STARTTLS", b"220 2.0.0 ready")
        if self.sink.broken_tls:
            await self.reader.read(1 << 16)  # the client's hello
            await self._send(b"this is not a TLS handshake")
            raise _Closed
        await self.writer.start_tls(self.sink.tls)
        self.session.tls = True
        self.buffer = b""

    async def do_AUTH(self, line: bytes) -> None:
        words = line.split()
        mechanism = words[1].upper() if len(words) > 1 else b""
        if mechanism == b"PLAIN":
            if len(words) < 3:
                await self._send(b"334 ")
                words.append(await self.line())
            _, user, password = base64.b64decode(words[2]).split(b"\0")
        elif mechanism == b"LOGIN":
            await self._send(b"334 VXNlcm5hbWU6")
            user = base64.b64decode(await self.line())
            await self._send(b"334 UGFzc3dvcmQ6")
            password = base64.b64decode(await self.line())
        else:
            return await self._send(b"504 5.5.4 unrecognised mechanism")
        if self.sink.users.get(user.decode()) == password.decode():
            self.session.auth_user = user.decode()
            return await self._send(b"235 2.7.0 authenticated")
        await self._send(b"535 5.7.8 authentication failed")

    async def do_XFORWARD(self, line: bytes) -> None:
        await self.reply("XFORWARD", b"250 2.0.0 Ok")

    async def do_RSET(self, line: bytes) -> None:
        self.mail, self.rcpts = None, []
        await self.reply("RSET", b"250 2.0.0 Ok")

    async def do_NOOP(self, line: bytes) -> None:
        await self.reply("NOOP", b"250 2.0.0 Ok")

    async def do_QUIT(self, line: bytes) -> bool:
        await self.reply("QUIT", b"221 2.0.0 Bye")
        return False

    async def do_MAIL(self, line: bytes) -> None:
        scripted = self.sink._scripted("MAIL")
        if scripted is None and self.mail is not None:
            scripted = b"503 5.5.1 nested MAIL command"
        if scripted is None or scripted.startswith(b"2"):
            self.mail, self.rcpts = (line, self.chunk), []
        await self._send(scripted or b"250 2.1.0 Ok")

    async def do_RCPT(self, line: bytes) -> None:
        address = line.partition(b"<")[2].rpartition(b">")[0].decode("utf-8", "replace").lower()
        scripted = self.sink._scripted("RCPT") or self.sink.rcpt_replies.get(address)
        if self.mail is None:
            scripted = b"503 5.5.1 need MAIL command"
        if scripted is None or scripted.startswith(b"2"):
            self.rcpts.append(line)
        await self._send(scripted or b"250 2.1.5 Ok")

    async def do_DATA(self, line: bytes) -> None:
        batched = self.mail is not None and self.mail[1] == self.chunk
        scripted = self.sink._scripted("DATA")
        if scripted is None and not self.rcpts:
            scripted = b"554 5.5.1 Error: no valid recipients"
        if scripted is not None and scripted != CLOSE and not scripted.startswith(b"354"):
            return await self._send(scripted)
        await self._send(scripted or b"354 End data with <CR><LF>.<CR><LF>")
        wire = await self._message()
        self.sink.received_bytes += len(wire)
        data = wire.replace(b"\r\n..", b"\r\n.")
        data = data[1:] if data.startswith(b"..") else data
        if not self.sink.keep:
            wire = data = b""
        assert self.mail is not None
        if self.rcpts:
            txn = RawTransaction(self.mail[0], self.rcpts, wire, data, batched)
            self.session.transactions.append(txn)
            self.sink.transactions.append(txn)
        self.mail, self.rcpts = None, []
        self.sink._queue += 1
        await self.reply("END", b"250 2.0.0 Ok: queued as RAW%d" % self.sink._queue)

    async def _message(self) -> bytes:
        """Everything up to the end line (kept out), with its dots as sent."""
        first = True
        searched = 0  # the end line is not in buffer[:searched] (linear for large messages)
        while True:
            if first and self.buffer:
                first = False
                scripted = self.sink._scripted("BODY")
                if scripted is not None:
                    await self._send(scripted)
            if self.buffer.startswith(b".\r\n"):
                self.buffer = self.buffer[3:]
                return b""
            end = self.buffer.find(b"\r\n.\r\n", searched)
            if end != -1:
                wire, self.buffer = self.buffer[: end + 2], self.buffer[end + 5 :]
                return wire
            searched = max(0, len(self.buffer) - 4)
            await self._more()
