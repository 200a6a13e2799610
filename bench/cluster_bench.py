"""Redis Cluster beside one server, same run: SMTP throughput, consent-lookup latency, memory.

Three measurements, each on both back ends started here from the shipped valkey-server:

- ``single``: one Valkey server (append-only file on) and one ``relay serve``;
- ``cluster``: a Valkey Cluster of 3 masters and 3 replicas (append-only on) and two
  ``relay serve`` processes sharing it, the clients split between them as a load balancer
  would; writes WAIT for one replica (``[redis] wait_replicas = 1``).

1. SMTP throughput and latency, the same messages and clients against both (consent lookup,
   ledger, links and audit record in Redis for every message);
2. consent-lookup latency: ``RedisConsentStore.states`` for 1 and 10 recipients with stored
   consent, straight from this process (what the pipeline waits for before filtering);
3. memory: ``used_memory_dataset`` summed over the masters before and after storing N
   recipients' consent (one granted event each, with a realistic proof), then one more event
   each (a consent request), N gateway links, N last-open days, and M decision records (two
   recipients a message): per recipient, per further event, per link, per day, per record.

Every process shares the machine's cores (the cluster side runs 6 servers and 2 relays), so
compare ratios from the same run. Usage:
python bench/cluster_bench.py [--clients 20] [--messages 1500] [--recipients 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import redis
from smtp_bench import free_port, run_sink, wait_port

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.support.cluster lives beside bench/, in the repository root
    sys.path.insert(0, str(ROOT))

from relay.model import Action, ConsentEvent, EventType, GatewayLink, Purpose  # noqa: E402
from relay.settings import ConsentSettings, RedisSettings  # noqa: E402
from relay.store.audit import AuditLog  # noqa: E402
from relay.store.audit_record import DecisionRecord, TrackerRecord, record_id  # noqa: E402
from relay.store.consent import RedisConsentStore  # noqa: E402
from relay.store.embedded import EmbeddedRedis  # noqa: E402
from relay.store.link_store import LINK_TTL_DAYS, LinkStore, day_number  # noqa: E402
from relay.store.redis_conn import AsyncRedis, async_client  # noqa: E402
from relay.store.redis_keys import Keys  # noqa: E402
from relay.store.replicated import Durability  # noqa: E402
from tests.support.cluster import ValkeyCluster  # noqa: E402

ADDRESS_KEY = b"bench-address-key"
LINK_KEY = "bench-key-0123456789"
KEYS = Keys("relay:")
MESSAGES = ROOT / "examples"


def _percentiles(samples: Sequence[float]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:6.2f} ms   p99 {p99 * 1000:6.2f} ms"


# --- 1. SMTP -------------------------------------------------------------------------------


def start_relay(workdir: Path, port: int, sink_port: int, url: str) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
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
url = "{url}"
journal = "{workdir / "redis-journal"}"
[web]
listen = "127.0.0.1:{free_port()}"
public_url = "https://relay.bench.example"
[secrets]
link_key = "{LINK_KEY}"
address_key = "{ADDRESS_KEY.decode()}"
[audit]
journal = "{workdir / "audit-journal"}"
[log]
level = "WARNING"
"""
    )
    relay = shutil.which("relay", path=str(Path(sys.executable).parent)) or "relay"
    return subprocess.Popen([relay, "serve", "--config", str(config)], cwd=workdir)


async def _client(port: int, messages: list[bytes], count: int, latencies: list[float]) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
    await client.connect()
    me = f"{port}.{id(latencies)}.{time.monotonic_ns()}".encode()
    for n in range(count):
        # Each message unique, as an application's are (its own Message-ID): identical bytes
        # sent concurrently would share one delivery-ledger entry.
        data = b"X-Bench-Seq: %s.%d\r\n" % (me, n) + messages[n % len(messages)]
        started = time.perf_counter()
        await client.sendmail("bench@shop.example", [f"user{n % 50}@example.org"], data)
        latencies.append(time.perf_counter() - started)
    await client.quit()


async def smtp_load(ports: Sequence[int], messages: list[bytes], clients: int, total: int) -> str:
    """Clients spread over ``ports`` (round robin, as HAProxy's ``balance roundrobin``)."""
    per_client = max(1, total // clients)
    await asyncio.gather(*(_client(ports[i % len(ports)], messages, 3, []) for i in range(clients)))
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(ports[i % len(ports)], messages, per_client, latencies) for i in range(clients))
    )
    rate = len(latencies) / (time.perf_counter() - started)
    return f"{rate:7.1f} msg/s   {_percentiles(latencies)}   ({len(latencies)} msgs)"


# --- 2. consent lookups and 3. memory ------------------------------------------------------


def _event(n: int) -> ConsentEvent:
    at = datetime(2026, 5, 1, tzinfo=UTC) + timedelta(seconds=n)
    return ConsentEvent(
        event=EventType.GRANTED,
        purposes=(Purpose.CAMPAIGN_PERFORMANCE, Purpose.DELIVERABILITY),
        address=f"reader{n}@example{n % 97}.org",
        occurred_at=at,
        actor="recipient",
        method="checkbox",
        source={"form_id": "signup-v3", "page": "https://shop.example/newsletter"},
        notice={"id": "newsletter", "version": "2026-04", "language": "fr"},
        evidence={"ip": f"198.51.100.{n % 250}", "user_agent": "Mozilla/5.0 (bench)"},
    )


def _requested(n: int) -> ConsentEvent:
    """A consent request the relay records itself (SPEC section 1), after the grant."""
    return ConsentEvent(
        event=EventType.REQUESTED,
        purposes=(Purpose.CAMPAIGN_PERFORMANCE,),
        address=f"reader{n}@example{n % 97}.org",
        occurred_at=datetime(2026, 5, 2, tzinfo=UTC) + timedelta(seconds=n),
        actor="system",
        method="relay",
        source={"message_ref": f"<ask{n}@mail.shop.example>"},
    )


def _link(n: int) -> GatewayLink:
    target = f"https://u123.ct.sendgrid.net/wf/open?upn=abcdefghijklmnopqrstuvwxyz{n:012d}"
    return GatewayLink(f"{n:024x}", target, Purpose.CAMPAIGN_PERFORMANCE, Action.GATEWAY)


def _record(n: int, message: int, rcpt: str, rkey: str, at: datetime) -> DecisionRecord:
    trackers = tuple(
        TrackerRecord(
            url=f"https://u123.ct.sendgrid.net/wf/open?upn={message:08x}{i}",
            element="img",
            rule="sendgrid-open",
            vendor="SendGrid",
            purpose="campaign_performance",
            basis="none",
            action="neutralise",
            policy_rule="cnil-default",
        )
        for i in range(2)
    )
    message_id = f"<{message:x}.bench@mail.shop.example>"
    return DecisionRecord(
        record_id=record_id("benchrelay01", at, message_id, n, rcpt),
        message_id=message_id,
        relay_id="benchrelay01",
        mail_from="bounces+123@mail.shop.example",
        header_from="Shop <news@shop.example>",
        rcpt=rcpt,
        recipient_key=rkey,
        category="newsletter",
        category_reason="header:list-id",
        pack="fr-cnil-2026",
        trackers=trackers,
        consent_event_ids=(),
        footer_injected=False,
        upstream_reply="250 2.0.0 Ok: queued as 4Xk2Lq0Y7Zz1",
        relay_version="0.1.0",
        rules_digest="sha256:5f0c2a9e41d7b3c8",
        received_at=at,
        decided_at=at + timedelta(milliseconds=3),
    )


def used_memory(ports: Sequence[int]) -> int:
    """``used_memory_dataset`` summed over the masters: the data and its per-key overhead,
    without the replication backlog and client buffers (fixed costs, not per record)."""
    total = 0
    for port in ports:
        with redis.Redis(port=port) as client:
            total += int(client.info("memory")["used_memory_dataset"])
    return total


async def _timed(runs: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return samples


async def stores(
    label: str, url: str, masters: Callable[[], list[int]], recipients: int, records: int
) -> None:
    settings = RedisSettings(url=url, timeout=10)
    client: AsyncRedis = async_client(url, settings)
    durability = Durability.for_url(url, settings)
    store = RedisConsentStore(client, KEYS, ADDRESS_KEY, ConsentSettings(), timeout=10,
                              durability=durability)  # fmt: skip
    log = AuditLog(client, KEYS, "/nonexistent/journal", timeout=10, retention_days=3650,
                   durability=durability)  # fmt: skip
    before = used_memory(masters())
    now = datetime.now(UTC)
    batch = [store.prepare(_event(n), now) for n in range(recipients)]
    for start in range(0, recipients, 1000):
        await store.append_many(batch[start : start + 1000])
    consent_bytes = used_memory(masters()) - before
    before = used_memory(masters())
    later = now + timedelta(seconds=1)
    batch = [store.prepare(_requested(n), later) for n in range(recipients)]
    for start in range(0, recipients, 1000):
        await store.append_many(batch[start : start + 1000])
    event_bytes = used_memory(masters()) - before
    before = used_memory(masters())
    links = LinkStore(client, KEYS, timeout=10, durability=durability)
    for start in range(0, recipients, 500):
        minted = [_link(n) for n in range(start, min(start + 500, recipients))]
        await links.store(minted, {}, ttl_days=LINK_TTL_DAYS)
    link_bytes = used_memory(masters()) - before
    before = used_memory(masters())
    day = day_number(now)
    for start in range(0, recipients, 500):
        pipe = client.pipeline(transaction=False)  # what note_open_day writes, batched
        for n in range(start, min(start + 500, recipients)):
            rkey = store.rkey(_event(n).address)
            pipe.zadd(KEYS.last_open(rkey), {rkey: day})
        await pipe.execute()
    open_bytes = used_memory(masters()) - before
    addresses = [_event(n).address for n in range(recipients)]
    one = await _timed(2000, lambda i: store.states([addresses[(i * 7919) % recipients]], now))
    ten = await _timed(
        1000, lambda i: store.states([addresses[(i * 31 + k) % recipients] for k in range(10)], now)
    )
    before = used_memory(masters())
    for message in range(records // 2):
        group = [
            _record(2 * message + j, message, addresses[(2 * message + j) % recipients],
                    store.rkey(addresses[(2 * message + j) % recipients]), now)
            for j in range(2)
        ]  # fmt: skip
        await log.write(group)
    audit_bytes = used_memory(masters()) - before
    await client.aclose()
    print(f"  {label:<8} consent lookup, 1 recipient    {_percentiles(one)}")
    print(f"  {label:<8} consent lookup, 10 recipients  {_percentiles(ten)}")
    print(
        f"  {label:<8} memory (masters; replicas double it): {consent_bytes / recipients:5.0f} B "
        f"per recipient with one proof, {event_bytes / recipients:5.0f} B per further event, "
        f"{link_bytes / recipients:4.0f} B per gateway link, {open_bytes / recipients:3.0f} B per "
        f"last-open day, {audit_bytes / records:4.0f} B per decision record"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="relay-cluster-bench-"))
    sink_port = free_port()
    sink = multiprocessing.get_context("spawn").Process(
        target=run_sink, args=(sink_port,), daemon=True
    )
    sink.start()
    single = EmbeddedRedis(workdir / "single", appendonly=True).start()
    cluster = ValkeyCluster(workdir / "cluster", appendonly=True).start()
    relays: list[subprocess.Popen[bytes]] = []
    try:
        one_port, ports = free_port(), [free_port(), free_port()]
        relays.append(start_relay(workdir / "r-single", one_port, sink_port, single.url))
        for n, port in enumerate(ports):
            relays.append(start_relay(workdir / f"r-cluster{n}", port, sink_port, cluster.url))
        for port in (sink_port, one_port, *ports):
            wait_port(port)
        messages = [m.read_bytes() for m in sorted(MESSAGES.glob("*.eml"))]
        messages = [m for m in messages if len(m) < 60_000]
        print(f"SMTP, {args.clients} clients, corpus of {len(messages)} messages")
        rows = (
            ("single   1 relay ", [one_port]),
            ("cluster  1 relay ", ports[:1]),
            ("cluster  2 relays", ports),
        )
        for label, targets in rows:
            figures = asyncio.run(smtp_load(targets, messages, args.clients, args.messages))
            print(f"  {label} {figures}")
        for relay in relays:
            relay.send_signal(signal.SIGTERM)
        for relay in relays:
            relay.wait(timeout=60)
        relays.clear()
        single_client = redis.Redis(port=single.port)
        single_client.flushall()
        single_client.close()
        cluster.flush()
        print(f"Stores, {args.recipients} recipients, {args.records} decision records")
        asyncio.run(stores("single", single.url, lambda: [single.port],
                           args.recipients, args.records))  # fmt: skip

        def masters() -> list[int]:
            return [n.port for n in cluster.primaries()]

        asyncio.run(stores("cluster", cluster.url, masters, args.recipients, args.records))
    finally:
        for relay in relays:
            relay.kill()
        cluster.stop()
        single.stop()
        sink.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
