"""Pixel gateway speed: ``/g/`` (consent held, and not) and ``/m/`` beside a static file.

Usage: ``.venv/bin/python bench/gateway_bench.py [--seconds 4] [--connections 16]``

One server process (the real app on uvicorn, as ``relay serve`` runs it, with a private
embedded Valkey and the real consent store) serves every target; a client process keeps
``--connections`` HTTP/1.1 keep-alive connections busy on one target at a time and measures
requests per second and latency percentiles. ``/healthz`` (a constant answer, no I/O) is shown
as the framework's ceiling. The baseline is the app's own static stylesheet,
served by the same server in the same run; the target is ``/g/`` >= 0.7x of it. The static run
is repeated at the end, so drift during the run shows.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from relay.core.links import LinkMinter, LinkSigner, gateway_link_id
from relay.core.recipients import recipient_key
from relay.model import Action, ConsentEvent, EventType, GatewayLink, Purpose
from relay.settings import SecretsSettings, Settings, WebSettings
from relay.store.embedded import EmbeddedRedis, free_port

HELD, NONE = "held@example.org", "none@example.org"
TRACKER = "https://tracker.example/open.gif?u=1"


def settings_for(port: int) -> Settings:
    return Settings(
        web=WebSettings(listen=f"127.0.0.1:{port}", public_url=f"http://127.0.0.1:{port}"),
        secrets=SecretsSettings(link_key="bench-link-key"),
    )


def serve(redis_url: str, port: int) -> None:
    """The server process: the real app, on uvicorn, as ``relay serve`` configures it."""
    import uvicorn

    from relay.store.consent import RedisConsentStore
    from relay.store.redis_conn import async_client
    from relay.store.redis_keys import Keys
    from relay.web.app import create_app
    from relay.web.limits import web_config

    settings = settings_for(port)
    client = async_client(redis_url, settings.redis)
    store = RedisConsentStore(
        client, Keys(settings.redis.prefix), settings.address_key, settings.consent
    )
    app = create_app(
        settings=settings,
        redis=client,
        store=store,
        signer=LinkSigner.from_settings(settings.secrets),
    )
    config = web_config(app, settings)
    config.host, config.port = "127.0.0.1", port
    uvicorn.Server(config).run()


async def seed(redis_url: str, settings: Settings) -> dict[str, str]:
    """Store the records the pipeline would write; return the paths to measure."""
    import redis.asyncio as aioredis

    from relay.store.consent import RedisConsentStore
    from relay.store.link_store import remember_recipients, store_gateway_links
    from relay.store.redis_keys import Keys

    client: aioredis.Redis = aioredis.Redis.from_url(redis_url)
    keys = Keys(settings.redis.prefix)
    store = RedisConsentStore(client, keys, settings.address_key, settings.consent)
    now = datetime.now(UTC)
    purpose = Purpose.CAMPAIGN_PERFORMANCE
    await store.record(
        ConsentEvent(EventType.GRANTED, (purpose,), HELD, now, actor="api", method="api")
    )
    link_id = gateway_link_id("<bench@x>", TRACKER)
    await store_gateway_links(
        client, keys, [GatewayLink(link_id, TRACKER, purpose, Action.GATEWAY)], 1
    )
    rkeys = {recipient_key(a, settings.address_key): a for a in (HELD, NONE)}
    await remember_recipients(client, keys, rkeys)
    await client.connection_pool.disconnect()
    minter = LinkMinter("", LinkSigner.from_settings(settings.secrets))
    held, none = (recipient_key(a, settings.address_key) for a in (HELD, NONE))
    return {
        "static /static/relay.css": "/static/relay.css",
        "/healthz (no I/O)": "/healthz",
        "/g/ consent held (302)": minter.gateway_url(held, link_id, purpose, now),
        "/g/ no consent (GIF)": minter.gateway_url(none, link_id, purpose, now),
        "/m/ minimise (GIF)": minter.minimise_url(none, link_id, now),
    }


async def _one_connection(
    port: int, path: str, until: float, latencies: list[float], expect: set[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n".encode()
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            if status not in expect:
                raise RuntimeError(f"{path}: unexpected status {status}")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def measure(
    port: int, path: str, seconds: float, connections: int, expect: set[int]
) -> tuple[float, float, float]:
    """(requests per second, p50 ms, p99 ms) of one target."""
    warm: list[float] = []
    await asyncio.gather(
        *(_one_connection(port, path, time.perf_counter() + 0.5, warm, expect)
          for _ in range(connections))
    )  # fmt: skip
    latencies: list[float] = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(
        *(_one_connection(port, path, until, latencies, expect) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return len(latencies) / elapsed, statistics.median(ordered) * 1000, p99 * 1000


def wait_for(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the web server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        valkey = EmbeddedRedis(Path(tmp) / "redis", appendonly=False).start()
        port = free_port()
        ctx = multiprocessing.get_context("spawn")
        server = ctx.Process(target=serve, args=(valkey.url, port), daemon=True)
        server.start()
        try:
            wait_for(port)
            targets = asyncio.run(seed(valkey.url, settings_for(port)))
            order = [*targets, "static /static/relay.css"]
            results: dict[str, list[tuple[float, float, float]]] = {}
            for name in order:
                expect = {302} if "302" in name else {200}
                figures = asyncio.run(
                    measure(port, targets[name], args.seconds, args.connections, expect)
                )
                results.setdefault(name, []).append(figures)
        finally:
            server.terminate()
            server.join(10)
            valkey.stop()
    base = statistics.mean(r[0] for r in results["static /static/relay.css"])
    print(f"{args.connections} keep-alive connections, {args.seconds:.0f} s per target, "
          "one uvicorn process, embedded Valkey")  # fmt: skip
    print(f"{'target':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'x static':>9}")
    for name, runs in results.items():
        for rps, p50, p99 in runs:
            print(f"{name:<28} {rps:>8.0f} {p50:>8.2f} {p99:>8.2f} {rps / base:>8.2f}x")
    worst = min(statistics.mean(r[0] for r in runs) for n, runs in results.items() if "/g/" in n)
    print(f"gateway / static: {worst / base:.2f}x (target >= 0.70x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
