"""Retention on a real Valkey (issue 10 item 8): last-open days and consent chains expire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay.core.recipients import recipient_key
from relay.model import ConsentEvent, EventType, Purpose
from relay.settings import ConsentSettings, RetentionSettings
from relay.store.consent import RedisConsentStore
from relay.store.link_store import day_number
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from relay.store.retention import DELETE_LUA, Retention
from tests.support.redis import async_client

KEY = b"retention-key"
KEYS = Keys("r:")
CP = Purpose.CAMPAIGN_PERFORMANCE
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
YEAR = timedelta(days=365)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncRedis]:
    c = async_client(redis_url, 2)
    yield c
    await c.aclose()


def retention(client: AsyncRedis, **kw: int) -> Retention:
    return Retention(client, KEYS, RetentionSettings(**kw), ConsentSettings())


async def add(client: AsyncRedis, address: str, kind: EventType, at: datetime) -> None:
    """One event that happened, and was recorded, at ``at``."""
    store = RedisConsentStore(client, KEYS, KEY, ConsentSettings())
    event = ConsentEvent(
        event=kind,
        purposes=(CP,) if kind not in (EventType.COLLECTED, EventType.OBJECTED) else (),
        address=address,
        occurred_at=at,
        actor="recipient",
        method="checkbox",
        source={"form_id": "signup"},
        notice={"version": "1"},
    )
    await store.append_many([store.prepare(event, at)])


async def exists(client: AsyncRedis, address: str) -> bool:
    rkey = recipient_key(address, KEY)
    return bool(await client.exists(KEYS.consent_events(rkey), KEYS.consent_state(rkey)))


async def last_opens(client: AsyncRedis, keys: Keys = KEYS) -> set[str]:
    """The recipients with a last-open day, over every bucket."""
    found: set[str] = set()
    for bucket in keys.last_open_buckets():
        members: Any = await client.zrange(keys.last_open_bucket(bucket), 0, -1)
        found |= {m.decode() for m in members}
    return found


async def test_last_open_days_older_than_the_limit_are_removed(client: AsyncRedis) -> None:
    now = T0
    today = day_number(now)
    for member, day in (("old", today - 397), ("edge", today - 396), ("new", today)):
        await client.zadd(KEYS.last_open(member), {member: day})
    assert await retention(client).trim_last_open(now) == 1
    assert await last_opens(client) == {"edge", "new"}
    assert await retention(client, last_open_days=0).trim_last_open(now + 10 * YEAR) == 0


async def test_consent_chains_are_kept_while_relied_on_and_for_the_limitation_period(
    client: AsyncRedis,
) -> None:
    start = T0
    # Granted at T0: valid 395 days, then kept 1826 days after it expired.
    await add(client, "granted@example.org", EventType.GRANTED, start)
    # Withdrawn a year after it was granted.
    await add(client, "withdrawn@example.org", EventType.GRANTED, start)
    await add(client, "withdrawn@example.org", EventType.WITHDRAWN, start + YEAR)
    # Legacy: informed and never objected (the relay may rely on it), or objected.
    await add(client, "legacy@example.org", EventType.COLLECTED, start)
    await add(client, "legacy@example.org", EventType.INFORMED, start)
    await add(client, "objected@example.org", EventType.INFORMED, start)
    await add(client, "objected@example.org", EventType.OBJECTED, start)
    # Only collected (never consented): kept 1826 days after its last event.
    await add(client, "collected@example.org", EventType.COLLECTED, start)

    days = timedelta(days=1)
    trim = retention(client).trim_consent
    # Five years (1826 days) after their last event: the chains that never held a consent.
    assert await trim(start + 1826 * days) == (0, 0)
    assert await trim(start + 1827 * days) == (2, 3)
    assert not await exists(client, "objected@example.org")
    assert not await exists(client, "collected@example.org")
    # Five years after the withdrawal (a year after the grant).
    assert await trim(start + YEAR + 1826 * days) == (0, 0)
    assert await trim(start + YEAR + 1827 * days) == (1, 2)
    # Five years after the grant expired ([consent] lifetime_days = 395).
    assert await exists(client, "granted@example.org")
    assert await trim(start + (395 + 1827) * days) == (1, 1)
    assert not await exists(client, "granted@example.org")
    # A legacy notice nobody objected to is relied on for as long as it stands.
    assert await trim(start + 100 * YEAR) == (0, 0)
    assert await exists(client, "legacy@example.org")


async def test_a_recent_event_keeps_the_chain(client: AsyncRedis) -> None:
    await add(client, "a@example.org", EventType.REFUSED, T0)
    await add(client, "a@example.org", EventType.REQUESTED, T0 + 5 * YEAR)
    assert await retention(client).trim_consent(T0 + 6 * YEAR) == (0, 0)
    assert await exists(client, "a@example.org")


async def test_the_deletion_is_a_compare_and_set_on_the_head(client: AsyncRedis) -> None:
    await add(client, "a@example.org", EventType.REFUSED, T0)
    rkey = recipient_key("a@example.org", KEY)
    script = client.register_script(DELETE_LUA)
    keys = [KEYS.consent_events(rkey), KEYS.consent_state(rkey)]
    # An event appended after the check moved the head: nothing is deleted.
    assert await script(keys=keys, args=["an older head"]) == 0
    assert await exists(client, "a@example.org")


async def test_the_consent_scan_runs_once_a_day(client: AsyncRedis) -> None:
    await add(client, "a@example.org", EventType.REFUSED, T0)
    await add(client, "b@example.org", EventType.REFUSED, T0)
    later = T0 + 6 * YEAR
    first = await retention(client).apply(later)
    assert first.consent_chains == 2 and first.consent_events == 2
    await add(client, "c@example.org", EventType.REFUSED, T0)
    assert (await retention(client).apply(later)).consent_chains == 0  # another relay's turn
    await client.delete(KEYS.retention_lock())
    assert (await retention(client).apply(later)).consent_chains == 1


def test_proofs_must_outlive_the_decision_records_that_cite_them() -> None:
    from relay.errors import SettingsError
    from relay.settings import parse_settings

    text = "[audit]\nretention_days = 1095\n[retention]\nconsent_days = 365\n"
    with pytest.raises(SettingsError, match=r"config.toml:4: retention.consent_days: 365 is"):
        parse_settings(text, "config.toml", env={})
    assert parse_settings(text.replace("365", "0"), "c.toml", env={}).retention.consent_days == 0
