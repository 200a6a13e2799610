"""The stores on a real Valkey Cluster: one slot per operation, even spread, slot migrations,
and a write the dying master acknowledged but never replicated.

The cluster (3 masters, 3 replicas, from the server binary the project ships) is shared by the
tests of a worker (``cluster`` fixture, flushed before each); a test that kills or freezes a
node owns one (``private_cluster``).
"""

from __future__ import annotations

import asyncio
import io
import json
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.crc import key_slot

from relay.errors import SettingsError, StoreUnavailable
from relay.model import ConsentEvent, EventType, Purpose
from relay.settings import ConsentSettings, RedisSettings, parse_settings
from relay.settings_redis import parse_cluster_url
from relay.store import fanout
from relay.store.audit import AuditLog, message_key
from relay.store.consent import RedisConsentStore
from relay.store.ledger import Ledger
from relay.store.link_store import note_open_day
from relay.store.redis_conn import AsyncRedis, cluster_client
from relay.store.redis_keys import AUDIT_BUCKETS, OPEN_BUCKETS, SLOTS, Keys, spread_tags
from relay.store.replicated import Durability
from relay.store.writeback import WriteBack
from tests.support.audit import ADDRESS_KEY, make_record
from tests.support.cluster import ValkeyCluster
from tests.support.redis import async_client

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("cluster")]

KEYS = Keys("t:")
T0 = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


# ---------------------------------------------------------------------------------------------
# URLs and settings (no cluster needed)


def test_cluster_urls_name_seeds_credentials_and_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    parsed = parse_cluster_url("redis+cluster://n1:7000,[::1]:7001,n3:7002")
    assert parsed.seeds == (("n1", 7000), ("::1", 7001), ("n3", 7002)) and not parsed.tls
    secure = parse_cluster_url(
        f"rediss+cluster://relay:s%40cret@n1:7000/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"
    )
    assert (secure.username, secure.password, secure.tls) == ("relay", "s@cret", True)
    assert secure.options == {"ssl_ca_certs": str(ca), "ssl_cert_reqs": "required"}
    assert parse_cluster_url("redis+cluster://:pw@n1:7000").password == "pw"
    client = cluster_client(
        f"rediss+cluster://n1:7000?ssl_ca_certs={ca}", RedisSettings(timeout=1.5)
    )
    assert client.connection_kwargs["connection_class"] is SSLConnection
    assert client.connection_kwargs["ssl_ca_certs"] == str(ca)
    assert client.connection_kwargs["socket_timeout"] == 1.5


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://n1", "seed 'n1' is not host:port"),
        ("redis+cluster://n1:7000,:7001", "seed ':7001' is not host:port"),
        ("redis+cluster://n1:7000/2", "a cluster has only database 0"),
        ("redis+cluster://n1:7000?ssl_ca_certs=/x", "needs TLS"),
        ("rediss+cluster://n1:7000?verify=no", "unknown option 'verify'"),
        ("rediss+cluster://n1:7000?ssl_ca_certs=/nonexistent/ca.pem", "no such file"),
        ("rediss+cluster://n1:7000?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
    ],
)
def test_a_bad_cluster_url_stops_start_up_naming_the_key(url: str, message: str) -> None:
    text = f'[redis]\nurl = "{url}"\n'
    with pytest.raises(SettingsError, match=rf"config.toml:2: redis\.url: .*{message}"):
        parse_settings(text, "config.toml", env={})


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"redis\.prefix: must not contain"):
        parse_settings('[redis]\nprefix = "relay:{x}:"\n', "config.toml", env={})


# ---------------------------------------------------------------------------------------------
# The layout (redis_keys Rule 3 and 4)

hexes = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
ids = st.text(alphabet=string.ascii_letters + string.digits + "@.<>-_", min_size=1, max_size=60)


@given(rkey=hexes, message_id=ids, ledger_key=hexes)
def test_the_keys_of_one_operation_share_one_slot(
    rkey: str, message_id: str, ledger_key: str
) -> None:
    # Consent append + state + import fingerprints, and the address the pages read with it.
    consent = [KEYS.consent_events(rkey), KEYS.consent_state(rkey), KEYS.consent_import_seen(rkey)]
    assert len({_slot(k) for k in [*consent, KEYS.recipient_address(rkey)]}) == 1
    # An audit record and both its indexes, for any recipient of the message.
    mkey = message_key(message_id)
    bucket = KEYS.audit_bucket(mkey)
    audit = [KEYS.audit_stream(bucket), KEYS.audit_by_message(mkey)]
    audit.append(KEYS.audit_by_rcpt(bucket, rkey))
    assert len({_slot(k) for k in audit}) == 1
    # The ledger: one message, one slot, whatever keys are added beside it with its tag.
    assert _slot(KEYS.delivered(ledger_key)) == _slot(ledger_key)


def test_bucket_tags_spread_over_the_slots_and_never_change() -> None:
    for count, label in ((AUDIT_BUCKETS, "a"), (OPEN_BUCKETS, "o")):
        tags = spread_tags(count, label)
        for bucket, tag in enumerate(tags):
            assert bucket * SLOTS // count <= _slot(tag) < (bucket + 1) * SLOTS // count
    # Rule 4: stored data lives under these names; a change would orphan it.
    assert KEYS.audit_stream(0) == "t:audit:{a0.342}:log"
    assert KEYS.audit_stream(63) == "t:audit:{" + spread_tags(64, "a")[63] + "}:log"
    assert spread_tags(64, "a")[:3] == ("a0.342", "a1.22", "a2.139")
    assert KEYS.last_open_bucket(0).startswith("t:lastopen:{o0.")


def test_buckets_of_messages_are_uniform() -> None:
    counts = [0] * AUDIT_BUCKETS
    for n in range(64_000):
        counts[KEYS.audit_bucket(message_key(f"<{n}@shop.example>"))] += 1
    assert min(counts) > 850 and max(counts) < 1150  # 1000 expected, about 3.2 sigma


# ---------------------------------------------------------------------------------------------
# On the cluster


def _event(address: str, kind: EventType = EventType.GRANTED) -> ConsentEvent:
    return ConsentEvent(
        event=kind,
        purposes=(Purpose.CAMPAIGN_PERFORMANCE,),
        address=address,
        occurred_at=T0,
        actor="api",
        method="api",
    )


async def test_writes_spread_over_every_master(cluster: ValkeyCluster) -> None:
    client = async_client(cluster.url)
    store = RedisConsentStore(client, KEYS, ADDRESS_KEY, ConsentSettings())
    log = AuditLog(client, KEYS, "/nonexistent/journal", timeout=5, retention_days=30)
    try:
        for n in range(150):
            await store.record(_event(f"user{n}@example.org"))
            await log.write([make_record(n, message_id=f"<m{n}@shop.example>")])
    finally:
        await client.aclose()
    sizes = []
    for master in cluster.primaries():
        with master.client() as direct:
            sizes.append(int(direct.dbsize()))
    total = sum(sizes)
    assert len(sizes) == 3 and all(0.2 * total < size < 0.47 * total for size in sizes), sizes


async def _stored(log: AuditLog) -> list[str]:
    out = io.StringIO()
    await log.export(
        T0 - timedelta(days=1), datetime.now(UTC) + timedelta(days=1), "jsonl", out, False
    )
    return [json.loads(line)["record_id"] for line in out.getvalue().splitlines()]


async def test_queries_stay_complete_while_a_slot_migrates(
    cluster: ValkeyCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = async_client(cluster.url, 1.0)
    log = AuditLog(client, KEYS, tmp_path / "audit-journal", timeout=1.0, retention_days=30,
                   address_key=ADDRESS_KEY)  # fmt: skip
    store = RedisConsentStore(client, KEYS, ADDRESS_KEY, ConsentSettings())
    # Messages of every bucket, and recipients with consent and a last-open day.
    records = [
        make_record(n, message_id=f"<m{n}@shop.example>", rcpt=f"u{n % 7}@example.org")
        for n in range(140)
    ]
    for record in records:
        await log.write([record])
    for n in range(7):
        await store.record(_event(f"u{n}@example.org"))
        await note_open_day(client, KEYS, store.rkey(f"u{n}@example.org"), T0)
    before = await _stored(log)
    by_rcpt = await log.search("u3@example.org", None, None, 1000)
    assert sorted(before) == sorted(r.record_id for r in records)

    # Migrate the slot of the bucket of message 0 to another master, half of its keys first.
    bucket = KEYS.audit_bucket(message_key("<m0@shop.example>"))
    slot = _slot(KEYS.audit_stream(bucket))
    source = cluster.master_of(KEYS.audit_stream(bucket))
    target = next(m for m in cluster.primaries() if m.port != source.port)
    cluster.begin_migration(slot, source, target)
    with source.client() as direct:
        in_slot = int(direct.execute_command("CLUSTER COUNTKEYSINSLOT", slot))
    assert in_slot >= 3
    cluster.move_keys(slot, source, target, in_slot // 2)

    # Reads by name follow the keys (ASK), whichever side each key is on.
    assert await _stored(log) == before
    assert await log.search("u3@example.org", None, None, 1000) == by_rcpt
    assert [r.record_id for r in await log.by_message("<m0@shop.example>")] == [
        records[0].record_id
    ]
    # A full scan cannot be sure while keys move: it says so instead of missing some.
    monkeypatch.setattr(fanout, "SCAN_RETRY_PAUSE", 0.05)
    with pytest.raises(StoreUnavailable, match="migrating"):
        await store.verify()
    # A write whose keys sit on both sides cannot run (TRYAGAIN): it is journalled, not lost.
    late = make_record(999, message_id="<m0@shop.example>", rcpt="late@example.org")
    await log.write([late])
    assert log.journal.pending()

    cluster.finish_migration(slot, source, target)
    assert await log.replay_journal() == 1
    after = await _stored(log)
    assert sorted(after) == sorted([*before, late.record_id])
    report = await store.verify()
    assert report.ok and report.recipients == 7
    await client.aclose()


def _keys_on(cluster: ValkeyCluster, master_port: int, make: object, start: int = 0) -> str:
    """The first ``make(n)`` whose key lives on the master listening on ``master_port``."""
    assert callable(make)
    for n in range(start, start + 10_000):
        key = make(n)
        if cluster.master_of(key[1]).port == master_port:
            return str(key[0])
    raise AssertionError("no key found on that master")


async def test_a_write_the_dying_master_never_replicated_is_restored(
    private_cluster: ValkeyCluster, tmp_path: Path
) -> None:
    """Asynchronous replication loses a write a master acknowledged and died with; WAIT sees
    that no replica has it, the write journal keeps it, the replay after the failover puts it
    back, exactly once."""
    cluster = private_cluster
    master = cluster.primaries()[0]
    replica = cluster.replica_of(master)
    # A message key, a recipient and an audit bucket whose slots that master serves.
    address_key = ADDRESS_KEY
    ledger_key = _keys_on(
        cluster, master.port, lambda n: (f"{n:032x}", KEYS.delivered(f"{n:032x}"))
    )
    store0 = RedisConsentStore(async_client(cluster.url), KEYS, address_key, ConsentSettings())
    address = _keys_on(
        cluster, master.port,
        lambda n: (f"v{n}@example.org", KEYS.consent_state(store0.rkey(f"v{n}@example.org"))),
    )  # fmt: skip
    await store0.client.aclose()
    message_id = _keys_on(
        cluster, master.port,
        lambda n: (f"<d{n}@x>", KEYS.audit_by_message(message_key(f"<d{n}@x>"))),
    )  # fmt: skip

    client = async_client(cluster.url, 1.0)
    durability = Durability(replicas=1, timeout_ms=200)
    writeback = WriteBack(tmp_path / "redis-journal", keep=120)
    ledger = Ledger(client, KEYS, timeout=1.0, durability=durability, writeback=writeback)
    store = RedisConsentStore(client, KEYS, address_key, ConsentSettings(), timeout=1.0,
                              durability=durability, writeback=writeback)  # fmt: skip
    log = AuditLog(client, KEYS, tmp_path / "audit-journal", timeout=1.0, retention_days=30,
                   durability=durability)  # fmt: skip
    record = make_record(1, message_id=message_id, rcpt=address)

    # Confirmed writes first: with the replica following, nothing is journalled.
    await ledger.record(ledger_key, {"a@example.org": "250 ok"})
    assert not writeback.pending()

    cluster.freeze(replica)
    cluster.cut_replication(master)
    await ledger.record(ledger_key, {"b@example.org": "250 ok"})
    event = await store.record(_event(address, EventType.WITHDRAWN))
    await log.write([record])
    assert writeback.pending() and log.journal.pending()  # acknowledged, not replicated
    cluster.kill(master)
    cluster.thaw(replica)
    await asyncio.to_thread(cluster.wait_healthy, 60)  # the replica took over, without them

    # The first calls after the failover may meet connections to the dead master.
    assert set(await _settled(ledger.read, ledger_key)) == {"a@example.org"}  # b was lost
    assert await _retried(store.history, address) == []
    handlers = {
        "ledger": ledger.replay_records,
        "forget": ledger.replay_forgets,
        "consent": store.replay_events,
    }
    for _attempt in range(50):  # the client re-learns the slot map on its first errors
        try:
            await writeback.replay(handlers)
            await log.replay_journal()
            break
        except Exception:
            await asyncio.sleep(0.2)
    assert set(await ledger.done(ledger_key)) == {"a@example.org", "b@example.org"}
    assert [e.id for e in await store.history(address)] == [event.id]
    assert await log.by_message(message_id) == [record]
    # Replaying again (a restart after a crash mid-replay) doubles nothing.
    await writeback.add("consent", record={**json.loads(json.dumps(_journal_record(event)))})
    await writeback.replay(handlers)
    assert [e.id for e in await store.history(address)] == [event.id]
    await client.aclose()


async def _settled(read: Any, key: str) -> dict[str, str]:
    for _attempt in range(50):
        found, answered = await read(key)
        if answered:
            return dict(found)
        await asyncio.sleep(0.1)
    raise AssertionError("the ledger never answered")


async def _retried(call: Any, *args: Any) -> Any:
    for _attempt in range(50):
        try:
            return await call(*args)
        except StoreUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("the store never answered")


def _journal_record(event: ConsentEvent) -> dict[str, object]:
    from relay.store.consent_proof import format_time, proof_fields

    record = proof_fields(event)
    assert event.recorded_at is not None
    record.update(id=event.id, recorded_at=format_time(event.recorded_at))
    return record


def test_the_sync_client_reads_every_master(cluster: ValkeyCluster) -> None:
    from tests.support.redis import sync_client

    client = sync_client(cluster.url)
    assert isinstance(client, redis.cluster.RedisCluster)
    for n in range(30):
        client.set(KEYS.recipient_address(f"{n:032x}"), f"a{n}@example.org")
    keys = [KEYS.recipient_address(f"{n:032x}") for n in range(30)]
    assert fanout.sync_get_many(client, keys) == [f"a{n}@example.org".encode() for n in range(30)]
    client.close()


async def test_readiness_holds_while_one_master_is_down(private_cluster: ValkeyCluster) -> None:
    from relay.ops.readiness import _redis

    client: AsyncRedis = async_client(private_cluster.url, 0.5)
    assert isinstance(client, RedisCluster)
    await client.initialize()
    assert await _redis(client) is None
    private_cluster.kill(private_cluster.primaries()[1])
    assert await _redis(client) is None  # the others answer: the relay works, fail closed
    for master in private_cluster.primaries():
        private_cluster.kill(master)
    problem = await _redis(client)
    assert problem is not None and problem.startswith("redis: ")
    await client.aclose()
