"""SMTP throughput: N concurrent clients -> server under test -> sink, msgs/s and latency.

Two servers are measured in the same run, on the same messages, against the same sink:

- ``passthrough``: a plain aiosmtpd server that forwards every message unchanged through
  pooled aiosmtplib connections (the cheapest correct Python relay: the baseline);
- ``consent-relay``: ``relay serve --workers W`` with full filtering, embedded Redis, consent
  lookups, ledger, audit log.

Both run with the same number of processes (SO_REUSEPORT), the sink in a process of its own.
Usage: python bench/smtp_bench.py [--clients 20] [--messages 2000] [--workers 2] [--corpus DIR]
       [--rounds N] [--no-sink-pipelining] [--pipelining]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def reuseport_socket(port: int) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a server that writes replies one by one holds each behind Nagle's algorithm.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(512)
    return sock


# --- the sink -------------------------------------------------------------------------------


class _SinkHandler:
    """Accepts everything. Announces PIPELINING as Postfix and every modern MTA do (aiosmtpd
    reads pipelined commands correctly but does not say so), unless told not to."""

    def __init__(self, pipelining: bool) -> None:
        self.pipelining = pipelining
        self.received: Any = None

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.received is not None:
            with self.received.get_lock():
                self.received.value += len(envelope.rcpt_tos)
        return "250 2.0.0 ok"


def run_sink(port: int, pipelining: bool = True, received: Any = None) -> None:
    """The sink; ``received`` (a shared counter) counts the (message, recipient) pairs it took,
    so that a run can show every message was really delivered, not only answered 250."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handler = _SinkHandler(pipelining)
        handler.received = received
        server = await loop.create_server(
            lambda: SMTP(handler, decode_data=False, enable_SMTPUTF8=True),
            sock=reuseport_socket(port),
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- the passthrough baseline ---------------------------------------------------------------


class _Passthrough:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.pool: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        client = self.pool.get_nowait() if not self.pool.empty() else None
        if client is None or not client.is_connected:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.upstream_port, timeout=30)
            await client.connect()
        content = envelope.original_content
        assert isinstance(content, bytes)
        await client.sendmail(envelope.mail_from or "", envelope.rcpt_tos, content)
        self.pool.put_nowait(client)
        return "250 2.0.0 ok"


def run_passthrough(port: int, upstream_port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        handler = _Passthrough(upstream_port)
        server = await loop.create_server(
            lambda: SMTP(handler, decode_data=False, enable_SMTPUTF8=True),
            sock=reuseport_socket(port),
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- the load -------------------------------------------------------------------------------


def unique(data: bytes, tag: str) -> bytes:
    """The message with a Message-ID of its own, as real traffic has: without it, identical
    bytes sent at once by several clients would be one message to a relay that recognises
    retries (consent-relay's delivery ledger), and a benchmark would count copies never sent."""
    marker = b"\nMessage-ID: <"
    if marker in data:
        return data.replace(marker, marker + tag.encode() + b".", 1)
    return b"Message-ID: <" + tag.encode() + b"@bench.example>\r\n" + data


_CLIENTS = iter(range(1 << 30))


@dataclass(frozen=True)
class Pace:
    """An open-loop schedule: client ``offset`` of ``clients`` starts its n-th message at
    ``start + (n * clients + offset) / rate``. Its latency counts from that planned moment, not
    from when the client got round to it, so a server that falls behind shows it (no
    coordinated omission)."""

    start: float
    rate: float
    clients: int
    offset: int

    async def wait(self, n: int) -> float:
        planned = self.start + (n * self.clients + self.offset) / self.rate
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        return planned


async def _started(pace: Pace | None, n: int) -> float:
    return await pace.wait(n) if pace else time.perf_counter()


async def _client(
    port: int, messages: list[bytes], count: int, latencies: list[float], pace: Pace | None
) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
    await client.connect()
    me = next(_CLIENTS)
    for n in range(count):
        data = unique(messages[n % len(messages)], f"b{os.getpid()}-{me}-{n}")
        started = await _started(pace, n)
        await client.sendmail("bench@shop.example", [f"user{n % 50}@example.org"], data)
        latencies.append(time.perf_counter() - started)
    await client.quit()


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed")
        if line[3:4] != b"-":
            return line


async def _pipelining_client(
    port: int, messages: list[bytes], count: int, latencies: list[float], pace: Pace | None
) -> None:
    """What Postfix's and Exim's SMTP clients do (RFC 2920): MAIL, RCPT and DATA in one write,
    then the body and its end in one more; the replies read as they come."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    me = next(_CLIENTS)
    await _reply(reader)
    writer.write(b"EHLO pipelining.bench\r\n")
    await _reply(reader)
    for n in range(count):
        data = unique(messages[n % len(messages)], f"p{os.getpid()}-{me}-{n}")
        started = await _started(pace, n)
        rcpt = f"user{n % 50}@example.org".encode()
        writer.write(b"MAIL FROM:<bench@shop.example>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n")
        replies = [await _reply(reader) for _ in range(3)]
        if not replies[2].startswith(b"354"):
            raise RuntimeError(f"refused: {replies!r}")
        body = data.replace(b"\r\n.", b"\r\n..")
        writer.write(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        final = await _reply(reader)
        if not final.startswith(b"250"):
            raise RuntimeError(f"refused: {final!r}")
        latencies.append(time.perf_counter() - started)
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()


PIPELINING_CLIENTS = False  # --pipelining


async def load(
    port: int, messages: list[bytes], clients: int, total: int, rate: float | None = None
) -> dict[str, float]:
    """``clients`` connections sending ``total`` messages between them: as fast as the server
    answers, or at ``rate`` msg/s in all on an open-loop schedule (:class:`Pace`)."""
    latencies: list[float] = []
    per_client = max(1, total // clients)
    client = _pipelining_client if PIPELINING_CLIENTS else _client
    # Warm-up: connections, pools, caches.
    await asyncio.gather(*(client(port, messages, 5, [], None) for _ in range(clients)))
    started = time.perf_counter()
    paces: list[Pace | None] = [
        Pace(started, rate, clients, c) if rate else None for c in range(clients)
    ]
    await asyncio.gather(
        *(client(port, messages, per_client, latencies, paces[c]) for c in range(clients))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "msgs": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(64).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


def start_relay(
    workdir: Path, port: int, sink_port: int, workers: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    web_port = free_port()
    config = workdir / "config.toml"
    config.write_text(
        f"""
[smtp]
listen = "127.0.0.1:{port}"
hostname = "relay.bench"
[upstream]
url = "smtp://127.0.0.1:{sink_port}"
tls = "none"
pool_size = 8
[redis]
url = "embedded"
data_dir = "{workdir / "redis"}"
[web]
listen = "127.0.0.1:{web_port}"
public_url = "https://relay.bench.example"
[secrets]
link_key = "bench-key-0123456789"
[audit]
journal = "{workdir / "journal"}"
[log]
level = "WARNING"
"""
    )
    relay = shutil.which("relay", path=str(Path(sys.executable).parent)) or "relay"
    return subprocess.Popen(
        [relay, "serve", "--config", str(config), "--workers", str(workers)], cwd=workdir, env=env
    )


def corpus_messages(corpus: Path, only: str | None) -> list[bytes]:
    files = sorted(corpus.glob("*.eml"))
    if only:
        files = [f for f in files if f.name == only]
    return [f.read_bytes() for f in files]


def measure(
    label: str,
    port: int,
    messages: list[bytes],
    clients: int,
    total: int,
    rate: float | None = None,
) -> dict[str, float]:
    figures = asyncio.run(load(port, messages, clients, total, rate))
    print(
        f"  {label:<14} {figures['rate']:8.1f} msg/s   p50 {figures['p50']:7.1f} ms   "
        f"p99 {figures['p99']:7.1f} ms   ({int(figures['msgs'])} msgs)"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the two servers")
    parser.add_argument(
        "--pipelining",
        action="store_true",
        help="clients pipeline MAIL, RCPT and DATA as Postfix and Exim do (default: aiosmtplib)",
    )
    parser.add_argument(
        "--no-sink-pipelining",
        action="store_true",
        help="the sink does not announce PIPELINING (the relay then sends one command at a time)",
    )
    args = parser.parse_args()
    global PIPELINING_CLIENTS
    PIPELINING_CLIENTS = args.pipelining

    ctx = multiprocessing.get_context("spawn")
    sink_port, pass_port, relay_port = free_port(), free_port(), free_port()
    pipelining = not args.no_sink_pipelining
    procs = [ctx.Process(target=run_sink, args=(sink_port, pipelining), daemon=True)]
    procs += [
        ctx.Process(target=run_passthrough, args=(pass_port, sink_port), daemon=True)
        for _ in range(args.workers)
    ]
    for p in procs:
        p.start()
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    relay = start_relay(workdir, relay_port, sink_port, args.workers)
    try:
        for port in (sink_port, pass_port, relay_port):
            wait_port(port)
        print(
            f"machine: {os.cpu_count()} cores; {args.clients} clients; workers {args.workers}; "
            f"sink {'announces' if pipelining else 'does not announce'} PIPELINING"
        )
        for title, only in (
            ("corpus (16 newsletters)", None),
            ("reference-67k.eml", "reference-67k.eml"),
        ):
            messages = corpus_messages(args.corpus, only)
            if only is None:
                messages = [m for m in messages if len(m) < 60_000]
            print(title)
            ratios = []
            for _ in range(args.rounds):  # alternate, so that a loaded machine loads both alike
                base = measure("passthrough", pass_port, messages, args.clients, args.messages)
                ours = measure("consent-relay", relay_port, messages, args.clients, args.messages)
                ratios.append(ours["rate"] / base["rate"])
                print(f"  ratio          {ratios[-1]:.2f}x passthrough msg/s")
            if args.rounds > 1:
                print(
                    f"  median ratio   {statistics.median(ratios):.2f}x over {args.rounds} rounds"
                )
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=60)
        for p in procs:
            p.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
