"""A real aiosmtpd server used as the relay's upstream, with injectable faults.

Faults are set per test: a reply code for chosen recipients at RCPT, a reply for DATA (for the
next N transactions), a delay before answering DATA, or dropping the connection at DATA.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.store.embedded import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]


@dataclass
class Faults:
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # lower-cased rcpt -> reply
    data_replies: list[str] = field(default_factory=list)  # consumed one per DATA
    data_delay: float = 0.0
    drop_at_data: int = 0  # drop the connection at the next N DATA commands
    fail_data_for: dict[str, str] = field(default_factory=dict)  # rcpt in group -> reply, once
    reply_delay: float = 0.0  # seconds between keeping a message and answering 250 (RFC 1047)


class SinkHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.faults = Faults()
        self.transactions = 0

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        # aiosmtpd treats an empty sender as "no MAIL yet"; keep the null sender as "<>".
        envelope.mail_from = address or "<>"
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.faults.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.transactions += 1
        if self.faults.drop_at_data > 0:
            self.faults.drop_at_data -= 1
            assert server.transport is not None
            server.transport.close()
            return "421 dropped"
        for rcpt in envelope.rcpt_tos:
            reply = self.faults.fail_data_for.pop(rcpt.lower(), None)
            if reply:
                return reply
        if self.faults.data_replies:
            reply = self.faults.data_replies.pop(0)
            if not reply.startswith("2"):
                return reply
        if self.faults.data_delay:
            await asyncio.sleep(self.faults.data_delay)
        content = envelope.original_content
        assert isinstance(content, bytes)
        self.received.append(
            Received(
                "" if envelope.mail_from == "<>" else (envelope.mail_from or ""),
                list(envelope.rcpt_tos),
                content,
                list(envelope.mail_options),
            )
        )
        if self.faults.reply_delay:
            await asyncio.sleep(self.faults.reply_delay)
        return "250 2.0.0 queued"

    def copies_for(self, rcpt: str) -> list[Received]:
        return [r for r in self.received if rcpt in r.rcpt_tos]


class Sink:
    def __init__(self) -> None:
        self.handler = SinkHandler()
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.connections = 0
        self.protocols: list[SMTP] = []

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def start(self) -> Sink:
        loop = asyncio.get_running_loop()

        def factory() -> SMTP:
            self.connections += 1
            proto = SMTP(
                self.handler, decode_data=False, enable_SMTPUTF8=True, hostname="sink.test"
            )
            self.protocols.append(proto)
            return proto

        self.server = await loop.create_server(factory, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        """Stop listening and drop every open connection (like an upstream restart)."""
        if self.server is not None:
            self.server.close()
            for proto in self.protocols:
                if proto.transport is not None:
                    proto.transport.close()
            self.protocols.clear()
            await self.server.wait_closed()
            self.server = None
