"""What receiving a message costs an SMTP server that does nothing with it: aiosmtpd with the
relay's bulk DATA reader against a bare asyncio protocol, the ceiling of what an SMTP server loop
of the relay's own could save (issue 15, lever "an SMTP server loop of our own").

Run: ``.venv/bin/python bench/smtp_server_floor.py [--messages 3000] [--rounds 2]``.

Both servers run in a process of their own on uvloop, answer 250 to everything and keep nothing;
the load is ``smtp_bench.load`` (20 aiosmtplib clients, the corpus and reference-67k.eml), and
the figure is the server process's CPU time per message from /proc (``proc_cpu``, warm-up
excluded), beside
its rate. The bare protocol is no SMTP server (no TLS, AUTH, PROXY, limits, timeouts or syntax
checks): it is the floor, the cost of the system calls and of reading the bytes once.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
from collections.abc import Callable
from typing import Any, cast

import smtp_bench
import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session
from proc_cpu import tree_cpu
from smtp_bench import DEFAULT_CORPUS, corpus_messages, free_port, wait_port

from relay.inbound.data import read_data


class BulkDataSMTP(SMTP):
    """aiosmtpd with the relay's DATA reader (``relay.inbound.data``), as ``RelaySMTP`` has."""

    async def smtp_DATA(self, arg: str) -> None:
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        result = await read_data(self._reader, None)
        self.envelope.content = result.content
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK")


class AcceptAll:
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"


class BareProtocol(asyncio.Protocol):
    """Lines and a DATA body found with ``bytes.find``, one write per reply: the floor."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not derive from asyncio's.
        self.transport = cast("asyncio.Transport", transport)
        self.buffer = b""
        self.in_data = False
        self.transport.write(b"220 floor ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.buffer, self.in_data = self.buffer[end + 5 :], False
                self.transport.write(b"250 OK\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            verb, self.buffer = self.buffer[:4].upper(), self.buffer[end + 2 :]
            if verb == b"EHLO":
                self.transport.write(b"250-floor\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"250 OK\r\n")


def _serve(factory: Callable[[], asyncio.BaseProtocol], port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(factory, "127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_aiosmtpd(port: int) -> None:
    _serve(lambda: BulkDataSMTP(AcceptAll(), decode_data=False, hostname="floor"), port)


def serve_bare(port: int) -> None:
    _serve(BareProtocol, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    servers = {"aiosmtpd + bulk DATA": serve_aiosmtpd, "bare protocol": serve_bare}
    for _ in range(args.rounds):  # alternated, so that a loaded machine loads both alike
        for name, target in servers.items():
            port = free_port()
            process = context.Process(target=target, args=(port,), daemon=True)
            process.start()
            try:
                wait_port(port)
                for only in (None, "reference-67k.eml"):
                    messages = corpus_messages(DEFAULT_CORPUS, only)
                    if only is None:
                        messages = [m for m in messages if len(m) < 60_000]
                    asyncio.run(smtp_bench.load(port, messages, 20, 400))  # warm-up
                    assert process.pid is not None
                    before = tree_cpu([process.pid])
                    figures = asyncio.run(smtp_bench.load(port, messages, 20, args.messages))
                    # load() sends 5 warm-up messages per client before it measures.
                    count = figures["msgs"] + 5 * 20
                    per = (tree_cpu([process.pid]) - before) / count * 1000
                    print(
                        f"{name:<22} {only or 'corpus':<18} {figures['rate']:7.0f} msg/s   "
                        f"server CPU {per:.3f} ms per message"
                    )
            finally:
                process.kill()


if __name__ == "__main__":
    main()
