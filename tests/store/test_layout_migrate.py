"""``relay store migrate``: data an older relay wrote (key names without hash tags) reaches today's
names whole: consent chains and their import fingerprints, the audit trail with its stored times,
indexes and counts, ledger entries, addresses and last-open days; and ``relay serve`` refuses to
start over old data.

The old data is written the way the older relay wrote it: the same store code with the old key
names (``OldKeys``), the audit write script on the old single stream, plain commands for the rest.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from relay.cli.inactive import inactive_since
from relay.errors import RelayError
from relay.model import ConsentEvent, EventType, Purpose
from relay.settings import ConsentSettings, RedisSettings
from relay.store.audit import AuditLog, message_key
from relay.store.audit_codec import encode
from relay.store.audit_counts import encode_tally, has_untracked, read_counts, tally
from relay.store.consent import RedisConsentStore
from relay.store.consent_import import import_csv
from relay.store.embedded import EmbeddedRedis
from relay.store.layout_migrate import migrate, refuse_old_layout
from relay.store.ledger import Ledger
from relay.store.link_store import day_number, recipient_address
from relay.store.redis_keys import Keys
from tests.support.audit import ADDRESS_KEY, make_record

# The audit write script of the old layout (a list per message, every entry re-read to skip a
# record already there), as that release shipped it: old data is written the way it was.
OLD_WRITE_SCRIPT = """
local stream, counts, dims, days, untracked = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local pattern = '^(%x+):'
local known = {}
local written = 0
if #ARGV % 3 ~= 0 then return redis.error_reply('audit batch: arguments come in threes') end
for i = 1, #ARGV / 3 do
  local mkey, rkey = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  local payload, tally, flag = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local rid = string.match(payload, pattern)
  if not rid then return redis.error_reply('audit record ' .. i .. ' has no record id') end
  local seen = known[mkey]
  if seen == nil then
    seen = {}
    for _, sid in ipairs(redis.call('LRANGE', mkey, 0, -1)) do
      local entry = redis.call('XRANGE', stream, sid, sid)[1]
      if entry then
        local stored = string.match(entry[2][2], pattern)
        if stored then seen[stored] = true end
      end
    end
    known[mkey] = seen
  end
  if not seen[rid] then
    local sid = redis.call('XADD', stream, '*', 'r', payload)
    local ms = tonumber(string.match(sid, '^(%d+)'))
    redis.call('RPUSH', mkey, sid)
    redis.call('ZADD', rkey, ms, sid)
    local day = string.format('%d', math.floor(ms / 86400000))
    for name, by in string.gmatch(tally, '([^%s=]+)=(%d+)') do
      -- A field new on this day may be a new day, or a new dimension: only then are the
      -- day and dimension sets written.
      if redis.call('HINCRBY', counts, day .. '|' .. name, by) == tonumber(by) then
        redis.call('SADD', dims, name)
        redis.call('ZADD', days, day, day)
      end
    end
    if flag == '1' then redis.call('ZADD', untracked, ms, sid) end
    seen[rid] = true
    written = written + 1
  end
end
return written
"""

PREFIX = "relay:"
NOW = datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class OldKeys(Keys):
    """The consent key names of a relay before hash tags (controller scope before the rkey)."""

    def consent_events(self, rkey: str, controller: str = "") -> str:
        return f"{self.prefix}consent:events:{controller + ':' if controller else ''}{rkey}"

    def consent_state(self, rkey: str, controller: str = "") -> str:
        return f"{self.prefix}consent:state:{controller + ':' if controller else ''}{rkey}"

    def consent_import_seen(self, rkey: str, controller: str = "") -> str:
        return f"{self.prefix}consent:imported" + (f":{controller}" if controller else "")


def _event(address: str, kind: EventType, days_ago: int) -> ConsentEvent:
    return ConsentEvent(
        event=kind,
        purposes=(Purpose.CAMPAIGN_PERFORMANCE,),
        address=address,
        occurred_at=NOW - timedelta(days=days_ago),
        actor="recipient",
        method="checkbox",
        source={"form_id": "signup"},
        notice={"version": "v1"},
    )


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "consents.csv"
    at = (NOW - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(
        "address,event,occurred_at,purposes,method,notice_version,source_form_id\n"
        f"imp1@example.org,granted,{at},campaign_performance,checkbox,v1,legacy-form\n"
        f"imp2@example.org,granted,{at},campaign_performance,checkbox,v1,legacy-form\n"
    )
    return path


async def _old_data(client: aioredis.Redis, tmp_path: Path) -> tuple[list[str], list[object]]:
    """Everything an older relay left: returns the recorded event ids and the audit records."""
    old = RedisConsentStore(client, OldKeys(PREFIX), ADDRESS_KEY, ConsentSettings())
    ids = []
    for address, kind, days in (
        ("ann@example.org", EventType.GRANTED, 10),
        ("ann@example.org", EventType.WITHDRAWN, 2),
        ("bob@example.org", EventType.GRANTED, 5),
    ):
        ids.append((await old.record(_event(address, kind, days))).id)
    report = await import_csv(old, _csv(tmp_path), on_bad=print, progress=False)
    assert report.added == 2
    # The audit trail on the single old stream, written by the write script of then.
    script = client.register_script(OLD_WRITE_SCRIPT)
    singles = [f"{PREFIX}audit:{n}" for n in ("log", "counts", "count-dims", "count-days",
                                               "without-consent")]  # fmt: skip
    records: list[object] = []
    for n in range(6):
        record = make_record(n, message_id=f"<old{n // 2}@shop.example>", rcpt=f"r{n}@example.org")
        keys = [*singles, f"{PREFIX}audit:msg:{message_key(record.message_id)}",
                f"{PREFIX}audit:rcpt:{record.recipient_key}"]  # fmt: skip
        args: list[bytes | str] = [encode(record), encode_tally(tally(record))]
        args.append("1" if has_untracked(record) else "0")
        await script(keys=keys, args=args)
        records.append(record)
    await client.hset(f"{PREFIX}delivered:{'a' * 32}", "x@example.org", "250 ok")
    await client.expire(f"{PREFIX}delivered:{'a' * 32}", 3600)
    await client.set(f"{PREFIX}rcpt:addr:{'b' * 32}", "ann@example.org", ex=86400)
    await client.zadd(f"{PREFIX}lastopen", {"b" * 32: day_number(NOW) - 100})
    return ids, records


async def test_old_data_reaches_todays_keys_whole(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path
) -> None:
    server = private_redis()
    client: aioredis.Redis = aioredis.Redis.from_url(server.url, socket_timeout=5)
    ids, records = await _old_data(client, tmp_path)
    old_stream: Any = await client.xrange(f"{PREFIX}audit:log")
    settings = RedisSettings(url=server.url)
    with pytest.raises(RelayError, match="relay store migrate"):
        refuse_old_layout(settings, server.url)

    sync = redis.Redis.from_url(server.url)
    report = migrate(sync, PREFIX)
    assert (report.chains, report.fingerprints, report.fingerprints_unmatched) == (4, 2, 0)
    assert (report.ledger_entries, report.addresses, report.last_open_days) == (1, 1, 1)
    assert report.audit_records == 6 and report.conflicts == []
    refuse_old_layout(settings, server.url)  # nothing old is left
    assert migrate(sync, PREFIX).lines() == report.__class__().lines()  # a second run: nothing

    keys = Keys(PREFIX)
    store = RedisConsentStore(client, keys, ADDRESS_KEY, ConsentSettings())
    assert [e.id for e in await store.history("ann@example.org")] == ids[:2]
    assert [e.id for e in await store.history("bob@example.org")] == ids[2:]
    checked = await store.verify()
    assert checked.ok and checked.recipients == 4 and checked.events == 5
    # The fingerprints moved with their chains: importing the same file again adds nothing.
    again = await import_csv(store, _csv(tmp_path), on_bad=print, progress=False)
    assert (again.added, again.skipped) == (0, 2)

    log = AuditLog(client, keys, tmp_path / "j", timeout=5, retention_days=30,
                   address_key=ADDRESS_KEY)  # fmt: skip
    out = io.StringIO()
    await log.export(NOW - timedelta(days=1), NOW + timedelta(days=1), "jsonl", out, False)
    exported = [json.loads(line)["record_id"] for line in out.getvalue().splitlines()]
    assert sorted(exported) == sorted(r.record_id for r in records)  # type: ignore[attr-defined]
    assert await log.by_message("<old1@shop.example>") == records[2:4]
    assert await log.search("r5@example.org", None, None, 10) == records[5:]
    # Stored at the same moments as before (the stream ids): past ranges export the same.
    moved_ids: list[str] = []
    for bucket in keys.audit_buckets():
        entries: Any = await client.xrange(keys.audit_stream(bucket))
        moved_ids += [bytes(sid).decode() for sid, _fields in entries]
    assert sorted(moved_ids) == sorted(bytes(sid).decode() for sid, _f in old_stream)
    today = day_number(NOW)
    from relay.store.audit_counts import count_keys

    counts = await read_counts(client, count_keys(keys), today - 1, today)
    assert counts.total("n") == 6 and counts.total("t") == 12

    assert "x@example.org" in await Ledger(client, keys, timeout=2).done("a" * 32)
    assert 0 < await client.ttl(keys.delivered("a" * 32)) <= 3600  # its expiry moved with it
    assert await recipient_address(client, keys, "b" * 32) == "ann@example.org"
    rows = inactive_since(server.url, keys, 30, NOW)
    assert [(r[0], r[2]) for r in rows] == [("b" * 32, "ann@example.org")]
    sync.close()
    await client.aclose()


def test_the_command_migrates_and_refuses_a_cluster(
    private_redis: Callable[[], EmbeddedRedis], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from relay.cli.main import build_parser

    server = private_redis()
    plain = redis.Redis.from_url(server.url)
    plain.zadd(f"{PREFIX}lastopen", {"c" * 32: 20_000})
    config = tmp_path / "config.toml"
    config.write_text(f'[redis]\nurl = "{server.url}"\n')
    args = build_parser().parse_args(["store", "migrate", "--config", str(config)])
    assert args.func(args) == 0
    assert "last-open days copied: 1" in capsys.readouterr().out
    assert plain.zscore(Keys(PREFIX).last_open("c" * 32), "c" * 32) == 20_000
    plain.close()
    config.write_text('[redis]\nurl = "redis+cluster://127.0.0.1:7000"\n')
    args = build_parser().parse_args(["store", "migrate", "--config", str(config)])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("relay store: redis.url: a cluster never held") and "Traceback" not in err
