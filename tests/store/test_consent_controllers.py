"""The controller dimension of the consent store, on a real Valkey: two controllers never share
consent, and the data of a relay from before controllers keeps working."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.core.controllers import Controllers, build_controllers
from relay.model import ConsentEvent, EventType, Purpose
from relay.settings import ConsentSettings, parse_settings
from relay.store.consent import RedisConsentStore
from relay.store.consent_import import import_csv
from relay.store.consent_proof import canonical, format_time, proof_fields
from relay.store.consent_state import RECORD_LUA, script_args
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from tests.support.redis import async_client

KEY = b"test-address-key"
KEYS = Keys("t:")
ADDR = "alice@example.org"
CP = Purpose.CAMPAIGN_PERFORMANCE
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
SHOP = '[controllers.shop]\nname = "Shop SAS"\ndomains = ["shop.example"]\n'
CLUB = '[controllers.club]\nname = "Club"\ndomains = ["club.example"]\n'


def controllers(text: str) -> Controllers:
    return build_controllers(parse_settings(text, "c.toml", env={}).controllers)


def ev(kind: EventType, controller: str = "", at: datetime = T0) -> ConsentEvent:
    return ConsentEvent(
        kind, (CP,), ADDR, at, actor="admin", method="admin",
        notice={"version": "1"}, controller=controller,
    )  # fmt: skip


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[AsyncRedis]:
    c = async_client(redis_url, 2)
    yield c
    await c.aclose()


def store(client: AsyncRedis, registry: Controllers | None = None) -> RedisConsentStore:
    return RedisConsentStore(client, KEYS, KEY, ConsentSettings(), controllers=registry)


async def old_relay_grant(client: AsyncRedis) -> str:
    """A grant exactly as the relay stored it before controllers existed: unscoped keys, a
    record without a ``controller`` field, hashed and chained as then."""
    st = store(client)
    pending = st.prepare(ev(EventType.GRANTED), T0)
    record = proof_fields(pending.event)
    del record["controller"]
    record.update(id=pending.event.id, recorded_at=format_time(T0), prev="")
    import hashlib

    digest = hashlib.sha256(canonical(record)).hexdigest()
    record["hash"] = digest
    script = client.register_script(RECORD_LUA)
    args = script_args(pending.event, "", canonical(record), digest)
    keys = [
        KEYS.consent_events(pending.rkey),
        KEYS.consent_state(pending.rkey),
        KEYS.consent_import_seen(pending.rkey),
    ]
    status, _ = await script(keys=keys, args=args)
    assert status == 1
    assert "controller" not in json.loads((await client.lrange(keys[0], 0, -1))[0])
    return pending.event.id


async def test_two_controllers_never_share_consent(client: AsyncRedis) -> None:
    st = store(client, controllers(SHOP + CLUB))
    stored = await st.record(ev(EventType.GRANTED, "shop"))
    assert stored.controller == "shop"
    shop = (await st.states([ADDR], T0, "shop"))[ADDR]
    club = (await st.states([ADDR], T0, "club"))[ADDR]
    assert shop.purposes[CP].state is EventType.GRANTED and shop.controller == "shop"
    assert club.purposes == {} and club.controller == "club"
    # A withdrawal given to the club leaves the shop's consent alone, and the reverse.
    await st.record(ev(EventType.WITHDRAWN, "club", at=T0.replace(hour=10)))
    assert (await st.states([ADDR], T0, "shop"))[ADDR].purposes[CP].state is EventType.GRANTED
    assert [e.controller for e in await st.history(ADDR, "club")] == ["club"]
    assert [e.event for e in await st.history(ADDR, "shop")] == [EventType.GRANTED]
    # Each chain verifies; every controller is checked when none is named.
    report = await st.verify()
    assert report.ok and report.recipients == 2 and report.events == 2


async def test_naming_a_controller_is_required_when_there_are_several(
    client: AsyncRedis,
) -> None:
    st = store(client, controllers(SHOP + CLUB))
    with pytest.raises(ValueError, match="2 controllers are configured"):
        await st.record(ev(EventType.GRANTED))
    with pytest.raises(ValueError, match="unknown controller 'gym'"):
        await st.record(ev(EventType.GRANTED, "gym"))
    with pytest.raises(ValueError, match="controller: not a controller id"):
        await st.record(ev(EventType.GRANTED, "Bad Id"))
    with pytest.raises(ValueError, match="name one"):
        await st.states([ADDR], T0)


async def test_data_from_before_controllers_keeps_working(client: AsyncRedis) -> None:
    event_id = await old_relay_grant(client)
    # Still no controller configured: read as before.
    implicit = store(client)
    assert (await implicit.states([ADDR], T0))[ADDR].purposes[CP].event_id == event_id
    # One controller configured: it owns the older consent (no migration needed).
    one = store(client, controllers(SHOP))
    state = (await one.states([ADDR], T0, "shop"))[ADDR]
    assert state.purposes[CP].state is EventType.GRANTED and state.purposes[CP].event_id == event_id
    (old,) = await one.history(ADDR)
    assert old.controller == "shop"  # given the controller holding it
    await one.record(ev(EventType.WITHDRAWN, at=T0.replace(hour=11)))
    assert (await one.verify()).ok  # the old record (no controller) and the new one chain on
    # A second controller joins: the first must be named the owner, and the second sees nothing.
    two = store(client, controllers(SHOP.replace("\n", "\nexisting_consent = true\n", 1) + CLUB))
    assert (await two.states([ADDR], T0, "shop"))[ADDR].purposes[CP].state is EventType.WITHDRAWN
    assert (await two.states([ADDR], T0, "club"))[ADDR].purposes == {}
    assert (await two.verify()).ok


async def test_verify_finds_a_record_of_another_controller(client: AsyncRedis) -> None:
    st = store(client, controllers(SHOP + CLUB))
    await st.record(ev(EventType.GRANTED, "club"))
    rkey = st.rkey(ADDR)
    # Someone copies the club's chain under the shop's keys: the shop must not rely on it.
    for kind in ("events", "state"):
        src = getattr(KEYS, f"consent_{kind}")(rkey, "club")
        await client.copy(src, getattr(KEYS, f"consent_{kind}")(rkey, "shop"))
    report = await st.verify(ADDR, "shop")
    assert not report.ok
    assert "belongs to controller 'club', not 'shop'" in str(report.problems[0])
    assert (await st.verify(ADDR, "club")).ok


async def test_import_is_per_controller_and_old_imports_stay_idempotent(
    client: AsyncRedis, tmp_path: Path
) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text(
        "address,event,occurred_at,purposes,method,notice_version,source_form_id\n"
        "alice@example.org,granted,2026-05-01T09:00:00Z,campaign_performance,checkbox,1,signup\n"
    )
    bad: list[str] = []
    before = await import_csv(store(client), csv, on_bad=bad.append, progress=False)
    assert (before.added, before.skipped) == (1, 0)
    # The same file after one controller was configured: already imported, nothing added.
    one = await import_csv(store(client, controllers(SHOP)), csv, on_bad=bad.append, progress=False)
    assert (one.added, one.skipped) == (1 - 1, 1)
    two_controllers = store(
        client, controllers(SHOP.replace("\n", "\nexisting_consent = true\n", 1) + CLUB)
    )
    # Several controllers and rows naming none: each row is a bad row naming the choices.
    report = await import_csv(two_controllers, csv, on_bad=bad.append, progress=False)
    assert (
        report.bad == 1 and "name one (shop, club)" in bad[-1] and bad[-1].startswith(f"{csv}:2:")
    )
    # For the club, the same rows are new consent of the club's.
    club = await import_csv(
        two_controllers, csv, on_bad=bad.append, progress=False, controller="club"
    )
    assert (club.added, club.skipped) == (1, 0)
    again = await import_csv(
        two_controllers, csv, on_bad=bad.append, progress=False, controller="club"
    )
    assert (again.added, again.skipped) == (0, 1)
    # A controller column wins over the default.
    csv.write_text(
        csv.read_text()
        .replace("purposes\n", "purposes,controller\n")
        .replace("performance\n", "performance,shop\n")
    )
    shop = await import_csv(
        two_controllers, csv, on_bad=bad.append, progress=False, controller="club"
    )
    assert (shop.added, shop.skipped) == (0, 1)  # the shop's copy was the old import
    assert (await two_controllers.states([ADDR], T0, "club"))[ADDR].purposes[
        CP
    ].state is EventType.GRANTED
