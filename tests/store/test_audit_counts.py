"""Per-day counts and the "tracked without consent" index, on a real Valkey: written with each
record, exact through retried writes, journal replays and retention (audit_counts Rule 1)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from relay.store.audit import AuditLog, message_key
from relay.store.audit_codec import decode
from relay.store.audit_counts import (
    DAY_MS,
    count_keys,
    day_number,
    read_counts,
    tally,
)
from relay.store.audit_legend import reason, tracked_without_consent
from relay.store.audit_record import DecisionRecord, TrackerRecord
from relay.store.embedded import EmbeddedRedis
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from tests.support.audit import make_record, message, new_log, stream_times, tracker
from tests.support.redis import async_client

KEYS = Keys("t:")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncRedis]:
    conn = async_client(redis_url, 2.0)
    yield conn
    await conn.aclose()


@pytest.fixture
def audit(client: AsyncRedis, tmp_path: Path) -> AuditLog:
    return new_log(client, tmp_path / "journal")


def legacy(record: DecisionRecord) -> DecisionRecord:
    """The record with one more tracker: kept through the gateway on the legacy basis."""
    kept = replace(
        tracker(9, "gateway", "legacy"), rule="mailchimp-open", policy_rule="cnil-legacy"
    )
    return replace(record, trackers=(*record.trackers, kept))


async def recount(client: AsyncRedis) -> dict[str, int]:
    """What the counts must be: every stored record's tally, by the day of its stream id."""
    expected: dict[str, int] = {}
    for bucket in KEYS.audit_buckets():
        raw: Any = await client.xrange(KEYS.audit_stream(bucket))
        for sid, fields in raw:
            day = int(bytes(sid).split(b"-")[0]) // DAY_MS
            for name, n in tally(decode(fields[b"r"])).items():
                expected[f"{day}|{name}"] = expected.get(f"{day}|{name}", 0) + n
    return expected


async def stored_counts(client: AsyncRedis) -> dict[str, int]:
    """The counts of every bucket, summed field by field."""
    total: dict[str, int] = {}
    for ck in count_keys(KEYS):
        raw: Any = await client.hgetall(ck.counts)
        for k, v in raw.items():
            total[k.decode()] = total.get(k.decode(), 0) + int(v)
    return {k: v for k, v in total.items() if v}


async def untracked_index(client: AsyncRedis) -> list[tuple[int, str]]:
    """(bucket, stream id) of every bucket's "tracked without consent" index."""
    found: list[tuple[int, str]] = []
    for bucket, ck in enumerate(count_keys(KEYS)):
        raw: Any = await client.zrange(ck.without_consent, 0, -1)
        found += [(bucket, m.decode()) for m in raw]
    return sorted(found)


async def stored_ids(client: AsyncRedis) -> list[tuple[int, str]]:
    """(bucket, stream id) of every record, in the order they were written (test writes are
    seconds of decided time apart, one write at a time)."""
    found: list[tuple[int, int, str]] = []
    for bucket in KEYS.audit_buckets():
        raw: Any = await client.xrange(KEYS.audit_stream(bucket))
        found += [(int(bytes(sid).split(b"-")[0]), bucket, bytes(sid).decode()) for sid, _f in raw]
    return [(bucket, sid) for _ms, bucket, sid in sorted(found)]


def test_tally_names_every_dimension_and_escapes_values() -> None:
    record = legacy(make_record(1))
    counts = tally(record)
    assert counts["|n"] == 1 and counts["|c:newsletter"] == 1
    assert counts["|t"] == 3  # two trackers of make_record, one legacy
    assert counts["|a:gateway"] == 2 and counts["|a:neutralise"] == 1
    assert counts["|b:consent"] == 1 and counts["|b:legacy"] == 1 and counts["|b:none"] == 1
    assert counts["|p:campaign_performance"] == 3
    assert counts["|r:sendgrid-open"] == 2 and counts["|r:mailchimp-open"] == 1
    assert counts["|nc"] == 1 and counts["|ncr"] == 1
    assert "|nc" not in tally(make_record(2))  # consent and none: not tracked without consent
    odd = replace(make_record(3), category="a b|c=d")
    assert "|c:a%20b%7Cc%3Dd" in tally(odd)


@dataclass(frozen=True)
class WithController:
    """A record as issue 11 will make it: the same fields and a ``controller``."""

    category: str
    trackers: tuple[TrackerRecord, ...]
    controller: str


def test_tally_reads_the_controller_when_a_record_has_one() -> None:
    base = make_record(1)
    counts = tally(WithController(base.category, base.trackers, "shop|eu"))
    assert counts["shop%7Ceu|n"] == 1 and "|n" not in counts


def test_tracked_without_consent_and_its_reason() -> None:
    assert tracked_without_consent(tracker(1, "gateway", "legacy"))
    assert tracked_without_consent(tracker(1, "keep", "none"))
    assert tracked_without_consent(tracker(1, "strip_params", "none"))
    assert not tracked_without_consent(tracker(1, "gateway", "consent"))
    assert not tracked_without_consent(tracker(1, "minimise", "exempt"))
    assert not tracked_without_consent(tracker(1, "neutralise", "none"))
    signed = replace(tracker(1, "keep", "none"), policy_rule="signed-unmodified")
    assert "signed or encrypted part" in reason(signed)
    esp = replace(tracker(1, "gateway", "legacy"), rule="esp-open-tracking")
    assert "ESP's own open pixel" in reason(esp) and "legacy regime" in reason(esp)


async def test_counts_are_written_with_the_records_and_equal_a_recount(
    audit: AuditLog, client: AsyncRedis
) -> None:
    first = [legacy(r) for r in message(1)]
    second = message(2, rcpts=3)
    await audit.write(first)
    await audit.write(second)
    assert await stored_counts(client) == await recount(client)
    today = day_number(datetime.now(UTC))
    counts = await read_counts(client, count_keys(KEYS), today - 1, today)
    assert counts.total("n") == 5 and counts.total("t") == 2 * 3 + 3 * 2
    assert counts.day(today, "nc") == 2 and counts.total("ncr") == 2
    assert counts.series("basis")["legacy"] == [0, 2]
    assert counts.series("category") == {"newsletter": [0, 5]}
    assert counts.controllers == ("",)
    # Only the two legacy records are in the "tracked without consent" index.
    mkey = message_key(first[0].message_id)
    sids: Any = await client.zrange(KEYS.audit_by_message(mkey), 0, -1)
    bucket = KEYS.audit_bucket(mkey)
    assert await untracked_index(client) == sorted((bucket, bytes(s).decode()) for s in sids)


async def test_a_retried_write_counts_nothing_twice(audit: AuditLog, client: AsyncRedis) -> None:
    records = [legacy(r) for r in message(1, rcpts=3)]
    await audit.write(records)
    before = await stored_counts(client)
    await audit.write(records)  # the reply was lost, the pipeline writes again
    await audit._store(records[1:])
    assert await stored_counts(client) == before == await recount(client)
    assert len(await untracked_index(client)) == 3


async def test_journal_replay_counts_each_record_once(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    client = aioredis.Redis.from_url(server.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    log = new_log(client, tmp_path / "journal", timeout=1.0)
    try:
        await log.write(message(1))
        server.stop()
        during = [legacy(r) for i in range(2, 5) for r in message(i)]
        await log.write(during)
        saved = tmp_path / "journal-copy"
        shutil.copy(log.journal.path, saved)
        server.start()
        assert await log.replay_journal() == len(during)
        expected = await recount(client)
        assert await stored_counts(client) == expected
        # Interrupted after storing but before deleting the journal: replayed again, and
        # again after only half of it had been stored.
        shutil.copy(saved, log.journal.path)
        assert await log.replay_journal() == 0
        log.journal.append([json.dumps(r.to_json()) for r in during])
        assert await log.replay_journal() == 0
        assert await stored_counts(client) == expected
        today = day_number(datetime.now(UTC))
        counts = await read_counts(client, count_keys(KEYS), today, today)
        assert counts.total("n") == 8 and counts.total("ncr") == 6
    finally:
        await client.aclose()


async def test_retention_subtracts_what_it_trims(audit: AuditLog, client: AsyncRedis) -> None:
    await audit.write([legacy(r) for r in message(1)])
    await asyncio.sleep(0.01)
    await audit.write(message(2))
    cut_ms = (await stream_times(client))[2]
    now = datetime.fromtimestamp(cut_ms / 1000, UTC) + timedelta(days=audit.retention_days)
    assert await audit.trim(now) == 2
    assert await stored_counts(client) == await recount(client)
    assert await untracked_index(client) == []
    # Trimming everything leaves no count and no day behind.
    assert await audit.trim(now + timedelta(days=2)) == 2
    assert await stored_counts(client) == {}
    for ck in count_keys(KEYS):  # one slot per bucket: EXISTS bucket by bucket
        assert not await client.exists(ck.counts, ck.days)


async def test_counts_by_controller_and_days_without_records(client: AsyncRedis) -> None:
    # A counts hash as the write script leaves it for two controllers on two days.
    day = 20_000
    # Controller a's records in bucket 0, b's in bucket 5: the read sums over the buckets.
    a_keys, b_keys = count_keys(KEYS)[0], count_keys(KEYS)[5]
    await client.hset(
        a_keys.counts, mapping={f"{day}|a|n": 3, f"{day + 2}|a|n": 1, f"{day}|a|c:marketing": 3}
    )
    await client.hset(b_keys.counts, mapping={f"{day}|b|n": 2})
    await client.sadd(a_keys.dims, "a|n", "a|c:marketing")
    await client.sadd(b_keys.dims, "b|n")
    every = await read_counts(client, count_keys(KEYS), day, day + 2)
    assert [every.day(d, "n") for d in range(day, day + 3)] == [5, 0, 1]
    only_b = await read_counts(client, count_keys(KEYS), day, day + 2, "b")
    assert only_b.total("n") == 2 and only_b.series("category") == {}
    assert every.controllers == ("a", "b") == only_b.controllers
    with pytest.raises(ValueError):
        await read_counts(client, count_keys(KEYS), day, day - 1)
