"""The consent store on a real Valkey: events, derived state, chain verification, fail-closed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.core.recipients import recipient_key
from relay.errors import StoreUnavailable
from relay.model import ConsentEvent, EventType, Purpose, PurposeConsent
from relay.settings import ConsentSettings
from relay.store.consent import RedisConsentStore
from relay.store.embedded import EmbeddedRedis
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from tests.support.redis import async_client

KEY = b"test-address-key"
KEYS = Keys("t:")
ADDR = "Alice@Example.org"
CP = Purpose.CAMPAIGN_PERFORMANCE
FD = Purpose.FRAUD_DETECTION
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def ev(
    kind: EventType,
    *purposes: Purpose,
    at: datetime = T0,
    address: str = ADDR,
    version: str = "1",
    actor: str = "recipient",
    method: str = "button",
) -> ConsentEvent:
    return ConsentEvent(
        event=kind,
        purposes=purposes,
        address=address,
        occurred_at=at,
        actor=actor,
        method=method,
        source={"page": "https://example.org/prefs"},
        notice={"id": "tracking", "version": version, "language": "fr", "hash": "abc"},
        evidence={"ip": "192.0.2.1", "user_agent": "Mozilla/5.0", "token_id": "t1"},
    )


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncRedis]:
    c = async_client(redis_url, 2)
    yield c
    await c.aclose()


def make_store(client: AsyncRedis, settings: ConsentSettings | None = None) -> RedisConsentStore:
    return RedisConsentStore(
        client, KEYS, KEY, settings or ConsentSettings(), rules_digest="rules-1", timeout=0.5
    )


async def test_record_sets_id_time_and_proof(client: AsyncRedis) -> None:
    store = make_store(client)
    stored = await store.record(ev(EventType.GRANTED, CP))
    assert stored.id and stored.recorded_at is not None
    assert stored.address == "alice@example.org"
    assert stored.rules_digest == "rules-1"
    rkey = recipient_key(ADDR, KEY)
    raw = await client.lrange(KEYS.consent_events(rkey), 0, -1)
    record = json.loads(raw[0])
    assert record["prev"] == "" and len(record["hash"]) == 64
    assert record["notice"]["version"] == "1" and record["evidence"]["ip"] == "192.0.2.1"
    # Rule 4: no address in any key.
    assert not [k for k in await client.keys("*") if b"example" in k.lower()]
    history = await store.history("alice@example.org")
    assert history == [stored]


async def test_state_per_event_type(client: AsyncRedis) -> None:
    store = make_store(client)
    now = T0 + timedelta(days=30)
    collected = await store.record(ev(EventType.COLLECTED, at=T0 - timedelta(days=400)))
    informed = await store.record(ev(EventType.INFORMED, CP, FD, at=T0 - timedelta(days=20)))
    await store.record(ev(EventType.REQUESTED, CP, FD, at=T0 - timedelta(days=3)))
    granted = await store.record(ev(EventType.GRANTED, CP, at=T0))
    refused = await store.record(ev(EventType.REFUSED, FD, at=T0))
    state = (await store.states([ADDR], now))[ADDR]
    assert state.available
    assert state.collected_at == collected.occurred_at
    assert state.informed_at == informed.occurred_at
    assert state.legacy_purposes == (CP, FD)
    assert not state.objected
    assert state.purposes[CP].state is EventType.GRANTED
    assert state.purposes[CP].event_id == granted.id
    assert state.purposes[FD].state is EventType.REFUSED
    assert state.purposes[FD].event_id == refused.id
    assert Purpose.DELIVERABILITY not in state.purposes
    assert state.last_solicited_at == T0  # the refusal; the request was answered
    assert granted.id in state.event_ids and collected.id in state.event_ids

    withdrawn = await store.record(ev(EventType.WITHDRAWN, CP, at=T0 + timedelta(days=1)))
    await store.record(ev(EventType.OBJECTED, at=T0 + timedelta(days=2)))
    expired = await store.record(ev(EventType.EXPIRED, FD, at=T0 + timedelta(days=3)))
    state = (await store.states([ADDR], now))[ADDR]
    assert state.purposes[CP].state is EventType.WITHDRAWN
    assert state.purposes[CP].event_id == withdrawn.id
    assert state.purposes[FD].state is EventType.EXPIRED
    assert state.purposes[FD].event_id == expired.id
    assert state.objected
    assert state.last_solicited_at == withdrawn.occurred_at


async def test_unanswered_request_is_a_solicitation(client: AsyncRedis) -> None:
    store = make_store(client)
    await store.record(ev(EventType.REQUESTED, CP, at=T0, actor="system", method="relay"))
    state = (await store.states([ADDR], T0 + timedelta(days=1)))[ADDR]
    assert state.last_solicited_at == T0
    assert CP not in state.purposes
    unknown = (await store.states(["bob@example.org"], T0))["bob@example.org"]
    assert unknown.available and not unknown.purposes and unknown.last_solicited_at is None


async def test_lifetime_expiry(client: AsyncRedis) -> None:
    store = make_store(client, ConsentSettings(lifetime_days=10))
    granted = await store.record(ev(EventType.GRANTED, CP, at=T0))
    before = (await store.states([ADDR], T0 + timedelta(days=9)))[ADDR].purposes[CP]
    after = (await store.states([ADDR], T0 + timedelta(days=10)))[ADDR].purposes[CP]
    assert before.state is EventType.GRANTED
    assert after.state is EventType.EXPIRED
    assert after.at == T0 + timedelta(days=10) and after.event_id == granted.id


async def test_notice_version_renewal(client: AsyncRedis) -> None:
    await make_store(client).record(ev(EventType.GRANTED, CP, at=T0, version="1"))
    renew = ConsentSettings(renew_on_notice_change=True, notice_version="2")
    keep = ConsentSettings(renew_on_notice_change=False, notice_version="2")
    now = T0 + timedelta(days=1)

    async def purpose(settings: ConsentSettings) -> PurposeConsent:
        return (await make_store(client, settings).states([ADDR], now))[ADDR].purposes[CP]

    kept = await purpose(keep)
    assert (kept.state, kept.notice_version) == (EventType.GRANTED, "1")
    voided = await purpose(renew)
    assert (voided.state, voided.notice_version) == (EventType.EXPIRED, "1")
    await make_store(client).record(ev(EventType.GRANTED, CP, at=now, version="2"))
    renewed = await purpose(renew)
    assert (renewed.state, renewed.notice_version) == (EventType.GRANTED, "2")


async def test_out_of_order_events_keep_latest_occurred(client: AsyncRedis) -> None:
    store = make_store(client)
    late = await store.record(ev(EventType.WITHDRAWN, CP, at=T0 + timedelta(days=5)))
    # An import brings an older grant and an older collection afterwards.
    await store.record(ev(EventType.GRANTED, CP, at=T0, actor="import", method="import"))
    await store.record(ev(EventType.COLLECTED, at=T0 - timedelta(days=1)))
    first = await store.record(ev(EventType.COLLECTED, at=T0 - timedelta(days=9)))
    await store.record(ev(EventType.COLLECTED, at=T0 - timedelta(days=2)))
    state = (await store.states([ADDR], T0 + timedelta(days=6)))[ADDR]
    assert state.purposes[CP].state is EventType.WITHDRAWN
    assert state.purposes[CP].event_id == late.id
    assert state.collected_at == first.occurred_at
    assert (await store.verify(ADDR)).ok


async def test_states_many_recipients_keyed_as_given(client: AsyncRedis) -> None:
    store = make_store(client)
    await store.record(ev(EventType.GRANTED, CP, address="b@example.org"))
    states = await store.states(["<B@Example.org>", "c@example.org"], T0)
    assert set(states) == {"<B@Example.org>", "c@example.org"}
    assert states["<B@Example.org>"].purposes[CP].state is EventType.GRANTED
    assert states["<B@Example.org>"].recipient_key == recipient_key("b@example.org", KEY)
    assert not states["c@example.org"].purposes


async def test_verify_detects_edited_event(client: AsyncRedis) -> None:
    store = make_store(client)
    for day in range(3):
        await store.record(ev(EventType.GRANTED, CP, at=T0 + timedelta(days=day)))
    assert (await store.verify()).ok
    rkey = recipient_key(ADDR, KEY)
    record = json.loads(await client.lindex(KEYS.consent_events(rkey), 1) or b"")
    record["evidence"]["ip"] = "203.0.113.9"
    await client.lset(KEYS.consent_events(rkey), 1, json.dumps(record))
    report = await store.verify(ADDR)
    assert not report.ok
    assert [(p.index, p.event_id) for p in report.problems] == [(1, record["id"])]
    assert rkey in str(report.problems[0]) and "altered" in str(report.problems[0])


async def test_verify_detects_rehashed_edit_and_deletions(client: AsyncRedis) -> None:
    store = make_store(client)
    events = [await store.record(ev(EventType.GRANTED, CP, at=T0 + timedelta(days=d))) for d in
              range(4)]  # fmt: skip
    rkey = recipient_key(ADDR, KEY)
    lkey = KEYS.consent_events(rkey)
    # Delete the second event: the third no longer follows.
    second = await client.lindex(lkey, 1)
    assert isinstance(second, bytes)
    await client.lrem(lkey, 1, second)  # type: ignore[arg-type]
    report = await store.verify(ADDR)
    assert any(p.event_id == events[2].id and "chain broken" in p.reason for p in report.problems)
    # Delete the last event: only the state's head can tell.
    await client.flushall()
    events = [await store.record(ev(EventType.GRANTED, CP, at=T0 + timedelta(days=d))) for d in
              range(2)]  # fmt: skip
    await client.rpop(lkey)
    report = await store.verify()
    assert report.recipients == 1 and report.events == 1
    assert any("head" in p.reason for p in report.problems)


async def test_verify_detects_edited_state_cache(client: AsyncRedis) -> None:
    store = make_store(client)
    await store.record(ev(EventType.REFUSED, CP, at=T0))
    rkey = recipient_key(ADDR, KEY)
    field = f"p:{CP.value}"
    stored = await client.hget(KEYS.consent_state(rkey), field)
    assert isinstance(stored, bytes)
    value = stored.decode()
    await client.hset(KEYS.consent_state(rkey), field, value.replace("refused", "granted"))
    report = await store.verify()
    assert [p.reason for p in report.problems] == [f"cached state field {field!r} differs from "
                                                    "the events"]  # fmt: skip


async def test_concurrent_records_keep_one_chain(client: AsyncRedis) -> None:
    stores = [make_store(client) for _ in range(4)]
    kinds = (EventType.GRANTED, EventType.WITHDRAWN)
    stored = await asyncio.gather(
        *(
            stores[i % 4].record(ev(kinds[i % 2], CP, at=T0 + timedelta(seconds=i)))
            for i in range(60)
        )
    )
    assert len({e.id for e in stored}) == 60
    report = await stores[0].verify(ADDR)
    assert report.ok and report.events == 60
    state = (await stores[0].states([ADDR], T0 + timedelta(days=1)))[ADDR]
    assert state.purposes[CP].event_id == stored[59].id  # latest occurred_at wins


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event": "maybe"}, "event: unknown event 'maybe'"),
        ({"purposes": (CP, "ads")}, "purposes[1]: unknown purpose 'ads'"),
        ({"purposes": ()}, "purposes: a 'granted' event needs at least one purpose"),
        ({"occurred_at": datetime(2026, 5, 1)}, "occurred_at: must be a time-zone-aware"),
        ({"occurred_at": datetime(2099, 1, 1, tzinfo=UTC)}, "occurred_at: 2099-01-01"),
        ({"actor": "robot"}, "actor: 'robot' is not one of"),
        ({"method": "telepathy"}, "method: 'telepathy' is not one of"),
        ({"address": "not-an-address"}, "address: not an email address"),
        ({"notice": {"colour": "red"}}, "notice: unknown key 'colour'"),
        ({"evidence": {"ip": "999.1.1.1"}}, "evidence.ip: not an IP address"),
    ],
)
async def test_record_validation(
    client: AsyncRedis, change: dict[str, object], message: str
) -> None:
    store = make_store(client)
    bad = dataclasses.replace(ev(EventType.GRANTED, CP), **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        await store.record(bad)
    assert await client.dbsize() == 0


async def test_states_fail_closed_when_redis_stops(
    private_redis: Callable[[], EmbeddedRedis],
) -> None:
    server = private_redis()
    client: aioredis.Redis = aioredis.Redis.from_url(
        server.url, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    store = make_store(client)
    await store.record(ev(EventType.GRANTED, CP))
    assert (await store.states([ADDR], T0))[ADDR].purposes[CP].state is EventType.GRANTED
    server.stop()
    started = time.monotonic()
    states = await store.states([ADDR, "b@example.org"], T0)
    assert time.monotonic() - started < 1.5
    assert [s.available for s in states.values()] == [False, False]
    assert not states[ADDR].purposes
    assert states[ADDR].recipient_key == recipient_key(ADDR, KEY)
    with pytest.raises(StoreUnavailable):
        await store.record(ev(EventType.GRANTED, CP))
    await client.connection_pool.disconnect()


async def test_states_time_out_on_a_silent_server(
    private_redis: Callable[[], EmbeddedRedis],
) -> None:
    server = private_redis()
    client: aioredis.Redis = aioredis.Redis.from_url(server.url, socket_timeout=5)
    store = make_store(client)  # store timeout 0.5 s, shorter than the socket's
    await client.ping()
    assert server.process is not None
    server.process.send_signal(19)  # SIGSTOP: the server holds the connection but never answers
    try:
        started = time.monotonic()
        states = await store.states([ADDR], T0)
        assert time.monotonic() - started < 1.5
        assert not states[ADDR].available
    finally:
        server.process.send_signal(18)  # SIGCONT, so that the fixture can stop it
    await client.connection_pool.disconnect()


DECISIVE = (EventType.GRANTED, EventType.REFUSED, EventType.WITHDRAWN, EventType.EXPIRED)
_event_st = st.tuples(
    st.sampled_from(list(EventType)),
    st.lists(st.sampled_from(list(Purpose)), min_size=1, max_size=3, unique=True),
    st.integers(min_value=0, max_value=10_000),  # minutes after T0; distinct, see below
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_event_st, min_size=1, max_size=12, unique_by=lambda e: e[2]),
    st.randoms(use_true_random=False),
)
def test_state_does_not_depend_on_arrival_order(
    redis_server: EmbeddedRedis,
    events: list[tuple[EventType, list[Purpose], int]],
    rng: random.Random,
) -> None:
    """Any arrival order gives the state of the latest occurred_at per purpose, and verifies."""
    shuffled = events[:]
    rng.shuffle(shuffled)

    async def scenario() -> None:
        client: aioredis.Redis = aioredis.Redis.from_url(redis_server.url)
        await client.flushdb()
        store = make_store(client)
        ids: dict[int, str] = {}
        for kind, purposes, minutes in shuffled:
            stored = await store.record(ev(kind, *purposes, at=T0 + timedelta(minutes=minutes)))
            ids[minutes] = stored.id
        state = (await store.states([ADDR], T0 + timedelta(days=8)))[ADDR]
        assert (await store.verify()).ok
        await client.connection_pool.disconnect()
        for purpose in Purpose:
            latest = max(
                (e for e in events if e[0] in DECISIVE and purpose in e[1]),
                key=lambda e: e[2],
                default=None,
            )
            if latest is None:
                assert purpose not in state.purposes
            else:
                assert state.purposes[purpose].event_id == ids[latest[2]]
                assert state.purposes[purpose].state is latest[0]
        collected = [e[2] for e in events if e[0] is EventType.COLLECTED]
        expected = T0 + timedelta(minutes=min(collected)) if collected else None
        assert state.collected_at == expected
        assert state.objected == any(e[0] is EventType.OBJECTED for e in events)

    asyncio.run(scenario())


async def test_history_names_a_damaged_record(client: AsyncRedis) -> None:
    store = make_store(client)
    await store.record(ev(EventType.COLLECTED))
    rkey = recipient_key(ADDR, KEY)
    await client.rpush(KEYS.consent_events(rkey), b"{not json")
    with pytest.raises(ValueError, match=rf"recipient {rkey}: record #1 is damaged"):
        await store.history(ADDR)


async def test_import_batches_and_live_records_interleave(
    client: AsyncRedis, tmp_path: Path
) -> None:
    """A batch whose chain head moves under it (a live write) retries and keeps valid chains."""
    from relay.store.consent_import import import_csv

    addresses = [f"u{i}@example.org" for i in range(3)]
    path = tmp_path / "rows.csv"
    lines = ["address,event,purposes,occurred_at,method,notice_version,source_form_id"]
    for i in range(300):
        at = (T0 + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{addresses[i % 3]},granted,fraud_detection,{at},checkbox,1,signup")
    path.write_text("\n".join(lines) + "\n")
    store = make_store(client)
    live = [
        store.record(ev(EventType.REFUSED, CP, address=addresses[i % 3], at=T0)) for i in range(60)
    ]
    problems: list[str] = []
    importing = import_csv(store, path, on_bad=problems.append, progress=False, batch=25)
    report, _records = await asyncio.gather(importing, asyncio.gather(*live))
    assert not problems and (report.added, report.skipped) == (300, 0)
    checked = await store.verify()
    assert checked.ok and checked.events == 360
