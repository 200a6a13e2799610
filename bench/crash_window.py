"""kill -9 the relay again and again while a retrying client sends: count copies per message.

A client sends N messages in turn, each to two recipients who get a version of their own (a
per-recipient link, so two upstream transactions), and like an MTA sends the same bytes again
until it gets a 250 (a killed relay gives it a broken connection). The upstream answers each
transaction after 0-40 ms, as real ones vary, so one group is often accepted while the other
is still on its way. Meanwhile the relay (``relay serve``, with a Valkey of its own that
survives the kills) is killed with SIGKILL every 0.2-0.6 s and restarted. At the end the
upstream sink tells, per (message, recipient) pair, how many copies arrived: 2+ is a duplicate,
0 after a 250 a loss.

``--code DIR`` runs the relay from another checkout (e.g. main) with the same settings, so the
window before and after a change is measured in the same run on the same machine.
Usage: python bench/crash_window.py [--messages 400] [--kills 40] [--code DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay.store.embedded import EmbeddedRedis, free_port  # noqa: E402
from tests.support.smtp_sink import Sink, SinkHandler  # noqa: E402


class VaryingSink(SinkHandler):
    """Keeps each message, then answers after 0-40 ms."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        reply = await super().handle_DATA(server, session, envelope)  # type: ignore[arg-type]
        await asyncio.sleep(random.uniform(0, 0.04))
        return reply


def _config(tmp: Path, port: int, redis_url: str, upstream: str) -> Path:
    web = free_port()
    (tmp / "rules.local").mkdir(exist_ok=True)
    path = tmp / "config.toml"
    path.write_text(
        f'[smtp]\nlisten = "127.0.0.1:{port}"\nprocess_pool = 0\n'
        f'[upstream]\nurl = "{upstream}"\ntls = "none"\n'
        f'[redis]\nurl = "{redis_url}"\n'
        f'[web]\nlisten = "127.0.0.1:{web}"\npublic_url = "http://127.0.0.1:{web}"\n'
        f'[secrets]\nlink_key = "bench-key"\n[rules]\nlocal_dir = "{tmp / "rules.local"}"\n'
        f'[audit]\njournal = "{tmp / "journal"}"\n[log]\nlevel = "ERROR"\n'
    )
    return path


def _serve(tmp: Path, config: Path, port: int, code: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RELAY_CONFIG": str(config), "PYTHONPATH": str(code)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"], cwd=tmp, env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as client:
                client.noop()
                return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("relay did not start")


def _client(port: int, count: int, accepted: list[int], stop: threading.Event) -> None:
    for n in range(count):
        data = (
            f"From: app@shop.example\r\nSubject: m{n}\r\nMessage-ID: <m{n}@shop.example>\r\n"
            f"\r\nbody {n} {{{{relay:withdraw_url}}}}\r\n"
        ).encode()
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                    client.sendmail(
                        "app@shop.example", [f"a{n}@example.org", f"b{n}@example.org"], data
                    )
                accepted.append(n)
                break
            except (smtplib.SMTPException, OSError):
                time.sleep(0.02)


async def run(messages: int, kills: int, code: Path) -> tuple[int, int, int]:
    tmp = Path(tempfile.mkdtemp())
    redis = EmbeddedRedis(tmp / "redis", appendonly=False).start()
    sink = Sink()
    sink.handler = VaryingSink()
    await sink.start()
    port = free_port()
    config = _config(tmp, port, redis.url, sink.url)
    proc = await asyncio.to_thread(_serve, tmp, config, port, code)
    accepted: list[int] = []
    stop = threading.Event()
    client = asyncio.create_task(asyncio.to_thread(_client, port, messages, accepted, stop))
    done = 0
    while done < kills and not client.done():
        await asyncio.sleep(random.uniform(0.2, 0.6))
        proc.kill()
        proc.wait()
        done += 1
        proc = await asyncio.to_thread(_serve, tmp, config, port, code)
    await client
    proc.terminate()
    proc.wait()
    copies: dict[str, int] = {}
    for received in sink.handler.received:
        for rcpt in received.rcpt_tos:
            copies[rcpt] = copies.get(rcpt, 0) + 1
    await sink.stop()
    redis.stop()
    duplicates = sum(1 for c in copies.values() if c > 1)
    lost = sum(1 for n in accepted for r in "ab" if copies.get(f"{r}{n}@example.org", 0) == 0)
    return done, duplicates, lost


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--code", action="append", type=Path, default=[])
    args = parser.parse_args()
    for code in args.code or [ROOT]:
        kills, duplicates, lost = asyncio.run(run(args.messages, args.kills, code))
        print(
            f"{code}: {args.messages} messages, {kills} kills -9: "
            f"{duplicates} of {2 * args.messages} pairs delivered twice, {lost} lost after a 250"
        )


if __name__ == "__main__":
    main()
