"""Memory of one fanned-out message: peak RSS of a relay sending one large message whose every
recipient gets a version of its own (a per-recipient link), with and without the render budget.

Each setting runs in a fresh process (peak RSS is per process): an in-process relay (real
embedded Redis, real SMTP) in front of a sink that counts bytes and keeps nothing.
Usage: python bench/fanout_memory.py [--rcpts 100] [--mb 2.7]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import smtplib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _message(size: int) -> bytes:
    head = (
        "From: news@shop.example\r\nTo: list@example.org\r\nSubject: big\r\n"
        "Message-ID: <big@shop.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n<p>{{relay:preferences_url}}</p>\r\n"
    )
    line = "<p>" + "lorem ipsum dolor sit amet " * 3 + "</p>\r\n"
    return (head + line * (size // len(line))).encode()


async def _run(rcpts: int, size: int, budget: int) -> tuple[int, int]:
    from relay.store.embedded import EmbeddedRedis
    from tests.support.harness import make_settings, start_relay
    from tests.support.raw_sink import RawSink

    tmp = Path(tempfile.mkdtemp())
    redis = EmbeddedRedis(tmp / "redis", appendonly=False).start()
    sink = await RawSink(keep=False).start()
    settings = make_settings(tmp, redis.url, sink.url, smtp={"max_render_bytes": budget})
    running = await start_relay(settings, redis.url)
    data = _message(size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=600) as client:
            client.sendmail("news@shop.example", [f"r{n}@example.org" for n in range(rcpts)], data)

    await asyncio.to_thread(send)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    delivered = len(sink.transactions)
    sink.transactions.clear()
    await running.stop()
    await sink.stop()
    redis.stop()
    return (peak - before) // 1024, delivered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rcpts", type=int, default=100)
    parser.add_argument("--mb", type=float, default=2.7)
    parser.add_argument("--budget", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = int(args.mb * 1024 * 1024)
    if args.budget >= 0:
        grew, delivered = asyncio.run(_run(args.rcpts, size, args.budget))
        print(f"{grew} {delivered}")
        return
    print(f"one {args.mb} MB message to {args.rcpts} recipients, each its own version")
    for label, budget in (("no budget (before)", 0), ("default budget 128 MiB", 134_217_728)):
        out = subprocess.run(
            [sys.executable, __file__, "--rcpts", str(args.rcpts), "--mb", str(args.mb),
             "--budget", str(budget)],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        print(f"  {label:24} peak RSS +{out[0]} MB, {out[1]} copies delivered")


if __name__ == "__main__":
    main()
