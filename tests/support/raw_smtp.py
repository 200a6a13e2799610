"""A blocking raw SMTP client: bytes on the wire exactly as written (smtplib would repair them).

Call through ``asyncio.to_thread`` from async tests.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence


class RawClient:
    def __init__(self, port: int, host: str = "127.0.0.1", source: str | None = None) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=20, source_address=(source, 0) if source else None
        )
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> bytes:
        """One whole reply (every line of a multi-line one); b"" if the server closed."""
        lines = b""
        while True:
            line = self.file.readline()
            lines += line
            if len(line) < 4 or line[3:4] != b"-":
                return lines

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def half_close(self) -> None:
        """Shut our write side (a TCP FIN): the server may still answer."""
        self.sock.shutdown(socket.SHUT_WR)

    def rest(self) -> bytes:
        """Everything the server sends until it closes."""
        out = b""
        while chunk := self.file.read1(65536):
            out += chunk
        return out

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def transaction(
    port: int,
    data: bytes,
    *,
    mail: bytes = b"<app@shop.example>",
    rcpts: Sequence[bytes] = (b"<alice@example.org>",),
) -> list[bytes]:
    """EHLO, MAIL, RCPT..., DATA with ``data`` (sent as is, then ``.<CRLF>``), QUIT: every reply."""
    client = RawClient(port)
    try:
        replies = [client.cmd(b"EHLO raw.test"), client.cmd(b"MAIL FROM:" + mail)]
        replies += [client.cmd(b"RCPT TO:" + rcpt) for rcpt in rcpts]
        replies.append(client.cmd(b"DATA"))
        if replies[-1].startswith(b"354"):
            client.send(data + b".\r\n")
            replies.append(client.reply())
        replies.append(client.cmd(b"QUIT"))
        return replies
    finally:
        client.close()
