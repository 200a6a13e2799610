"""``relay store migrate``: data written by a relay before hash tags, moved to today's key names.

Stage: CLI edge over one Redis server (``relay/cli/store.py``).
Input: a server holding keys of the old layout (``redis_keys.LegacyKeys``). Output: the same
data under ``redis_keys.Keys`` names, and a report of what moved.

Rule 1: run it with every relay stopped, on the one server that holds the old data; it refuses a
        cluster URL (an old relay never ran on one: migrate first, then move the data into a
        cluster with ``valkey-cli --cluster import``, which keeps the names and their tags).
Rule 2: nothing is rewritten, only moved: consent chains, ledger entries and addresses are
        renamed (``RENAME`` keeps each key's expiry), the audit records are stored again in
        their bucket *with their own stream id* (the time they were stored, so past exports and
        per-day counts stay the same), their indexes and counts rebuilt by the same rules as the
        write script, and last-open days are copied into their bucket keeping the later day.
Rule 3: it is idempotent and resumable: a key already moved is not found under its old name
        again, an audit record already in its bucket (same stream id) is skipped, and the old
        audit keys are deleted only once every record is in its bucket. A chain that exists
        under both names (a new relay wrote before the migration) is left where it is and
        reported: two hash chains cannot be merged.
Rule 4: import fingerprints were one set per controller; they become one set per recipient.
        A fingerprint is recomputed from each imported record of the chain (``consent_import``
        computes it on the row, before the store adds its rules digest) and moved when the old
        set holds it; the old set is deleted at the end, and the report says how many of its
        fingerprints matched no record (rows of chains deleted by retention, for instance).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from relay.errors import RelayError
from relay.settings_redis import RedisSettings, is_cluster_url
from relay.store.audit_codec import decode
from relay.store.audit_counts import count_keys, encode_tally, has_untracked, tally
from relay.store.audit_record import message_key
from relay.store.consent_proof import event_from_record, fingerprint
from relay.store.redis_conn import sync_client
from relay.store.redis_keys import Keys, LegacyKeys

IMPORT_SOURCE = ("import_file", "import_line")  # as consent_import's
BATCH = 500

# The audit write script, with the stream id given (Rule 2). KEYS: bucket stream, its 4 count
# keys, the message index, the recipient index, the record-id hash. ARGV: stream id, stored
# record, tally, flag, record id.
MOVE_RECORD_LUA = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) > 0 then return 0 end
redis.call('XADD', KEYS[1], ARGV[1], 'r', ARGV[2])
local ms = tonumber(string.match(ARGV[1], '^(%d+)'))
redis.call('ZADD', KEYS[6], ms, ARGV[1])
redis.call('ZADD', KEYS[7], ms, ARGV[1])
redis.call('HSET', KEYS[8], ARGV[5], ARGV[1])
local day = string.format('%d', math.floor(ms / 86400000))
for name, by in string.gmatch(ARGV[3], '([^%s=]+)=(%d+)') do
  if redis.call('HINCRBY', KEYS[2], day .. '|' .. name, by) == tonumber(by) then
    redis.call('SADD', KEYS[3], name)
    redis.call('ZADD', KEYS[4], day, day)
  end
end
if ARGV[4] == '1' then redis.call('ZADD', KEYS[5], ms, ARGV[1]) end
return 1
"""


@dataclass
class MigrationReport:
    chains: int = 0
    fingerprints: int = 0
    fingerprints_unmatched: int = 0
    ledger_entries: int = 0
    addresses: int = 0
    last_open_days: int = 0
    audit_records: int = 0
    conflicts: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"consent chains moved: {self.chains} (import fingerprints {self.fingerprints}, "
            f"{self.fingerprints_unmatched} matching no stored record)",
            f"ledger entries moved: {self.ledger_entries}; addresses: {self.addresses}",
            f"last-open days copied: {self.last_open_days}; audit records: {self.audit_records}",
        ]
        out += [f"left in place: {c}" for c in self.conflicts]
        return out


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def old_layout_present(client: redis.Redis, prefix: str) -> bool:
    """True when a key only an old relay writes exists (checked before ``relay serve``)."""
    return bool(client.exists(*LegacyKeys(prefix).markers()))


def refuse_old_layout(settings: RedisSettings, url: str) -> None:
    """``relay serve`` does not start over old data (it would be out of sight): RelayError
    naming the command. Redis unreachable: not known, the start-up warning says so."""
    if is_cluster_url(url):
        return  # an older relay never ran on a cluster
    client = sync_client(url, settings)
    try:
        present = old_layout_present(client, settings.prefix)  # type: ignore[arg-type]
    except Exception:
        present = False
    finally:
        client.close()
    if present:
        raise RelayError(
            "redis.url: the server holds data in the key layout of an older relay: stop "
            "every relay and run `relay store migrate` first"
        )


def _split(rest: str) -> tuple[str, str]:
    """``[<scope>:]<rkey>`` -> (scope, rkey)."""
    scope, _, rkey = rest.rpartition(":")
    return scope, rkey


def migrate(client: redis.Redis, prefix: str) -> MigrationReport:
    old, new = LegacyKeys(prefix), Keys(prefix)
    report = MigrationReport()
    imported = {old.scope_of_imported(_text(k)): _text(k)
                for k in client.scan_iter(match=old.consent_imported_match())}  # fmt: skip
    _move_consent(client, old, new, imported, report)
    for key in imported.values():
        report.fingerprints_unmatched += int(client.scard(key))
        client.delete(key)
    report.ledger_entries = _rename_all(client, old.delivered_match(), new.delivered, report)
    report.addresses = _rename_all(client, old.address_match(), new.recipient_address, report)
    report.last_open_days = _move_last_open(client, old, new)
    report.audit_records = _move_audit(client, old, new)
    return report


def _move_consent(
    client: redis.Redis,
    old: LegacyKeys,
    new: Keys,
    imported: dict[str, str],
    report: MigrationReport,
) -> None:
    chains: set[tuple[str, str]] = set()
    for kind in ("events", "state"):
        start = len(old.consent_match(kind)) - 1
        chains.update(
            _split(_text(k)[start:]) for k in client.scan_iter(match=old.consent_match(kind))
        )
    for scope, rkey in sorted(chains):
        pairs = [
            (f"{old.prefix}consent:{kind}:{scope + ':' if scope else ''}{rkey}", target)
            for kind, target in (
                ("events", new.consent_events(rkey, scope)),
                ("state", new.consent_state(rkey, scope)),
            )
        ]
        if any(client.exists(source) and client.exists(target) for source, target in pairs):
            report.conflicts.append(f"consent chain {rkey} (controller {scope or 'default'})")
            continue
        # Fingerprints first: computed from the records under their old name (Rule 3).
        if scope in imported:
            records = client.lrange(pairs[0][0], 0, -1)
            report.fingerprints += _move_fingerprints(
                client, imported[scope], new.consent_import_seen(rkey, scope), records
            )
        for source, target in pairs:
            if client.exists(source):
                client.rename(source, target)
        report.chains += 1


def _move_fingerprints(
    client: redis.Redis, old_set: str, new_set: str, records: Sequence[bytes | str]
) -> int:
    """Rule 4: the fingerprints of this chain's imported records that the old set holds."""
    candidates: list[bytes] = []
    for raw in records:
        try:
            event = event_from_record(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            continue
        if "import_file" not in event.source:
            continue
        for digest in ("", event.rules_digest):
            candidates.append(
                fingerprint(dataclasses.replace(event, rules_digest=digest), IMPORT_SOURCE)
            )
    if not candidates:
        return 0
    known = [
        fp
        for fp, held in zip(candidates, client.smismember(old_set, candidates), strict=True)
        if held
    ]
    if known:
        pipe = client.pipeline(transaction=False)
        pipe.sadd(new_set, *known)
        pipe.srem(old_set, *known)
        pipe.execute()
    return len(set(known))


def _rename_all(client: redis.Redis, pattern: str, name: object, report: MigrationReport) -> int:
    assert callable(name)
    start = len(pattern) - 1
    moved = 0
    for key in list(client.scan_iter(match=pattern, count=1000)):
        source = _text(key)
        target = str(name(source[start:]))
        if client.renamenx(source, target):
            moved += 1
        else:
            report.conflicts.append(f"{target} (a newer value is kept; the old one at {source})")
    return moved


def _move_last_open(client: redis.Redis, old: LegacyKeys, new: Keys) -> int:
    moved = 0
    batch: list[tuple[str, float]] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for member, score in batch:
            pipe.zadd(new.last_open(member), {member: score}, gt=True)  # the later day wins
        pipe.execute()
        batch.clear()

    for member, score in client.zscan_iter(old.last_open(), count=1000):
        batch.append((_text(member), float(score)))
        moved += 1
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    client.delete(old.last_open())
    return moved


def _move_audit(client: redis.Redis, old: LegacyKeys, new: Keys) -> int:
    script = client.register_script(MOVE_RECORD_LUA)
    counts = count_keys(new)
    moved = 0
    low = "-"
    while True:
        entries = client.xrange(old.audit_stream(), low, "+", count=BATCH)
        if not entries:
            break
        pipe = client.pipeline(transaction=False)
        for sid_raw, fields in entries:
            stored: Any = fields
            sid, payload = _text(sid_raw), bytes(stored[b"r"])
            record = decode(payload)
            mkey = message_key(record.message_id)
            bucket = new.audit_bucket(mkey)
            ck = counts[bucket]
            keys = [new.audit_stream(bucket), ck.counts, ck.dims, ck.days, ck.without_consent]
            keys += [new.audit_by_message(mkey), new.audit_by_rcpt(bucket, record.recipient_key)]
            keys.append(new.audit_ids(bucket))
            flag = "1" if has_untracked(record) else "0"
            args: list[bytes | str] = [sid, payload, encode_tally(tally(record)), flag]
            args.append(record.record_id)
            script(keys=keys, args=args, client=pipe)
        moved += sum(int(n) for n in pipe.execute())
        low = "(" + _text(entries[-1][0])
    # Every record is in its bucket: the old stream, indexes and counts go (Rule 3).
    for pattern in old.audit_index_matches():
        for key in list(client.scan_iter(match=pattern, count=1000)):
            client.delete(key)
    client.delete(*old.audit_singles())
    return moved


__all__ = ["MigrationReport", "migrate", "old_layout_present", "refuse_old_layout"]
