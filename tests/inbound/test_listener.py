"""The listening sockets: accepted connections go without Nagle's delay."""

from __future__ import annotations

import asyncio
import socket

from relay.inbound.listener import claim


async def test_accepted_connections_have_tcp_nodelay() -> None:
    held = claim("smtp.listen", "127.0.0.1:0")
    seen: list[int] = []

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=held.sockets[0])
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", held.port)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
        held.close()
    assert seen == [1]
