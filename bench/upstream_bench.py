"""The upstream client alone: the relay's own (pipelined, and one command at a time) against
aiosmtplib, the client it replaced, in one run, interleaved.

Each variant sends the same messages with the same concurrency to the same sink process (an
aiosmtpd server announcing PIPELINING on one port and not on another), over pooled connections:

- ``aiosmtplib``: pooled ``aiosmtplib.SMTP`` connections and ``sendmail`` (what the relay used
  and what the passthrough baseline of smtp_bench.py still uses);
- ``ours, lock-step``: ``SmtpUpstream`` to the port without PIPELINING;
- ``ours, pipelined``: ``SmtpUpstream`` to the port with PIPELINING (RFC 2920).

Rule 1: the variants run in alternation, ``--rounds`` times, each round in a shuffled order,
        so that the load of a shared machine falls on all of them alike; figures are medians
        over the rounds.
Rule 2: besides msg/s and the latency of each send (p50, p99), the CPU time of this process
        per message is printed: on a loaded machine it moves far less than wall-clock rates.
Rule 3: ``--rtt-ms D`` puts a proxy between the clients and the sinks that holds every chunk
        D/2 ms in each direction, as a network between the relay and a remote upstream would:
        on loopback a round trip costs almost nothing, which hides what pipelining saves.
Usage: python bench/upstream_bench.py [--clients 20] [--messages 1000] [--rounds 5] [--rtt-ms D]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosmtplib
from smtp_bench import DEFAULT_CORPUS, corpus_messages, free_port, run_sink, wait_port

from relay.outbound.forward import SmtpUpstream
from relay.settings import UpstreamSettings

Send = Callable[[bytes, str], Awaitable[bool]]


def run_delay_proxy(port: int, target: int, rtt_ms: float) -> None:
    """Rule 3: forwards each connection to ``target``, every chunk delayed rtt/2 each way."""
    delay = rtt_ms / 2000

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        task = asyncio.ensure_future(deliver())
        while chunk := await reader.read(1 << 16):
            queue.put_nowait((time.monotonic() + delay, chunk))
        queue.put_nowait((time.monotonic() + delay, b""))
        await task

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def aiosmtplib_sender(port: int, pool_size: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    pool: list[aiosmtplib.SMTP] = []
    slots = asyncio.Semaphore(pool_size)

    async def send(data: bytes, rcpt: str) -> bool:
        async with slots:
            client = pool.pop() if pool else None
            if client is None or not client.is_connected:
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
                await client.connect()
            errors, _ = await client.sendmail("bench@shop.example", [rcpt], data)
            pool.append(client)
            return not errors

    async def close() -> None:
        for client in pool:
            client.close()

    return send, close


def our_sender(port: int, pool_size: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    settings = UpstreamSettings(
        url=f"smtp://127.0.0.1:{port}", tls="none", timeout=30.0, pool_size=pool_size
    )
    upstream = SmtpUpstream(settings, "bench.test")

    async def send(data: bytes, rcpt: str) -> bool:
        outcome = await upstream.send("bench@shop.example", [rcpt], data, [])
        return bool(outcome.accepted())

    return send, upstream.close


async def one_round(
    send: Send, messages: list[bytes], clients: int, total: int
) -> tuple[float, float, list[float]]:
    latencies: list[float] = []
    per_client = max(1, total // clients)

    async def client(n: int) -> None:
        for i in range(per_client):
            data = messages[(n + i) % len(messages)]
            started = time.perf_counter()
            ok = await send(data, f"user{i % 50}@example.org")
            latencies.append(time.perf_counter() - started)
            assert ok, "the sink refused a message"

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return time.perf_counter() - wall, time.process_time() - cpu, latencies


async def run(args: argparse.Namespace, messages: list[bytes], ports: tuple[int, int]) -> None:
    with_pipelining, without = ports
    variants = {
        "aiosmtplib": aiosmtplib_sender(without, args.clients),
        "ours, lock-step": our_sender(without, args.clients),
        "ours, pipelined": our_sender(with_pipelining, args.clients),
    }
    figures: dict[str, dict[str, list[float]]] = {
        name: {"rate": [], "cpu": [], "p50": [], "p99": []} for name in variants
    }
    for send, _ in variants.values():  # warm-up: connections, caches
        await one_round(send, messages, args.clients, args.clients * 5)
    order = list(variants)
    for _ in range(args.rounds):
        random.shuffle(order)
        for name in order:
            send, _ = variants[name]
            wall, cpu, latencies = await one_round(send, messages, args.clients, args.messages)
            latencies.sort()
            got = figures[name]
            got["rate"].append(len(latencies) / wall)
            got["cpu"].append(cpu / len(latencies) * 1e6)
            got["p50"].append(statistics.median(latencies) * 1000)
            got["p99"].append(latencies[int(len(latencies) * 0.99) - 1] * 1000)
    for _, close in variants.values():
        await close()
    base = {k: statistics.median(v) for k, v in figures["aiosmtplib"].items()}
    for name, got in figures.items():
        med = {k: statistics.median(v) for k, v in got.items()}
        print(
            f"  {name:<16} {med['rate']:8.1f} msg/s ({med['rate'] / base['rate']:.2f}x)   "
            f"CPU {med['cpu']:6.0f} us/msg ({med['cpu'] / base['cpu']:.2f}x)   "
            f"p50 {med['p50']:6.1f} ms   p99 {med['p99']:6.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=1000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="simulated round trip (Rule 3)")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    sink_ports = (free_port(), free_port())
    sinks = [
        ctx.Process(target=run_sink, args=(sink_ports[0], True), daemon=True),
        ctx.Process(target=run_sink, args=(sink_ports[1], False), daemon=True),
    ]
    ports = sink_ports
    if args.rtt_ms:
        ports = (free_port(), free_port())
        sinks += [
            ctx.Process(target=run_delay_proxy, args=(p, s, args.rtt_ms), daemon=True)
            for p, s in zip(ports, sink_ports, strict=True)
        ]
    for sink in sinks:
        sink.start()
    try:
        for port in ports:
            wait_port(port)
        print(
            f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
            f"{args.clients} concurrent sends, {args.messages} msgs x {args.rounds} rounds; "
            f"round trip {args.rtt_ms or 'loopback'} ms; medians, ratios to aiosmtplib"
        )
        for title, only in (("corpus (< 60 KB)", None), ("reference-67k.eml", "reference-67k.eml")):
            messages = corpus_messages(args.corpus, only)
            if only is None:
                messages = [m for m in messages if len(m) < 60_000]
            print(title)
            asyncio.run(run(args, messages, ports))
    finally:
        for sink in sinks:
            sink.kill()


if __name__ == "__main__":
    main()
