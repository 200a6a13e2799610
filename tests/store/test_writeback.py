"""The write journal: ledger entries, links and the relay's own consent events that Redis could
not take are kept on disk and replayed once it is back, none lost, none doubled.

The journal itself is tested with plain handlers; the stores against a real Valkey that the
test stops and starts (``private_redis``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from relay.model import Action as TrackerAction
from relay.model import ConsentEvent, EventType, GatewayLink, Purpose
from relay.settings import ConsentSettings
from relay.store.consent import RedisConsentStore
from relay.store.embedded import EmbeddedRedis
from relay.store.ledger import Ledger
from relay.store.link_store import ADDRESS_TTL_DAYS, LinkStore
from relay.store.redis_keys import Keys
from relay.store.writeback import Entry, Handler, WriteBack

KEYS = Keys("w:")
ADDRESS_KEY = b"writeback-test-key"


def _client(server: EmbeddedRedis) -> aioredis.Redis:
    return aioredis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)


# ---------------------------------------------------------------------------------------------
# The journal


class Recorder:
    """Handlers that remember what they were given and answer as told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.confirm = True
        self.fail_on: int | None = None

    def handler(self, op: str) -> Handler:
        async def handle(entries: Sequence[Entry]) -> list[bool]:
            for entry in entries:
                if entry["n"] == self.fail_on:
                    raise ConnectionError("Redis went away again")
                self.seen.append((op, int(entry["n"])))
            return [self.confirm] * len(entries)

        return handle


async def test_entries_come_back_in_order_and_once(tmp_path: Path) -> None:
    journal = WriteBack(tmp_path / "j")
    for n, op in enumerate(["ledger", "ledger", "forget", "links", "ledger"]):
        await journal.add(op, n=n)
    seen = Recorder()
    handlers = {op: seen.handler(op) for op in ("ledger", "forget", "links")}
    assert await journal.replay(handlers) == 5
    assert seen.seen == [("ledger", 0), ("ledger", 1), ("forget", 2), ("links", 3), ("ledger", 4)]
    assert not journal.pending()
    assert await journal.replay(handlers) == 0
    assert len(seen.seen) == 5


async def test_a_failure_keeps_the_rest_ahead_of_newer_entries(tmp_path: Path) -> None:
    journal = WriteBack(tmp_path / "j")
    for n in range(4):
        await journal.add("ledger", n=n)
    seen = Recorder()
    seen.fail_on = 2
    with pytest.raises(ConnectionError):
        await journal.replay({"ledger": seen.handler("ledger")})
    await journal.add("ledger", n=4)  # journalled while the replay was failing
    seen.fail_on = None
    seen.seen.clear()
    await journal.replay({"ledger": seen.handler("ledger")})
    await journal.replay({"ledger": seen.handler("ledger")})
    # The failed batch comes back whole (its writes are idempotent), before entry 4: the
    # claimed file is replayed before the live journal.
    assert [n for _op, n in seen.seen] == [0, 1, 2, 3, 4]
    assert not journal.pending()


async def test_unconfirmed_entries_are_replayed_until_keep_then_let_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = WriteBack(tmp_path / "j", keep=0.3)
    await journal.add("ledger", n=1)
    seen = Recorder()
    seen.confirm = False
    handlers = {"ledger": seen.handler("ledger")}
    assert await journal.replay(handlers) == 0
    assert journal.pending()  # kept: no replica confirmed it yet
    time.sleep(0.35)
    with caplog.at_level(logging.WARNING, "relay.store.writeback"):
        assert await journal.replay(handlers) == 1
    assert "no replica confirmed a ledger write" in caplog.text
    assert not journal.pending() and len(seen.seen) == 2


async def test_a_line_of_an_unknown_op_is_set_aside(tmp_path: Path) -> None:
    journal = WriteBack(tmp_path / "j")
    await journal.add("teleport", n=1)
    await journal.add("ledger", n=2)
    seen = Recorder()
    assert await journal.replay({"ledger": seen.handler("ledger")}) == 1
    rejected = journal.journal.rejected.read_text().splitlines()
    assert [json.loads(line)["op"] for line in rejected] == ["teleport"]


# ---------------------------------------------------------------------------------------------
# The stores


async def test_ledger_entries_written_while_redis_is_down_reach_redis(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    client = _client(server)
    journal = WriteBack(tmp_path / "j")
    ledger = Ledger(client, KEYS, timeout=0.5, writeback=journal)
    handlers = {"ledger": ledger.replay_records, "forget": ledger.replay_forgets}
    await ledger.record("k1", {"alice@Example.org": "250 ok"})  # Redis up: not journalled
    assert not journal.pending()
    server.stop()
    await ledger.record("k1", {"bob@example.org": "250 ok"})
    await ledger.record("k2", {"carol@example.org": "250 ok"}, settled=True)
    await ledger.forget("k2")  # the client saw the 250 of k2: it must not come back
    assert journal.pending()
    server.start()
    # A relay that restarted meanwhile has no memory: only Redis can tell it.
    other = Ledger(_client(server), KEYS, timeout=0.5)
    assert await other.done("k1") == {"alice@example.org": "250 ok"}
    assert await journal.replay(handlers) == 3
    assert await other.done("k1") == {"alice@example.org": "250 ok", "bob@example.org": "250 ok"}
    assert await other.done("k2") == {}
    ttl = await client.ttl(KEYS.delivered("k1"))
    assert ttl > 6 * 24 * 3600  # the retry window, not shortened by the replay
    await other.client.aclose()
    await client.aclose()


async def test_an_older_ledger_write_replayed_never_undoes_a_newer_one(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    client = _client(server)
    journal = WriteBack(tmp_path / "j")
    ledger = Ledger(client, KEYS, timeout=0.5, writeback=journal)
    earlier = int(time.time() * 1000) - 10_000
    # Journalled ten seconds ago: a's first answer, c cleared from in flight, kept a week.
    await journal.add("ledger", key="k3", replies={"a@x.org": "250 first"}, gone=["c@x.org"],
                      written_ms=earlier, ttl=7 * 86400)  # fmt: skip
    # Since then the message settled: every answer final, kept an hour only.
    await ledger.record("k3", {"a@x.org": "250 again", "c@x.org": "250 c"}, settled=True)
    await journal.replay({"ledger": ledger.replay_records})
    assert await ledger.done("k3") == {"a@x.org": "250 again", "c@x.org": "250 c"}
    assert 3500 < await client.ttl(KEYS.delivered("k3")) <= 3600  # not a week again
    # An older write still adds what the entry lacks (the newer write never saw it).
    await journal.add("ledger", key="k3", replies={"d@x.org": "250 d"}, gone=[],
                      written_ms=earlier, ttl=60)  # fmt: skip
    await journal.replay({"ledger": ledger.replay_records})
    assert (await ledger.done("k3"))["d@x.org"] == "250 d"
    assert 3500 < await client.ttl(KEYS.delivered("k3")) <= 3600
    await client.aclose()


def _ms(seconds: float) -> int:
    return int((time.time() + seconds) * 1000)


def _link(n: int) -> GatewayLink:
    return GatewayLink(
        link_id=f"L{n}",
        target=f"https://t.example.net/open/{n}.gif",
        purpose=Purpose.CAMPAIGN_PERFORMANCE,
        action=TrackerAction.GATEWAY,
    )


async def test_links_and_addresses_written_while_redis_is_down_are_replayed(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    client = _client(server)
    journal = WriteBack(tmp_path / "j")
    links = LinkStore(client, KEYS, timeout=0.5, writeback=journal)
    server.stop()
    await links.store([_link(1), _link(2)], {"r" * 32: "alice@example.org"}, ttl_days=400)
    assert journal.pending()
    server.start()
    # Meanwhile a newer message refreshed the address for longer than the journal says.
    await client.set(KEYS.recipient_address("r" * 32), "alice@example.org", ex=3000 * 86400)
    assert await journal.replay({"links": links.replay}) == 1
    assert await client.get(KEYS.gateway_link("L2")) == b"https://t.example.net/open/2.gif"
    assert 399 * 86400 < await client.ttl(KEYS.gateway_link("L1")) <= 400 * 86400
    assert await client.ttl(KEYS.recipient_address("r" * 32)) > 2999 * 86400  # not shortened
    assert ADDRESS_TTL_DAYS < 2999
    await client.aclose()


async def test_the_relays_own_consent_event_is_journalled_and_stored_once(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    client = _client(server)
    journal = WriteBack(tmp_path / "j")
    store = RedisConsentStore(client, KEYS, ADDRESS_KEY, ConsentSettings(), timeout=0.5,
                              writeback=journal)  # fmt: skip
    requested = ConsentEvent(
        event=EventType.REQUESTED,
        purposes=(Purpose.CAMPAIGN_PERFORMANCE,),
        address="dora@example.org",
        occurred_at=datetime.now(UTC),
        actor="system",
        method="relay",
        source={"message_ref": "<ask1@shop.example>"},
    )
    server.stop()
    kept = await store.record_or_journal(requested)  # no exception: the mail already went
    assert journal.pending()
    server.start()
    handlers = {"consent": store.replay_events}
    assert await journal.replay(handlers) == 1
    history = await store.history("dora@example.org")
    assert [e.id for e in history] == [kept.id] and history[0].event is EventType.REQUESTED
    assert history[0].recorded_at == kept.recorded_at  # the time it happened, not the replay's
    # The same entry again (a replay interrupted before the journal was removed): skipped.
    journal.journal.path.write_text(_last_rejected_or(tmp_path, kept))
    await journal.replay(handlers)
    assert [e.id for e in await store.history("dora@example.org")] == [kept.id]
    assert (await store.verify("dora@example.org")).ok
    await client.aclose()


def _last_rejected_or(tmp_path: Path, event: ConsentEvent) -> str:
    from relay.store.consent_proof import format_time, proof_fields

    record = proof_fields(event)
    assert event.recorded_at is not None
    record.update(id=event.id, recorded_at=format_time(event.recorded_at))
    line = {"op": "consent", "at": time.time(), "record": record}
    return json.dumps(line) + "\n"


async def test_wait_on_one_server_with_a_replica_confirms_and_without_one_journals(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    """The ``WAIT`` path a Sentinel-managed master takes (one connection, no cluster)."""
    from relay.store.replicated import Durability

    master, replica = private_redis(), private_redis()
    client = _client(master)
    journal = WriteBack(tmp_path / "j")
    durability = Durability(replicas=1, timeout_ms=100)
    ledger = Ledger(client, KEYS, timeout=0.5, durability=durability, writeback=journal)
    await ledger.record("k5", {"a@x.org": "250"})  # no replica yet: nobody confirms it
    assert journal.pending()
    follower = _client(replica)
    await client.config_set("repl-diskless-sync-delay", 0)  # no 5 s wait before the sync
    await follower.replicaof("127.0.0.1", master.port)
    for _ in range(200):  # online: synchronised, acknowledging what it receives
        slave: Any = (await client.info("replication")).get("slave0") or {}
        if slave.get("state") == "online":
            break
        await asyncio.sleep(0.05)
    for _ in range(20):  # kept, replayed until the replica (just synchronised) acknowledges
        if await journal.replay({"ledger": ledger.replay_records}) == 1:
            break
    assert not journal.pending()
    await ledger.record("k5", {"b@x.org": "250"})
    assert not journal.pending()
    assert set(await Ledger(follower, KEYS, timeout=0.5).done("k5")) == {"a@x.org", "b@x.org"}
    await follower.aclose()
    await client.aclose()
