"""Redis down must lose no decision record and double none: the journal and its replay.

Every test here owns its Valkey server (``private_redis``) so that it can stop, freeze and
restart it; the records are written while the server is away and replayed once it is back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from relay.errors import StoreUnavailable
from relay.store.audit import AuditLog
from relay.store.audit_journal import Journal
from relay.store.audit_scan import merged_range
from relay.store.embedded import EmbeddedRedis
from relay.store.redis_keys import Keys
from tests.support.audit import message, new_log


def _client(server: EmbeddedRedis, timeout: float = 1.0) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        server.url, socket_timeout=timeout, socket_connect_timeout=timeout
    )


async def _stored_ids(client: aioredis.Redis) -> list[str]:
    """Record ids of every entry of every bucket's stream, in the log's order."""
    keys = Keys("t:")
    streams = [keys.audit_stream(b) for b in keys.audit_buckets()]
    return [
        record.record_id
        async for _b, _sid, record in merged_range(client, streams, "-", "+", page=50, timeout=2)
    ]


def _journal_lines(log: AuditLog) -> int:
    path = log.journal.path
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_records_written_while_redis_is_down_are_replayed_once(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    client = _client(server)
    log = new_log(client, tmp_path / "var" / "audit-journal", timeout=1.0)
    try:
        before = message(1)
        await log.write(before)
        server.stop()
        during = [r for i in range(2, 7) for r in message(i)]
        started = time.monotonic()
        for i in range(0, len(during), 2):
            await log.write(during[i : i + 2])  # never raises
        assert time.monotonic() - started < 5
        assert _journal_lines(log) == len(during)
        saved = tmp_path / "journal-copy"
        shutil.copy(log.journal.path, saved)

        server.start()  # same port, same data directory: the first record is still there
        assert await log.replay_journal() == len(during)
        assert not log.journal.pending() and not log.journal.path.exists()
        ids = await _stored_ids(client)
        assert ids == [r.record_id for r in before + during]  # journal order kept

        # A replay interrupted after storing everything but before deleting the journal
        # starts again from the same file: nothing is doubled.
        shutil.copy(saved, log.journal.path)
        assert await log.replay_journal() == 0
        assert await _stored_ids(client) == ids
        assert await log.by_message("<msg4.x@shop.example>") == message(4)
        assert await log.search("user1@example.org", None, None, 100) == [
            m[1] for m in [before, *(message(i) for i in range(2, 7))]
        ]
    finally:
        await client.connection_pool.disconnect()


async def test_replay_interrupted_half_way_stores_only_the_rest(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    client = _client(server)
    log = new_log(client, tmp_path / "journal", timeout=1.0)
    records = [r for i in range(1, 5) for r in message(i)]
    try:
        # The journal holds everything; an earlier replay stored the first half and stopped.
        log.journal.append([json.dumps(r.to_json()) for r in records])
        await log._store(records[:3])
        assert await log.replay_journal() == len(records) - 3
        assert await _stored_ids(client) == [r.record_id for r in records]
    finally:
        await client.connection_pool.disconnect()


async def test_a_frozen_redis_times_out_into_the_journal_without_doubling(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    assert server.process is not None
    client = _client(server, timeout=0.3)
    log = new_log(client, tmp_path / "journal", timeout=0.3)
    records = message(1, rcpts=3)
    try:
        await client.ping()
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            await log.write(records)
            assert time.monotonic() - started < 3
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert _journal_lines(log) == 3
        # The frozen server may still execute the write it had received: the replay must
        # then recognise the records and store none of them a second time.
        assert await log.replay_journal() in (0, 3)
        assert await _stored_ids(client) == [r.record_id for r in records]
        assert await log.replay_journal() == 0
    finally:
        await client.connection_pool.disconnect()


async def test_replay_while_redis_is_down_keeps_the_journal(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    client = _client(server)
    log = new_log(client, tmp_path / "journal", timeout=1.0)
    try:
        server.stop()
        await log.write(message(1))
        await log.write(message(2))  # within the skip window: straight to the journal
        with pytest.raises(StoreUnavailable):
            await log.replay_journal()
        assert log.journal.claimed.exists()  # claimed, not lost
        await log.write(message(3))  # new lines go to a fresh journal meanwhile
        server.start()
        assert await log.replay_journal() == 6
        expected = [r.record_id for i in (1, 2, 3) for r in message(i)]
        assert await _stored_ids(client) == expected
        assert not log.journal.claimed.exists() and not log.journal.path.exists()
    finally:
        await client.connection_pool.disconnect()


async def test_no_journal_means_no_redis_call(tmp_path: Path) -> None:
    # A client to a port nobody listens on: replay must not even try it.
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    log = new_log(client, tmp_path / "journal")
    assert await log.replay_journal() == 0
    await client.connection_pool.disconnect()


def test_journal_append_after_claim_goes_to_a_new_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "sub" / "journal")
    journal.append(['{"a":1}', '{"a":2}'])
    with journal.replay_lock() as mine:
        assert mine
        with journal.replay_lock() as other:
            assert not other  # one replay at a time
        claimed = journal.claim()
        assert claimed == journal.claimed
        journal.append(['{"a":3}'])
        assert journal.claim() == claimed  # a leftover claim is replayed first
        assert [d for _n, d in journal.read(claimed)] == [{"a": 1}, {"a": 2}]
        journal.done(claimed)
        second = journal.claim()
        assert second is not None
        assert [d for _n, d in journal.read(second)] == [{"a": 3}]
        journal.done(second)
    assert journal.claim() is None and not journal.pending()


def test_bad_journal_lines_are_set_aside_not_dropped(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.append(['{"a":1}', "not json", "[1,2]"])
    with journal.path.open("a") as handle:
        handle.write('{"torn": ')  # a crash in the middle of a write
    claimed = journal.claim()
    assert claimed is not None
    assert [n for n, _d in journal.read(claimed)] == [1]
    assert journal.rejected.read_text().splitlines() == ["not json", "[1,2]", '{"torn": ']


def _append_many(path: str, writer: int, count: int) -> None:
    journal = Journal(path)
    for n in range(count):
        journal.append([json.dumps({"w": writer, "n": n})])


def test_concurrent_appends_and_claims_lose_and_double_nothing(tmp_path: Path) -> None:
    """Two processes append while this one claims and reads repeatedly (Rule 2 of the journal)."""
    import multiprocessing

    path = tmp_path / "journal"
    journal = Journal(path)
    seen: list[tuple[int, int]] = []
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(str(path), w, 300)) for w in (0, 1)]
    for process in writers:
        process.start()

    def drain() -> None:
        with journal.replay_lock():
            while (claimed := journal.claim()) is not None:
                seen.extend((int(d["w"]), int(d["n"])) for _n, d in journal.read(claimed))  # type: ignore[call-overload]
                journal.done(claimed)

    while any(p.is_alive() for p in writers):
        drain()
    for process in writers:
        process.join()
        assert process.exitcode == 0
    drain()
    assert sorted(seen) == [(w, n) for w in (0, 1) for n in range(300)]
    # Each writer's lines stay in its own order.
    for w in (0, 1):
        assert [n for ww, n in seen if ww == w] == list(range(300))
