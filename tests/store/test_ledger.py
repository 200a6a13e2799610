"""The delivery ledger on a real Redis, and its in-memory fallback when Redis is down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from relay.store.embedded import EmbeddedRedis
from relay.store.ledger import ALIVE_SECONDS, IN_FLIGHT, Ledger, message_key, rcpt_key
from relay.store.multiplexed import MultiplexedRedis
from relay.store.redis_keys import Keys
from relay.store.writeback import WriteBack
from tests.support.redis import async_client

KEYS = Keys("t:")


async def test_pairs_are_kept_long_while_a_retry_is_expected(redis_url: str) -> None:
    client = async_client(redis_url)
    ledger = Ledger(client, KEYS, timeout=1.0)
    key = message_key("a@shop.example", b"data")
    await ledger.record(key, {"Alice@Example.org": "250 ok"})
    assert await ledger.done(key) == {"Alice@example.org": "250 ok"}
    assert await client.ttl(KEYS.delivered(key)) > 24 * 3600
    settled = message_key("a@shop.example", b"other")
    await ledger.record(settled, {"bob@example.org": "250 ok"}, settled=True)
    assert 0 < await client.ttl(KEYS.delivered(settled)) <= 3600
    await client.aclose()


async def test_message_key_depends_on_sender_and_exact_bytes() -> None:
    base = message_key("a@shop.example", b"data")
    assert base == message_key("A@shop.example", b"data")
    assert base != message_key("b@shop.example", b"data")
    assert base != message_key("a@shop.example", b"data ")


async def test_redis_down_keeps_pairs_in_memory(private_redis: Callable[[], EmbeddedRedis]) -> None:
    server = private_redis()
    client = aioredis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    ledger = Ledger(client, KEYS, timeout=0.5)
    server.stop()
    key = message_key("a@shop.example", b"data")
    await ledger.record(key, {"alice@example.org": "250 ok"})
    assert await ledger.done(key) == {"alice@example.org": "250 ok"}
    await client.aclose()


async def test_local_parts_are_distinct_and_domains_fold(redis_url: str) -> None:
    """Two local parts differing in case are two mailboxes to RFC 5321: never one entry."""
    client = async_client(redis_url)
    ledger = Ledger(client, KEYS, timeout=1.0)
    key = message_key("a@shop.example", b"case")
    await ledger.record(key, {"Alice@Example.org": "250 ok"})
    done = await ledger.done(key)
    assert rcpt_key("Alice@EXAMPLE.ORG") in done
    assert rcpt_key("alice@example.org") not in done
    await client.aclose()


async def test_in_flight_entries_are_replaced_by_the_answer_or_cleared(redis_url: str) -> None:
    client = async_client(redis_url)
    ledger = Ledger(client, KEYS, timeout=1.0, identity="host 127.0.0.1:2525 worker 0")
    key = message_key("a@shop.example", b"flight")
    await ledger.in_flight(key, ["a@example.org", "b@example.org", "c@example.org"])
    await ledger.record(
        key, {"a@example.org": "250 ok"}, cleared=["a@example.org", "b@example.org"]
    )
    # The relay restarts (same identity, new instance): a answered, b deferred after all
    # (cleared), c never answered because the relay died in between.
    restarted = Ledger(client, KEYS, timeout=1.0, identity="host 127.0.0.1:2525 worker 0")
    await client.set(KEYS.relay_alive(restarted.identity), restarted.instance)
    assert await restarted.done(key) == {"a@example.org": "250 ok", "c@example.org": IN_FLIGHT}
    await client.aclose()


async def test_an_in_flight_entry_of_a_live_writer_counts_as_nothing(redis_url: str) -> None:
    """The same bytes sent again while the first transaction awaits its answer are a message
    of their own: taking them for a copy would answer 250 for a message that may fail."""
    client = async_client(redis_url)
    writer = Ledger(client, KEYS, timeout=1.0, identity="relay-a")
    other = Ledger(client, KEYS, timeout=1.0, identity="relay-b")
    key = message_key("a@shop.example", b"concurrent")
    await writer.in_flight(key, ["a@example.org"])
    assert await writer.done(key) == {}  # its own transaction, still under way
    assert await other.done(key) == {}  # another relay: the writer is alive
    await client.delete(KEYS.relay_alive("relay-a"))  # the writer's key expired: it is gone
    assert await other.done(key) == {"a@example.org": IN_FLIGHT}
    await client.aclose()


async def test_keep_alive_refreshes_and_a_stopping_relay_clears_its_key(redis_url: str) -> None:
    client = async_client(redis_url)
    ledger = Ledger(client, KEYS, timeout=1.0, identity="relay-c")
    task = asyncio.create_task(ledger.keep_alive())
    name = KEYS.relay_alive("relay-c")
    for _ in range(50):
        if await client.get(name):
            break
        await asyncio.sleep(0.02)
    assert (await client.get(name)) == ledger.instance.encode()
    assert 0 < await client.pttl(name) <= ALIVE_SECONDS * 1000
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await client.get(name) is None
    await client.aclose()


async def test_a_forget_goes_with_the_next_read_before_it(redis_url: str) -> None:
    """Rule 4: the delete and the next read share one write to Redis, the delete first, so
    the very same bytes sent again are read as a new message."""
    client = async_client(redis_url)
    ledger = Ledger(client, KEYS, timeout=1.0)
    key = message_key("a@shop.example", b"same bytes")
    await ledger.record(key, {"alice@example.org": "250 ok"}, settled=True)
    await ledger.forget_soon(key)
    assert await client.exists(KEYS.delivered(key)) == 1  # not yet: no read came
    assert isinstance(client, MultiplexedRedis)
    writes = client.multiplexer.writes
    assert await ledger.done(key) == {}
    assert client.multiplexer.writes == writes + 1
    assert await client.exists(KEYS.delivered(key)) == 0
    await client.aclose()


async def test_forgets_no_read_takes_go_within_a_second(redis_url: str) -> None:
    client = async_client(redis_url)
    ledger = Ledger(client, KEYS, timeout=1.0)
    keys = [message_key("a@shop.example", b"m%d" % n) for n in range(3)]
    for key in keys:
        await ledger.record(key, {"bob@example.org": "250 ok"}, settled=True)
        await ledger.forget_soon(key)
    stopping = asyncio.Event()
    alive = asyncio.create_task(ledger.keep_alive(stopping))
    await asyncio.sleep(0.3)  # the first round of keep_alive sends them
    assert await client.exists(*(KEYS.delivered(k) for k in keys)) == 0
    stopping.set()
    await alive
    await client.aclose()


async def test_a_forget_sent_with_a_failed_read_is_journalled(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    client = async_client(server.url, timeout=0.5)
    journal = WriteBack(tmp_path / "j")
    ledger = Ledger(client, KEYS, timeout=0.5, writeback=journal)
    await ledger.record("k1", {"alice@example.org": "250 ok"}, settled=True)
    await ledger.forget_soon("k1")
    server.stop()
    found, answered = await ledger.read("k2")
    assert (found, answered) == ({}, False)
    assert journal.pending()
    server.start()
    assert await journal.replay({"forget": ledger.replay_forgets}) == 1
    assert await client.exists(KEYS.delivered("k1")) == 0
    await client.aclose()
