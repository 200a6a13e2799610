"""Benchmark of the auditors' decision log: lookups on millions of records, memory per record.

Usage: ``.venv/bin/python bench/audit_bench.py [--records 1000000 [N ...]] [--queries 1000]``

For each size N, a fresh private embedded Valkey is filled with N synthetic decision records
(messages of 1-3 recipients, 1-3 trackers each, a pool of N/10 recipients, spread over a year)
in exactly the layout ``relay.store.audit`` writes: one stream entry per record (the
stored encoding of ``audit_record.encode``), the message index and the recipient index. The
fill uses explicit stream ids (so that the records span the year up to today) and ``valkey-cli
--pipe`` (so that filling a million records takes seconds), and writes the per-day counts and
the "tracked without consent" index as the write script would have (``audit_counts.tally``);
the production write path (the Lua script) is timed separately.

Printed, from the same run: the baseline (PING round trip), then p50/p99 of ``by_message``
(``relay audit show``), ``search`` by recipient (``relay audit search --rcpt``) and an export
of a 1000-record time range (``relay audit export``); the auditors' workspace over HTTP (its
first page at 30 and 365 days, "tracked without consent", a filtered list, a message
drill-down) beside ``/healthz`` as the baseline; the write rate through ``AuditLog.write``,
and the Redis memory per record (INFO used_memory delta), split by structure, with the
extrapolation to 10 million records.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import random
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
import uvicorn

from relay.core.links import LinkSigner
from relay.core.recipients import recipient_key
from relay.passwords import hash_password
from relay.settings import AuditUiSettings, SecretsSettings, Settings, WebSettings
from relay.store.audit import AuditLog, message_key
from relay.store.audit_codec import encode
from relay.store.audit_counts import DAY_MS, count_keys, has_untracked, tally
from relay.store.audit_record import DecisionRecord, TrackerRecord, record_id
from relay.store.consent import RedisConsentStore
from relay.store.embedded import EmbeddedRedis, free_port, server_binary
from relay.store.redis_keys import Keys
from relay.web.app import create_app
from relay.web.limits import web_config

KEYS = Keys("relay:")
ADDRESS_KEY = b"bench-address-key"
# The records span the year up to today, so that the workspace's default range (the last 30
# days) is full of them.
_TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = _TODAY - timedelta(days=364)
SPAN_MS = 365 * 86_400_000
CP = "campaign_performance"
VENDORS = (
    ("sendgrid-open", "SendGrid", "https://u1234567.ct.sendgrid.net/wf/open?upn=", CP),
    ("mailchimp-open", "Mailchimp", "https://shop.us21.list-manage.com/track/open.php?u=", CP),
    ("heuristic-1x1", "", "https://pixel.shop-analytics.example/p.gif?uid=", CP),
    ("deliverability-open", "Postmark", "https://pm-opens.example/o/", "deliverability"),
)
OUTCOMES = (
    ("neutralise", "none", "no-consent"),
    ("gateway", "consent", "consent-gateway"),
    ("minimise", "exempt", "deliverability-minimise"),
    ("keep", "legacy", "legacy-notice"),
)
CATEGORIES = (
    ("newsletter", "header:list-id"),
    ("marketing", "default"),
    ("transactional", "rule:sender"),
)


@dataclass
class Filled:
    message_ids: list[str]
    rcpts: list[str]
    times_ms: list[int]  # stream time of record i
    extra: int = 0  # commands beyond the three per record (counts, index)


def _record(
    rng: random.Random, n: int, message_id: str, rcpt: str, rkey: str, at: datetime
) -> DecisionRecord:
    trackers = []
    for t in range(rng.randint(1, 3)):
        rule, vendor, base, purpose = rng.choice(VENDORS)
        action, basis, policy = rng.choice(OUTCOMES)
        trackers.append(
            TrackerRecord(
                url=f"{base}{rng.getrandbits(96):024x}&m={n}.{t}",
                element="img",
                rule=rule,
                vendor=vendor,
                purpose=purpose,
                basis=basis,
                action=action,
                policy_rule=policy,
                consent_event_ids=(f"{rng.getrandbits(64):016x}",) if basis == "consent" else (),
            )
        )
    category, reason = rng.choice(CATEGORIES)
    ids = tuple(i for t in trackers for i in t.consent_event_ids)
    return DecisionRecord(
        record_id=record_id(f"{n:012x}", at, message_id, n, rcpt),
        message_id=message_id,
        relay_id=f"{n:012x}",
        mail_from="bounces+123@mail.shop.example",
        header_from="Shop <news@shop.example>",
        rcpt=rcpt,
        recipient_key=rkey,
        category=category,
        category_reason=reason,
        pack="fr-cnil-2026",
        trackers=tuple(trackers),
        consent_event_ids=ids,
        footer_injected=bool(ids),
        upstream_reply="250 2.0.0 Ok: queued as 4Xk2Lq0Y7Zz1",
        relay_version="0.1.0",
        rules_digest="sha256:5f0c2a9e41d7b3c8",
        received_at=at,
        decided_at=at + timedelta(milliseconds=3),
    )


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _commands(count: int, filled: Filled, seed: int) -> Iterator[bytes]:
    """RESP for ``count`` records, in the layout of ``relay.store.audit`` (pre-serialised):
    the stream entry and both indexes per record, then the per-day counts and the "tracked
    without consent" index exactly as the write script leaves them (``audit_counts``)."""
    rng = random.Random(seed)
    ck = count_keys(KEYS)[0]
    days: dict[str, int] = {}
    pool = max(count // 10, 1)
    addresses = [f"user{i}@example{i % 97}.org" for i in range(pool)]
    rkeys = [recipient_key(a, ADDRESS_KEY) for a in addresses]
    n = 0
    last_ms, seq = -1, 0
    while n < count:
        message_id = f"<{n:x}.{rng.getrandbits(48):012x}@mail.shop.example>"
        mkey = KEYS.audit_by_message(message_key(message_id)).encode()
        bucket = KEYS.audit_bucket(message_key(message_id))
        stream = KEYS.audit_stream(bucket).encode()
        filled.message_ids.append(message_id)
        for _ in range(min(rng.randint(1, 3), count - n)):
            ms = START.timestamp() * 1000 + n * SPAN_MS // count
            ms = int(ms)
            seq = seq + 1 if ms == last_ms else 0
            last_ms = ms
            sid = f"{ms}-{seq}".encode()
            r = rng.randrange(pool)
            at = datetime.fromtimestamp(ms / 1000, UTC)
            filled.rcpts.append(addresses[r])
            filled.times_ms.append(ms)
            record = _record(rng, n, message_id, addresses[r], rkeys[r], at)
            payload = encode(record)
            rkey = KEYS.audit_by_rcpt(bucket, rkeys[r]).encode()
            yield (
                _resp(b"XADD", stream, sid, b"r", payload)
                + _resp(b"ZADD", mkey, str(ms).encode(), sid)
                + _resp(b"ZADD", rkey, str(ms).encode(), sid)
                + _resp(b"HSET", KEYS.audit_ids(bucket).encode(), record.record_id.encode(), sid)
            )
            if has_untracked(record):
                filled.extra += 1
                yield _resp(b"ZADD", ck.without_consent.encode(), str(ms).encode(), sid)
            day = ms // DAY_MS
            for name, by in tally(record).items():
                field = f"{day}|{name}"
                days[field] = days.get(field, 0) + by
            n += 1
    names = sorted({field.split("|", 1)[1] for field in days})
    filled.extra += len(names) + len(days) + len({f.split("|", 1)[0] for f in days})
    for name in names:
        yield _resp(b"SADD", ck.dims.encode(), name.encode())
    for field, by in sorted(days.items()):
        yield _resp(b"HINCRBY", ck.counts.encode(), field.encode(), str(by).encode())
    for number in sorted({f.split("|", 1)[0] for f in days}):
        yield _resp(b"ZADD", ck.days.encode(), number.encode(), number.encode())


def fill(port: int, count: int, seed: int = 7) -> Filled:
    filled = Filled([], [], [])
    cli = Path(server_binary()).with_name("valkey-cli")
    proc = subprocess.Popen(
        [str(cli), "-p", str(port), "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    chunk: list[bytes] = []
    for command in _commands(count, filled, seed):
        chunk.append(command)
        if len(chunk) >= 5000:
            proc.stdin.write(b"".join(chunk))
            chunk = []
    proc.stdin.write(b"".join(chunk))
    proc.stdin.close()
    report = proc.stdout.read().decode()
    proc.wait()
    match = re.search(r"errors: (\d+), replies: (\d+)", report)
    if not match or match.group(1) != "0" or int(match.group(2)) != 3 * count + filled.extra:
        raise SystemExit(f"fill failed: {report}")
    return filled


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:7.3f} ms   p99 {p99 * 1000:7.3f} ms"


async def _timed(runs: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return samples


async def measure(url: str, filled: Filled, queries: int, journal: Path) -> None:
    client = aioredis.Redis.from_url(url, socket_timeout=10)
    log = AuditLog(client, KEYS, journal, timeout=10, retention_days=3650, address_key=ADDRESS_KEY)
    rng = random.Random(11)
    count = len(filled.times_ms)

    async def ping(_i: int) -> None:
        await client.ping()

    async def show(_i: int) -> None:
        found = await log.by_message(rng.choice(filled.message_ids))
        assert found, "show found nothing"

    async def search(_i: int) -> None:
        found = await log.search(rng.choice(filled.rcpts), None, None, 100)
        assert found, "search found nothing"

    async def export(_i: int) -> None:
        first = rng.randrange(max(count - 1001, 1))
        since = datetime.fromtimestamp(filled.times_ms[first] / 1000, UTC)
        until = datetime.fromtimestamp(filled.times_ms[min(first + 1000, count - 1)] / 1000, UTC)
        exported = await log.export(since, until, "jsonl", io.StringIO(), progress=False)
        assert exported >= 900, exported

    print(f"  baseline PING           {_percentiles(await _timed(queries, ping))}")
    print(f"  show --message-id       {_percentiles(await _timed(queries, show))}")
    print(f"  search --rcpt (<=100)   {_percentiles(await _timed(queries, search))}")
    runs = max(queries // 10, 20)
    print(f"  export 1000 records     {_percentiles(await _timed(runs, export))}  (jsonl)")
    await client.connection_pool.disconnect()


async def write_rate(url: str, journal: Path, records: int = 20_000) -> float:
    """Records per second through the production path (Lua script), two recipients a message."""
    client = aioredis.Redis.from_url(url, socket_timeout=10)
    log = AuditLog(client, Keys("writebench:"), journal, timeout=10, retention_days=30)
    rng = random.Random(5)
    now = datetime.now(UTC)
    batches = []
    for m in range(records // 2):
        mid = f"<w{m}@x.example>"
        batches.append(
            [_record(rng, m * 2 + j, mid, f"w{j}@x.org", "f" * 32, now) for j in range(2)]
        )
    started = time.perf_counter()
    for batch in batches:
        await log.write(batch)
    elapsed = time.perf_counter() - started
    assert not journal.exists(), "a bench write went to the journal"
    await client.connection_pool.disconnect()
    return records / elapsed


def memory_report(sync: redis.Redis, count: int, used: int) -> None:
    def usage(key: str | bytes) -> int:
        value: Any = sync.memory_usage(key, samples=0)
        return int(value or 0)

    stream = sum(usage(KEYS.audit_stream(b)) for b in KEYS.audit_buckets())
    parts = {"message index": 0, "recipient index": 0}
    for (kind, _), pattern in zip(parts.items(), ("msg", "rcpt"), strict=True):
        sizes: list[int] = []
        total = 0
        for key in sync.scan_iter(match=f"{KEYS.prefix}audit:{{*}}:{pattern}:*", count=10_000):
            total += 1
            if len(sizes) < 2000:
                sizes.append(usage(key))
        average = sum(sizes) / max(len(sizes), 1)
        parts[kind] = int(average * total)
        print(f"  {kind + ' keys':<24}{total:,} (avg {average:.0f} B)")
    per = used / count
    print(
        f"  memory per record       {per:7.0f} B (INFO used_memory delta {used / 2**20:,.0f} MiB)"
    )
    rest = used - stream - sum(parts.values())
    split = ", ".join(f"{kind} {size / count:.0f} B" for kind, size in parts.items())
    print(f"    stream {stream / count:.0f} B, {split}, rest {rest / count:.0f} B")
    print(f"  extrapolated to 10M     {per * 10_000_000 / 2**30:7.2f} GiB")


class _Workspace:
    """The real web application (auditors' workspace on) on uvicorn, in a thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = free_port()
        self.server: uvicorn.Server | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        settings = Settings(
            web=WebSettings(listen=f"127.0.0.1:{self.port}"),
            secrets=SecretsSettings(link_key="bench-link-key"),
            audit_ui=AuditUiSettings(users={"bench": hash_password("bench", n=2**10)}),
        )
        client = aioredis.Redis.from_url(self.url, socket_timeout=10)
        store = RedisConsentStore(client, KEYS, settings.address_key, settings.consent)
        signer = LinkSigner.from_settings(settings.secrets)
        app = create_app(settings=settings, redis=client, store=store, signer=signer)
        config = web_config(app, settings)
        config.host, config.port = "127.0.0.1", self.port
        self.server = uvicorn.Server(config)
        await self.server.serve()
        await client.connection_pool.disconnect()

    def __enter__(self) -> _Workspace:
        self.thread.start()
        while self.server is None or not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.should_exit = True
        self.thread.join(10)

    def get(self, path: str) -> float:
        auth = base64.b64encode(b"bench:bench").decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Basic {auth}"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            assert response.status == 200 and body, path
        return time.perf_counter() - started


def workspace_timings(url: str, filled: Filled, queries: int) -> None:
    """Render times of the workspace's pages over HTTP, beside /healthz from the same run."""
    rng = random.Random(3)
    runs = max(queries // 10, 30)
    with _Workspace(url) as web:
        web.get("/audit/")  # the login's scrypt check, remembered afterwards
        web.get(f"/audit/m/{message_key(filled.message_ids[0])}")  # rule files, read once
        year = f"?from={START.date()}&to={_TODAY.date()}"
        messages = filled.message_ids
        pages: dict[str, Callable[[], str]] = {
            "baseline /healthz       ": lambda: "/healthz",
            "first page (30 days)    ": lambda: "/audit/",
            "first page (365 days)   ": lambda: "/audit/" + year,
            "tracked without consent ": lambda: "/audit/without-consent",
            "records, filtered       ": lambda: "/audit/records?basis=legacy&category=marketing",
            "message drill-down      ": lambda: f"/audit/m/{message_key(rng.choice(messages))}",
        }  # fmt: skip
        for label, path in pages.items():
            samples = [web.get(path()) for _ in range(runs)]
            print(f"  {label}{_percentiles(samples)}  (HTTP, {runs} requests)")


def run(count: int, queries: int, workdir: Path) -> None:
    server = EmbeddedRedis(workdir / f"valkey-{count}", appendonly=False).start()
    try:
        sync = redis.Redis.from_url(server.url)
        before = int(sync.info("memory")["used_memory"])
        started = time.perf_counter()
        filled = fill(server.port, count)
        elapsed = time.perf_counter() - started
        # Millions of bench-side strings would otherwise make the collector's full passes show
        # up as query latency: they are not the relay's.
        gc.collect()
        gc.freeze()
        after = int(sync.info("memory")["used_memory"])
        print(f"records {count:,}: filled in {elapsed:.1f} s ({count / elapsed:,.0f} records/s)")
        memory_report(sync, count, after - before)
        asyncio.run(measure(server.url, filled, queries, workdir / "journal"))
        workspace_timings(server.url, filled, queries)
        rate = asyncio.run(write_rate(server.url, workdir / "journal"))
        print(f"  write path (Lua)        {rate:9,.0f} records/s (2 recipients a message)")
        sync.close()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        for count in args.records:
            run(count, args.queries, Path(tmp))


if __name__ == "__main__":
    main()
