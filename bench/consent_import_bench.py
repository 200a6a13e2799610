"""Benchmark of ``relay consent import``: N generated CSV rows into a private embedded Valkey.

Usage: ``.venv/bin/python bench/consent_import_bench.py [--rows 100000] [--batch 1000]``

Prints, from the same run: the baseline (reading and validating the CSV without Redis), the
import rate in events per second, the re-import rate (every row already imported: Rule 1 of
``consent_import``), the ``verify`` rate over every chain, and the Redis memory per event.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
import redis.asyncio as aioredis

from relay.model import Purpose
from relay.settings import ConsentSettings
from relay.store.consent import RedisConsentStore
from relay.store.consent_import import _rows, import_csv, row_event
from relay.store.consent_proof import fingerprint, validate_event
from relay.store.embedded import EmbeddedRedis
from relay.store.redis_keys import Keys

EVENTS = ("collected", "informed", "granted", "refused", "withdrawn", "requested")
COLUMNS = (
    "address", "event", "purposes", "occurred_at", "actor", "method", "notice_id",
    "notice_version", "notice_language", "notice_hash", "ip", "user_agent", "source_form_id",
)  # fmt: skip


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    purposes = [p.value for p in Purpose if p is not Purpose.AUTHENTICATION_SECURITY]
    recipients = max(rows // 3, 1)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(COLUMNS)
        for i in range(rows):
            event = EVENTS[i % len(EVENTS)]
            chosen = ";".join(rng.sample(purposes, rng.randint(1, 3)))
            at = start + timedelta(seconds=rng.randrange(60 * 86400 * 12))
            out.writerow([
                f"user{rng.randrange(recipients)}@example.org", event,
                "" if event == "collected" else chosen, at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "recipient", "checkbox", "tracking", "2", "fr", "sha256:0f3a9c",
                f"198.51.100.{i % 250}", "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
                f"signup-{i % 17}",
            ])  # fmt: skip


def baseline(path: Path) -> float:
    """Rows per second for reading, validating and fingerprinting alone (no Redis)."""
    now = datetime.now(UTC)
    started = time.perf_counter()
    count = 0
    for line, cells in _rows(path):
        assert not isinstance(cells, str)
        event = validate_event(row_event(cells, path.name, line), now)
        fingerprint(event, ("import_file", "import_line"))
        count += 1
    return count / (time.perf_counter() - started)


async def run_import(url: str, path: Path, batch: int) -> tuple[float, int, int]:
    client: aioredis.Redis = aioredis.Redis.from_url(url, socket_timeout=30)
    store = RedisConsentStore(client, Keys("bench:"), b"bench-key", ConsentSettings())
    started = time.perf_counter()
    report = await import_csv(store, path, on_bad=lambda m: print(m, file=sys.stderr), batch=batch)
    elapsed = time.perf_counter() - started
    await client.connection_pool.disconnect()
    return elapsed, report.added, report.skipped


async def run_verify(url: str) -> tuple[float, int, bool]:
    client: aioredis.Redis = aioredis.Redis.from_url(url, socket_timeout=30)
    store = RedisConsentStore(client, Keys("bench:"), b"bench-key", ConsentSettings())
    started = time.perf_counter()
    report = await store.verify()
    elapsed = time.perf_counter() - started
    await client.connection_pool.disconnect()
    return elapsed, report.events, report.ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "consent.csv"
        generate(path, args.rows)
        server = EmbeddedRedis(Path(tmp) / "redis", appendonly=True).start()
        try:
            sync = redis.Redis.from_url(server.url)
            before = int(sync.info("memory")["used_memory"])
            base = baseline(path)
            elapsed, added, _ = asyncio.run(run_import(server.url, path, args.batch))
            after = int(sync.info("memory")["used_memory"])
            again, added_again, skipped = asyncio.run(run_import(server.url, path, args.batch))
            checked, verified, intact = asyncio.run(run_verify(server.url))
            sync.close()
        finally:
            server.stop()
    print(f"rows                     {args.rows}")
    print(f"baseline (parse+check)   {base:,.0f} rows/s")
    print(f"import                   {added / elapsed:,.0f} events/s ({elapsed:.1f} s)")
    print(f"re-import (all skipped)  {skipped / again:,.0f} rows/s, {added_again} added")
    print(f"verify (all chains)      {verified / checked:,.0f} events/s, intact: {intact}")
    print(f"memory per event         {(after - before) / max(added, 1):,.0f} bytes")
    print(f"1 million events         ~{1_000_000 / (added / elapsed) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
