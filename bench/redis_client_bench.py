"""What a Redis round trip costs the relay's process: the client's CPU per command, alone, two
at once (``asyncio.gather``, as the pipeline reads the ledger and the consent together) and two
in one pipeline (the issue-15 lever "one round trip before filtering, one after"), beside the
same command written by hand on an asyncio stream (the floor: one write, one read).

Run: ``.venv/bin/python bench/redis_client_bench.py [--ops 5000]``. Two clients, on uvloop,
against the embedded server: the relay's own (``relay.store.redis_conn.async_client``, the
shared connection of ``relay.store.multiplexed``) and redis-py's pooled client (with hiredis),
which the relay used before issue 15. The figure is this process's CPU time (the server's is not
counted), per operation, the least of three runs.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
import uvloop

from relay.settings import RedisSettings
from relay.store.embedded import EmbeddedRedis
from relay.store.redis_conn import AsyncRedis, async_client


async def _run(client: AsyncRedis, port: int, ops: int) -> dict[str, float]:
    await client.hset("bench:a", mapping={"f": "1"})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"*2\r\n$7\r\nHGETALL\r\n$7\r\nbench:a\r\n"
    reply = b"*2\r\n$1\r\nf\r\n$1\r\n1\r\n"

    async def raw() -> None:
        writer.write(request)
        assert await reader.readexactly(len(reply)) == reply

    async def single() -> None:
        await client.hgetall("bench:a")

    async def gathered() -> None:
        await asyncio.gather(client.hgetall("bench:a"), client.hgetall("bench:b"))

    async def pipelined() -> None:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall("bench:a")
        pipe.hgetall("bench:b")
        await pipe.execute()

    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "one command": single,
        "two, gathered": gathered,
        "two, one pipeline": pipelined,
        "one, by hand (RESP)": raw,
    }
    figures: dict[str, float] = {}
    for name, op in variants.items():
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for _ in range(ops):
                await op()
            best = min(best, (time.process_time() - started) / ops)
        figures[name] = best * 1e6
    writer.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000)
    args = parser.parse_args()
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="redis-bench-"))).start()
    clients: dict[str, Callable[[], AsyncRedis]] = {
        "relay (shared)": lambda: async_client(server.url, RedisSettings(url=server.url)),
        "redis-py pooled": lambda: aioredis.Redis.from_url(server.url),
    }
    try:
        for label, make in clients.items():
            client = make()

            async def body(client: AsyncRedis = client) -> dict[str, float]:
                try:
                    return await _run(client, server.port, args.ops)
                finally:
                    await client.aclose()

            figures = uvloop.run(body())
            print(label)
            for name, micros in figures.items():
                print(f"  {name:<20} {micros:6.1f} us of client CPU")
            saved = figures["two, gathered"] - figures["two, one pipeline"]
            print(f"  one pipeline instead of two commands saves {saved:.1f} us per message")
            overhead = figures["one command"] - figures["one, by hand (RESP)"]
            print(f"  the client's own work per command: {overhead:.1f} us")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
